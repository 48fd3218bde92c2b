"""Radar-from-satellite data after Hilburn, Ebert-Uphoff and Miller (2021, "GREMLIN"): four
input channels (GOES-16 ABI C07, C09, C13 brightness temperature and GLM lightning group
density) and a composite-reflectivity target, on a square grid of 3 km pixels.

The fields are synthetic (no real GOES/MRMS data here) but spatially organised like storms:
a smooth Gaussian random field G (a mix of 2.5- and 10-pixel correlation lengths) whose
exceedance over 1.3 marks convective cores; a broad cold cloud shield (anvil) follows the
large-scale part of G; the cores are colder still; lightning is Poisson-drawn with a rate that
grows with core strength, so it falls on cold cores; C09 (water vapour) adds its own smooth
moisture field; C07 is C13 plus a warm offset and noise.

Input scaling (network input, all in [0, 1]):
- C07, C13: GREMLIN's 200-300 K mapped linearly 1 -> 0: x = (300 K - T) / 100 K, clipped;
- C09: 200-250 K mapped 1 -> 0: x = (250 K - T) / 50 K, clipped;
- GLM: GREMLIN's range 0.1-50 groups per pixel, mapped logarithmically (our choice; lightning
  density is heavy-tailed, a linear map would put almost every flash near 0):
  x = log10(clip(d, 0.1, 50) / 0.1) / log10(500), so d <= 0.1 -> 0 and d >= 50 -> 1.

Target: a KNOWN local operator with a KNOWN footprint. For output pixel p,
    z(p) = sum_{q in square(p, R)} k(q - p) sum_c w_c x_c(q),   k(dy, dx) = g(dy) g(dx),
    g(d) = exp(-d^2 / (2 sigma^2)) for |d| <= R (0 outside), normalised to sum 1,
    y(p) = tanh(max(z(p) - threshold, 0) / softness)          in [0, 1): reflectivity / 60 dBZ,
with R = footprint_radius (half-width; the footprint is the (2R+1)^2 square), sigma =
footprint_sigma (default R/2) and channel weights w. Outside the patch counts as 0 (no cloud,
no lightning). The convolution is computed as explicit shifted sums (separable: a row pass,
then a column pass), never by FFT, so that y(p) depends on inputs inside the footprint only,
exactly: changing any input outside the square leaves y(p) bit-identical. There is no noise
in the target: the benchmark wants a learnable, exactly known input-output dependence.
`footprint_kernel` (channel, dy, dx) = w_c k(dy, dx) is stored so the receptive-field work can
compare effective receptive fields to the true footprint.
"""

from __future__ import annotations

import numpy as np
import xarray as xr

from xaibench.studies.data.common import (
    cf,
    check_seed,
    chunks,
    dataset_attrs,
    float_dtype,
    gaussian_filter_periodic,
    rng,
    sample_coordinate,
    sigmoid,
    smooth_fields,
)

CHANNELS = ("C07", "C09", "C13", "GLM")
PIXEL_KM = 3.0
GLM_RANGE = (0.1, 50.0)  # groups per pixel
DEFAULT_WEIGHTS = (0.15, 0.15, 0.4, 0.3)
CHUNK = 8  # samples per random stream (fixed; 256 x 256 fields are large)
SCALING = ("C07, C13: (300 K - T) / 100 K clipped to [0, 1]; C09: (250 K - T) / 50 K clipped to [0, 1]; "
           "GLM: log10(clip(d, 0.1, 50) / 0.1) / log10(500), d in groups per pixel")


def scale_inputs(c07, c09, c13, glm) -> np.ndarray:
    """Physical fields (K, K, K, groups per pixel) [..., H, W] -> scaled inputs [..., 4, H, W]."""
    low, high = GLM_RANGE
    return np.stack([
        np.clip((300.0 - c07) / 100.0, 0.0, 1.0),
        np.clip((250.0 - c09) / 50.0, 0.0, 1.0),
        np.clip((300.0 - c13) / 100.0, 0.0, 1.0),
        np.log10(np.clip(glm, low, high) / low) / np.log10(high / low),
    ], axis=-3)


def footprint_profile(radius: int, sigma: float | None = None) -> np.ndarray:
    """The 1-D taper g(d), d = -R..R, summing to 1 (k = outer(g, g))."""
    if int(radius) != radius or radius < 0:
        raise ValueError(f"footprint_radius must be a non-negative integer, got {radius}")
    radius = int(radius)
    sigma = radius / 2 if sigma is None else sigma
    offsets = np.arange(-radius, radius + 1, dtype=np.float64)
    profile = np.exp(-(offsets**2) / (2 * sigma**2)) if sigma > 0 else (offsets == 0).astype(np.float64)
    return profile / profile.sum()


def footprint_kernel(radius: int = 9, sigma: float | None = None, channel_weights=DEFAULT_WEIGHTS) -> np.ndarray:
    """(channel, 2R+1, 2R+1): the weight of input (c, p + (dy, dx)) in z(p)."""
    profile = footprint_profile(radius, sigma)
    return np.asarray(channel_weights, dtype=np.float64)[:, None, None] * np.outer(profile, profile)


def reflectivity_operator(inputs, footprint_radius: int = 9, footprint_sigma: float | None = None,
                          channel_weights=DEFAULT_WEIGHTS, threshold: float = 0.42,
                          softness: float = 0.25) -> np.ndarray:
    """The known target operator: scaled inputs [..., 4, H, W] -> scaled reflectivity [..., H, W]
    (float64). See the module docstring; locality is exact (explicit shifted sums)."""
    inputs = np.asarray(inputs)
    if inputs.ndim < 3 or inputs.shape[-3] != len(CHANNELS):
        raise ValueError(f"inputs must be [..., {len(CHANNELS)}, H, W], got shape {inputs.shape}")
    weights = np.asarray(channel_weights, dtype=np.float64)
    profile = footprint_profile(footprint_radius, footprint_sigma)
    radius = profile.size // 2
    combined = weights[0] * inputs[..., 0, :, :].astype(np.float64)
    for channel in range(1, len(CHANNELS)):  # pointwise, fixed order
        combined = combined + weights[channel] * inputs[..., channel, :, :]
    z = _shifted_sum(_shifted_sum(combined, profile, radius, axis=-1), profile, radius, axis=-2)
    return np.tanh(np.maximum(z - threshold, 0.0) / softness)


def _shifted_sum(field: np.ndarray, profile: np.ndarray, radius: int, axis: int) -> np.ndarray:
    """sum_d profile[d] * field shifted by d - R along `axis`, zero outside (a 1-D correlation)."""
    length = field.shape[axis]
    pad = [(0, 0)] * field.ndim
    pad[axis] = (radius, radius)
    padded = np.pad(field, pad)
    total = np.zeros_like(field)
    window = [slice(None)] * field.ndim
    for offset, weight in enumerate(profile):
        window[axis] = slice(offset, offset + length)
        total += weight * padded[tuple(window)]
    return total


def make_radar(n_samples: int = 200, size: int = 256, footprint_radius: int = 9,
               footprint_sigma: float | None = None, channel_weights=DEFAULT_WEIGHTS,
               threshold: float = 0.42, softness: float = 0.25, dtype: str = "float32",
               seed: int = 0) -> xr.Dataset:
    """Storm-like scenes [sample, channel, y, x] and the reflectivity target [sample, y, x]."""
    seed = check_seed(seed)
    dtype = float_dtype(dtype)
    if n_samples < 1 or size < 8:
        raise ValueError(f"need n_samples >= 1 and size >= 8, got {n_samples}, {size}")
    if len(channel_weights) != len(CHANNELS):
        raise ValueError(f"channel_weights needs {len(CHANNELS)} values ({', '.join(CHANNELS)}), got {channel_weights}")
    if softness <= 0:
        raise ValueError(f"softness must be positive, got {softness}")
    profile = footprint_profile(footprint_radius, footprint_sigma)  # validates the radius
    sigma = footprint_radius / 2 if footprint_sigma is None else footprint_sigma
    operator = {"footprint_radius": int(footprint_radius), "footprint_sigma": sigma,
                "channel_weights": list(map(float, channel_weights)), "threshold": threshold, "softness": softness}

    inputs = np.empty((n_samples, len(CHANNELS), size, size), dtype=dtype)
    target = np.empty((n_samples, size, size), dtype=dtype)
    for chunk, start, stop in chunks(n_samples, CHUNK):
        # Always a full chunk from the stream, so the first samples do not depend on n_samples.
        inputs[start:stop] = _storms(rng(seed, "radar", chunk), CHUNK, size)[: stop - start]
        # The target is computed from the inputs as stored (after the cast), so that the stored
        # pair satisfies the operator exactly.
        target[start:stop] = reflectivity_operator(inputs[start:stop], **operator)

    radius = int(footprint_radius)
    offsets = np.arange(-radius, radius + 1, dtype=np.int64)
    centres = (np.arange(size) + 0.5) * PIXEL_KM
    config = {"n_samples": n_samples, "size": size, **operator, "dtype": dtype.name, "seed": seed}
    ds = xr.Dataset(
        {
            "inputs": cf(("sample", "channel", "y", "x"), inputs, "1",
                         "scaled GOES-16 inputs (cold / lightning = high)", scaling=SCALING),
            "reflectivity": cf(("sample", "y", "x"), target, "1",
                               "composite reflectivity scaled 0-60 dBZ -> 0-1 (dBZ = 60 x value)"),
            "footprint_kernel": cf(("channel", "dy", "dx"), footprint_kernel(radius, sigma, channel_weights), "1",
                                   "weight of input (channel, y + dy, x + dx) in the pre-activation z(y, x)"),
            "footprint_profile": cf(("dy",), profile, "1", "1-D taper g; footprint_kernel = w_c g(dy) g(dx)"),
        },
        coords={
            "sample": sample_coordinate(n_samples),
            "channel": cf(("channel",), np.array(CHANNELS), None,
                          "input channel: ABI C07 (3.9 um), C09 (6.9 um), C13 (10.3 um), GLM group density"),
            "y": cf(("y",), centres, "km", "y of the pixel centre in the patch", "projection_y_coordinate"),
            "x": cf(("x",), centres, "km", "x of the pixel centre in the patch", "projection_x_coordinate"),
            "dy": cf(("dy",), offsets, "1", "row offset from the output pixel (pixels)"),
            "dx": cf(("dx",), offsets, "1", "column offset from the output pixel (pixels)"),
        },
    )
    ds.attrs = dataset_attrs(
        title="Synthetic GOES-16-like inputs and a reflectivity target with a known footprint",
        generator="xaibench.studies.data.radar.make_radar", seed=seed, config=config, synthetic=True,
        source="synthetic storm-like fields (no real GOES/MRMS data); target from a known local operator",
        input_variable="inputs", target_variable="reflectivity",
        reference="Hilburn, Ebert-Uphoff and Miller (2021), JAMC 60, 3-21 (GREMLIN)",
        operator=("y = tanh(max(z - threshold, 0) / softness), z(p) = sum over the (2R+1)^2 square around p "
                  "of footprint_kernel[c, dy, dx] * inputs[c, p + (dy, dx)], zero outside the patch"),
        footprint_shape="square", footprint_radius=radius, footprint_width=2 * radius + 1,
        footprint_sigma=float(sigma), pixel_size_km=PIXEL_KM, scaling=SCALING,
    )
    return ds


def _storms(generator: np.random.Generator, n: int, size: int) -> np.ndarray:
    """Scaled inputs [n, 4, size, size] (float64) of storm-like scenes."""
    shape = (n, size, size)
    large = smooth_fields(generator, shape, 10.0)  # organised systems, anvils
    small = smooth_fields(generator, shape, 2.5)   # individual cells
    field = 0.8 * large + 0.6 * small              # unit variance
    core = np.maximum(field - 1.3, 0.0)            # convective cores: ~10 % of the area
    cold = np.tanh(core / 0.5)
    anvil = np.maximum(sigmoid((large - 0.25) / 0.2), np.tanh(3.0 * core))
    c13 = 296.0 - 66.0 * anvil - 30.0 * cold + 0.5 * generator.standard_normal(shape)
    c07 = c13 + 4.0 + 1.5 * generator.standard_normal(shape)
    moisture = smooth_fields(generator, shape, 15.0)
    c09 = 247.0 - 24.0 * anvil - 16.0 * cold + 3.0 * moisture
    rate = 15.0 * np.maximum(core - 0.3, 0.0) ** 1.5  # lightning groups per pixel, on strong cores
    glm = gaussian_filter_periodic(generator.poisson(rate).astype(np.float64), 1.0)  # GLM's ~8 km pixels blur it
    return scale_inputs(c07, c09, c13, glm)
