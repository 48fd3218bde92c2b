"""Convection detection data after Lee, Kummerow and Ebert-Uphoff (2021, AMT 14, 2699):
five consecutive frames of GOES-16 ABI channel 2 (0.65 um reflectance) and channel 14
(11.2 um brightness temperature); label 1 = convection.

Every sample holds one scene (synthetic; no real GOES data here):
- convective cell (label 1): a bright, cold cloud whose core has a lumpy texture that changes
  from frame to frame ("bubbling": the texture is an AR(1) sequence of random fields over the
  frames, lag-1 correlation `bubbling_correlation`);
- non-convective cloud (label 0): the same cloud shape, core dome and texture amplitude, but the
  texture is frozen over the five frames;
- clear sky (label 0): the surface only.
All frames carry independent sensor noise, so no scene is exactly static.

Brightness (the shortcut Lee et al. found with LRP): a latent brightness u in [0, 1] sets the
cloud-top reflectance (0.40 + 0.40 u) and brightness temperature (256 K - 50 u, brighter =
colder), each with a little independent scatter. shortcut=True (training data): convective
u ~ U(0.45, 1), non-convective u ~ U(0, 0.55), so brightness alone nearly separates them (a
little overlap, as in nature); shortcut=False (evaluation): both u ~ U(0, 1), so brightness
and coldness are matched and only the temporal texture separates convective from
non-convective cloud. Cloud size and shape are drawn identically for both classes in both
modes, so they are no shortcut. Default scene mix: 50 % convective, 20 % clear sky, 30 %
non-convective cloud (exact counts, random order).

Choices where the paper is silent (its patch size and layers are not published): 64 x 64
pixels (`size`), 2 km pixels, frames 2 minutes apart, one cloud object per scene with radius
18-30 % of the patch, texture correlation length 1.5 pixels, and the scene mix above.
`core_mask` marks the convective core (where the texture bubbles) so that the relevance mass in
convective cores can be measured; it is false everywhere in non-convective and clear scenes.
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
    rng,
    sample_coordinate,
    sigmoid,
    smooth_fields,
)

CLEAR, CLOUD, CONVECTIVE = 0, 1, 2
PIXEL_KM = 2.0
FRAME_MINUTES = 2.0


def scale_brightness_temperature(temperature):
    """GREMLIN's infrared scaling reused for the network input: 300 K -> 0, 200 K -> 1 (cold =
    high), clipped to [0, 1]."""
    return np.clip((300.0 - temperature) / 100.0, 0.0, 1.0)


def make_convection(n_samples: int = 1000, size: int = 64, frames: int = 5, shortcut: bool = True,
                    convective_fraction: float = 0.5, clear_fraction: float = 0.2,
                    bubbling_correlation: float = 0.5, texture_length: float = 1.5,
                    dtype: str = "float32", seed: int = 0) -> xr.Dataset:
    """Convection scenes [sample, channel, time, y, x] (see the module docstring).

    convective_fraction, clear_fraction: shares of the scene types (the rest is non-convective
    cloud); counts are exact (rounded), the order random.
    """
    seed = check_seed(seed)
    dtype = float_dtype(dtype)
    if n_samples < 1 or size < 8 or frames < 2:
        raise ValueError(f"need n_samples >= 1, size >= 8, frames >= 2; got {n_samples}, {size}, {frames}")
    if not (0 <= convective_fraction <= 1 and 0 <= clear_fraction <= 1 and convective_fraction + clear_fraction <= 1):
        raise ValueError(f"convective_fraction and clear_fraction must be in [0, 1] with a sum <= 1, "
                         f"got {convective_fraction}, {clear_fraction}")
    if not 0 <= bubbling_correlation < 1:
        raise ValueError(f"bubbling_correlation must be in [0, 1), got {bubbling_correlation}")

    # Exact class counts, random order (one stream for the whole set, so counts are balanced).
    n_convective = round(convective_fraction * n_samples)
    n_clear = min(round(clear_fraction * n_samples), n_samples - n_convective)
    scene = np.full(n_samples, CLOUD, dtype=np.int64)
    scene[:n_convective] = CONVECTIVE
    scene[n_convective:n_convective + n_clear] = CLEAR
    scene = rng(seed, "convection-scenes").permutation(scene)

    reflectance = np.empty((n_samples, frames, size, size), dtype=dtype)
    temperature = np.empty_like(reflectance)
    core_mask = np.zeros((n_samples, size, size), dtype=bool)
    cloud_mask = np.zeros((n_samples, size, size), dtype=bool)
    brightness = np.full(n_samples, np.nan)
    for chunk, start, stop in chunks(n_samples):
        parts = _scenes(rng(seed, "convection", chunk), scene[start:stop], size, frames, shortcut,
                        bubbling_correlation, texture_length)
        reflectance[start:stop] = parts["reflectance"]
        temperature[start:stop] = parts["temperature"]
        core_mask[start:stop] = parts["core"]
        cloud_mask[start:stop] = parts["cloud"]
        brightness[start:stop] = parts["brightness"]

    inputs = np.stack([reflectance, scale_brightness_temperature(temperature)], axis=1).astype(dtype)
    centres = (np.arange(size) + 0.5) * PIXEL_KM
    config = {"n_samples": n_samples, "size": size, "frames": frames, "shortcut": bool(shortcut),
              "convective_fraction": convective_fraction, "clear_fraction": clear_fraction,
              "bubbling_correlation": bubbling_correlation, "texture_length": texture_length,
              "dtype": dtype.name, "seed": seed}
    ds = xr.Dataset(
        {
            "inputs": cf(("sample", "channel", "time", "y", "x"), inputs, "1",
                         "network input: reflectance, and brightness temperature scaled 300 K -> 0, 200 K -> 1",
                         scaling="reflectance: as is, clipped to [0, 1]; brightness_temperature: "
                                 "(300 K - T) / 100 K clipped to [0, 1]"),
            "reflectance": cf(("sample", "time", "y", "x"), reflectance, "1",
                              "ABI channel 2 (0.65 um) reflectance", "toa_bidirectional_reflectance"),
            "brightness_temperature": cf(("sample", "time", "y", "x"), temperature, "K",
                                         "ABI channel 14 (11.2 um) brightness temperature",
                                         "toa_brightness_temperature"),
            "label": cf(("sample",), (scene == CONVECTIVE).astype(np.int64), "1", "convection present",
                        flag_values=np.array([0, 1], dtype=np.int64), flag_meanings="no_convection convection"),
            "scene": cf(("sample",), scene, "1", "scene type", flag_values=np.array([0, 1, 2], dtype=np.int64),
                        flag_meanings="clear_sky non_convective_cloud convective_cell"),
            "core_mask": cf(("sample", "y", "x"), core_mask, "1",
                            "convective core (true where the texture bubbles; convective scenes only)"),
            "cloud_mask": cf(("sample", "y", "x"), cloud_mask, "1", "cloud (opacity > 0.5)"),
            "cloud_brightness": cf(("sample",), brightness, "1",
                                   "latent cloud-top brightness u in [0, 1] (NaN for clear sky)"),
        },
        coords={
            "sample": sample_coordinate(n_samples),
            "channel": cf(("channel",), np.array(["reflectance", "brightness_temperature"]), None,
                          "input channel (ABI channel 2 and channel 14)"),
            "time": cf(("time",), np.arange(frames) * FRAME_MINUTES, "min", "time since the first frame"),
            "y": cf(("y",), centres, "km", "y of the pixel centre in the patch", "projection_y_coordinate"),
            "x": cf(("x",), centres, "km", "x of the pixel centre in the patch", "projection_x_coordinate"),
        },
    )
    ds.attrs = dataset_attrs(
        title="Synthetic convection scenes (" + ("shortcut: brightness separates the classes" if shortcut
                                                 else "brightness matched: only temporal texture separates") + ")",
        generator="xaibench.studies.data.convection.make_convection", seed=seed, config=config, synthetic=True,
        source="synthetic GOES-16-like scenes (no real satellite data); see the generator's docstring",
        input_variable="inputs", target_variable="label",
        reference="Lee, Kummerow and Ebert-Uphoff (2021), AMT 14, 2699",
    )
    return ds


def _scenes(generator, scene, size, frames, shortcut, bubbling_correlation, texture_length) -> dict:
    """One chunk of scenes, vectorised over samples. All draws are made for every sample (also
    clear ones) so that the stream does not depend on the scene mix."""
    n = scene.size
    shape = (n, size, size)
    yy, xx = np.meshgrid(np.arange(size) + 0.5, np.arange(size) + 0.5, indexing="ij")

    # Cloud object: an ellipse with a wobbly edge at a random place.
    centre_y, centre_x = (generator.uniform(0.3, 0.7, (2, n)) * size)[:, :, None, None]
    radius = generator.uniform(0.18, 0.30, n)[:, None, None] * size
    aspect = generator.uniform(0.7, 1.3, n)[:, None, None]
    angle = generator.uniform(0, np.pi, n)[:, None, None]
    dy, dx = yy - centre_y, xx - centre_x
    along = dx * np.cos(angle) + dy * np.sin(angle)
    across = -dx * np.sin(angle) + dy * np.cos(angle)
    distance = np.sqrt((along / aspect) ** 2 + (across * aspect) ** 2) / radius  # 1 at the nominal edge
    edge_wobble = smooth_fields(generator, shape, size / 10)
    opacity = sigmoid((1.0 - distance + 0.12 * edge_wobble) / 0.05)
    core = sigmoid((0.6 - distance + 0.08 * edge_wobble) / 0.04)  # the domed, textured inner part

    # Latent brightness u: the shortcut lives here (see the module docstring).
    if shortcut:
        u = np.where(scene == CONVECTIVE, generator.uniform(0.45, 1.0, n), generator.uniform(0.0, 0.55, n))
    else:
        u = generator.uniform(0.0, 1.0, n)
    top_reflectance = (0.40 + 0.40 * u + generator.normal(0, 0.02, n))[:, None, None, None]
    top_temperature = (256.0 - 50.0 * u + generator.normal(0, 2.0, n))[:, None, None, None]

    # Texture: frame 0 is a lumpy field; convective cores evolve it as AR(1) over the frames,
    # other clouds keep it. Same amplitude either way, so one frame cannot tell them apart.
    innovations = smooth_fields(generator, (n, frames, size, size), texture_length)
    texture = np.empty_like(innovations)
    texture[:, 0] = innovations[:, 0]
    bubbling = (scene == CONVECTIVE)[:, None, None]
    innovation_weight = np.sqrt(1 - bubbling_correlation**2)
    for frame in range(1, frames):
        evolved = bubbling_correlation * texture[:, frame - 1] + innovation_weight * innovations[:, frame]
        texture[:, frame] = np.where(bubbling, evolved, texture[:, 0])
    static_texture = smooth_fields(generator, shape, 3 * texture_length)[:, None]  # broad anvil structure
    lumps = core[:, None] * texture + 0.4 * static_texture

    # Surface (clear-sky background), static over the frames.
    surface = smooth_fields(generator, shape, size / 6)[:, None]
    surface_reflectance = 0.07 + 0.02 * surface
    surface_temperature = 294.0 + 2.0 * surface

    cloudy = (scene != CLEAR)[:, None, None, None]
    alpha = np.where(cloudy, opacity[:, None], 0.0)
    cloud_reflectance = top_reflectance + 0.05 * core[:, None] + 0.05 * lumps  # bright dome, bright lumps
    cloud_temperature = top_temperature - 4.0 * core[:, None] - 4.0 * lumps     # ... are cold
    reflectance = (1 - alpha) * surface_reflectance + alpha * cloud_reflectance
    temperature = (1 - alpha) * surface_temperature + alpha * cloud_temperature
    reflectance = np.clip(reflectance + generator.normal(0, 0.004, reflectance.shape), 0, 1)  # sensor noise
    temperature = temperature + generator.normal(0, 0.2, temperature.shape)
    return {
        "reflectance": reflectance,
        "temperature": temperature,
        "core": (core > 0.5) & (scene == CONVECTIVE)[:, None, None],
        "cloud": (opacity > 0.5) & (scene != CLEAR)[:, None, None],
        "brightness": np.where(scene == CLEAR, np.nan, u),
    }
