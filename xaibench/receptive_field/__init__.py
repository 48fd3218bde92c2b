"""Receptive fields: the theoretical one (TRF) from the layers, and effective ones (ERF) measured
by gradients, LRP and backward optimization (docs/papers.md sections 2 and 4).

    receptive_field_layers(model, dims)          per layer: kernel, stride, ..., jump and TRF size
    theoretical_receptive_field(model, dims)     the TRF size per axis (interior output pixel)
    receptive_field_box(model, shape, pixel)     the exact input box one output pixel depends on
    receptive_field_mask(model, shape, pixel)    the same box as a boolean mask
    empirical_receptive_field(model, shape, pixel)  the box measured by input gradients of a
                                                 positive-weight copy (positive_copy)
    effective_receptive_field(model, x, pixels, method)  mean |attribution| maps, many pixels at once
    effective_receptive_field_loop(...)          the same, one pixel per call (reference, timing)
    erf_map_pixels(height, width, count)         ERF_MAP_PIXELS output pixels on the middle row
    erf_map_call(model, x, pixels, method)       a callable computing their ERF maps at once (timing)
    backward_optimization_changes(model, x, pixels)      mean |change| of an optimal input
    mass_width / mass_box(map, pixel)            the square holding 95 % of a map's mass
    gaussian_sigma(map)                          a Gaussian (moment) fit's sigma
    bounding_box(mask) / changed_box(map) / box_width(box)   boxes of a support or a change

Supported layers: Conv1d-3d, ConvTranspose1d-3d (zero padding; any kernel, stride, dilation,
padding, output_padding), Max/Avg/LP pooling, adaptive pooling, Upsample (nearest,
nearest-exact, (bi/tri)linear), and layers acting per position (activations, BatchNorm,
InstanceNorm, Dropout), in an nn.Sequential (nested ones flattened) or a model whose torch.fx
graph is one chain of submodules. Anything else (dense layers, branches, circular padding)
raises UnsupportedLayerError naming the layer.

Convention (the answer to "50 or 48" for the GREMLIN N = 3 network). The TRF of an output pixel
is the set of input pixels its value can depend on: per axis, the interval of input indices
reached by walking the layers backward from that pixel, each layer mapping an interval of its
output indices to the interval of its input indices that any of them reads (zero padding reads
nothing). It is counted in input pixels and is exact: the support of input gradients of a
positive-weight copy of the network equals it, border pixels included (empirical_receptive_field,
tests/test_receptive_field.py). The project's TRF of a network is the LARGEST box width over
output pixels away from the border; the smallest is reported beside it.

The textbook recurrence (r += (k_eff - 1) j, j *= stride; nearest upsampling by f: j /= f, r
unchanged) gives 8, 22, 50 for N = 1, 2, 3 (38 and 46 after the first two decoder convolutions
of N = 3): the column `size_recurrence`. It assumes every layer is translation-equivariant with
a fixed jump, which nearest upsampling followed by a 3x3 convolution breaks: two neighbouring
pixels of an upsampled map either share their parent or not. In N = 3 the last decoder
convolution (3x3 on the half-resolution map, as the network is built: each decoder convolution
runs BEFORE its upsampling) therefore reaches 2 or 3 units of the 1/8-resolution map, and the
exact box is 46 or 54 pixels wide depending on the output pixel's position modulo 8 (4
positions each; their mean is the recurrence's 50). N = 1 and 2 are exact at 8 and 22 for every
position. 48 is the recurrence for a different network, whose last 3x3 convolution runs at full
resolution after the last upsampling (46 + 2 x 1); its exact boxes are again 46 or 54 wide (6
and 2 positions of 8, mean 48).

Sizes of an ERF map (absolute values, summed over channels, averaged over inputs):
- `mass_width`: 2 r + 1, with r the smallest half-width of a square centred on the target pixel
  that holds at least 95 % of the map's total mass (Chebyshev radius, like the square TRF box
  and the data generator's square footprint); the square is clipped to the map's support (the
  box of its non-zero pixels), so that at a border the width is that of the part inside;
- `gaussian_sigma`: the standard deviation of a Gaussian fitted to the normalised map by its
  moments (the maximum-likelihood fit), the root mean of the per-axis variances about the
  map's centroid, in pixels. For n stacked k-wide uniform kernels it is sqrt(n (k^2 - 1) / 12)
  exactly (Luo et al. 2016; tests/test_receptive_field.py).

Batched targets: the maps of T output pixels come from one explain call with a [B, T] target
(the T pixels are a batch dimension), not from a Python loop over pixels.
"""

from xaibench.receptive_field.effective import (
    DEFAULT_CHUNK_ROWS,
    ERF_MAP_PIXELS,
    ERF_METHODS,
    MASS_FRACTION,
    backward_optimization_changes,
    bounding_box,
    box_width,
    changed_box,
    effective_receptive_field,
    effective_receptive_field_loop,
    erf_map_call,
    erf_map_pixels,
    gaussian_sigma,
    mass_box,
    mass_width,
)
from xaibench.receptive_field.theoretical import (
    Layer,
    LayerReceptiveField,
    box_mask,
    empirical_receptive_field,
    layers_of,
    positive_copy,
    receptive_field_box,
    receptive_field_layers,
    receptive_field_mask,
    theoretical_receptive_field,
)

__all__ = ["DEFAULT_CHUNK_ROWS", "ERF_MAP_PIXELS", "ERF_METHODS", "MASS_FRACTION", "Layer", "LayerReceptiveField",
           "backward_optimization_changes", "bounding_box", "box_mask", "box_width", "changed_box",
           "effective_receptive_field", "effective_receptive_field_loop", "empirical_receptive_field",
           "erf_map_call", "erf_map_pixels", "gaussian_sigma", "layers_of", "mass_box", "mass_width",
           "positive_copy", "receptive_field_box", "receptive_field_layers", "receptive_field_mask",
           "theoretical_receptive_field"]
