"""The theoretical receptive field (TRF): the exact input box an output pixel depends on, from
the layers' geometry, and its empirical check by input gradients of a positive-weight copy
(the convention: xaibench/receptive_field/__init__.py)."""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from fractions import Fraction

import numpy as np
import torch
from torch import nn

from xaibench import layers
from xaibench.errors import InputError, UnsupportedLayerError
from xaibench.receptive_field.checks import _pixel, _shape

# ---------------------------------------------------------------------------------------------
# The geometry of one layer along one axis
#
# Every layer maps a set of its output indices (a sorted integer array) to the set of input
# indices that any of them reads with a weight that is not structurally zero (`inputs_of`:
# padding, a transposed convolution's gaps and a linear interpolation weight of exactly 0 read
# nothing), and an input length to its output length (`output_length`). Both are exact for the
# layers below; layers that act per position (activations, normalisations, dropout) map a set to
# itself. A pixel's dependence is a product over axes (every kernel is a box), so per-axis sets
# describe it exactly; the TRF box is their (first, last).


class _Pointwise:
    kernel = stride = padding = dilation = None
    scale = Fraction(1)

    def output_length(self, length: int) -> int:
        return length

    def inputs_of(self, indices: np.ndarray, length: int) -> np.ndarray:
        return indices


@dataclass
class _Window:
    """Convolution and pooling: output i reads inputs i*stride - padding + dilation*m, m < kernel."""
    kernel: int
    stride: int
    padding: int
    dilation: int = 1
    ceil_mode: bool = False

    @property
    def scale(self) -> Fraction:  # input pixels per output pixel
        return Fraction(self.stride)

    def output_length(self, length: int) -> int:
        span = length + 2 * self.padding - self.dilation * (self.kernel - 1) - 1
        if self.ceil_mode:
            count = -(-span // self.stride) + 1
            if (count - 1) * self.stride >= length + self.padding:  # the last window must start inside
                count -= 1
            return count
        return span // self.stride + 1

    def inputs_of(self, indices, length):
        taps = self.dilation * np.arange(self.kernel)
        return _valid(indices[:, None] * self.stride - self.padding + taps[None, :], length)


@dataclass
class _Transposed:
    """Transposed convolution: input i writes outputs i*stride - padding + dilation*m, m < kernel."""
    kernel: int
    stride: int
    padding: int
    dilation: int = 1
    output_padding: int = 0

    @property
    def scale(self) -> Fraction:
        return Fraction(1, self.stride)

    def output_length(self, length):
        return (length - 1) * self.stride - 2 * self.padding + self.dilation * (self.kernel - 1) \
            + self.output_padding + 1

    def inputs_of(self, indices, length):
        # output o receives input i when o = i*stride - padding + dilation*m for some tap m
        numerator = indices[:, None] + self.padding - self.dilation * np.arange(self.kernel)[None, :]
        return _valid(numerator[numerator % self.stride == 0] // self.stride, length)


@dataclass
class _Resize:
    """Upsample / interpolate: nearest, nearest-exact or (bi/tri)linear, as torch computes the
    source index (scale = 1 / scale_factor when given, else input length / output length)."""
    mode: str
    scale_factor: float | None
    size: int | None
    align_corners: bool = False

    @property
    def scale(self) -> Fraction:
        if self.scale_factor is not None:
            return 1 / Fraction(self.scale_factor).limit_denominator(1000)
        return Fraction(0)  # a fixed output size: no fixed ratio

    def output_length(self, length):
        return self.size if self.size is not None else int(math.floor(length * self.scale_factor))

    def _ratio(self, length):
        out = self.output_length(length)
        if self.mode == "linear" and self.align_corners:
            return (length - 1) / (out - 1) if out > 1 else 0.0
        return 1.0 / self.scale_factor if self.scale_factor is not None else length / out

    def inputs_of(self, indices, length):
        ratio = self._ratio(length)
        if self.mode == "nearest":
            return _valid(np.minimum(np.floor(indices * ratio).astype(np.int64), length - 1), length)
        if self.mode == "nearest-exact":
            return _valid(np.minimum(np.floor((indices + 0.5) * ratio).astype(np.int64), length - 1), length)
        # linear, as torch computes it: source = (o + 0.5) ratio - 0.5 clamped at 0 (o ratio with
        # align_corners); the lower neighbour always has weight > 0, the upper one weight
        # source - lower, which is exactly 0 when the source falls on a pixel
        source = indices * ratio if self.align_corners else np.maximum((indices + 0.5) * ratio - 0.5, 0.0)
        lower = np.minimum(np.floor(source).astype(np.int64), length - 1)
        upper = np.minimum(lower + 1, length - 1)[source - lower > 0]
        return _valid(np.concatenate([lower, upper]), length)


@dataclass
class _Adaptive:
    """Adaptive pooling: output i reads [floor(i n / m), ceil((i + 1) n / m) - 1]."""
    size: int | None

    scale = Fraction(0)

    def output_length(self, length):
        return length if self.size is None else self.size

    def inputs_of(self, indices, length):
        out = self.output_length(length)
        starts, stops = (indices * length) // out, -(-((indices + 1) * length) // out)
        return _valid(np.concatenate([np.arange(a, b) for a, b in zip(starts, stops)]), length)


def _valid(indices: np.ndarray, length: int) -> np.ndarray:
    """The distinct indices inside 0..length-1, sorted (padding reads nothing)."""
    indices = np.asarray(indices, dtype=np.int64).ravel()
    return np.unique(indices[(indices >= 0) & (indices < length)])


# ---------------------------------------------------------------------------------------------
# From modules to per-axis geometries

_POINTWISE = layers.POINTWISE   # act per position: a pixel's set maps to itself
_CONV = layers.CONV
_CONV_TRANSPOSED = layers.CONV_TRANSPOSED
_POOL = layers.POOL
_ADAPTIVE = layers.ADAPTIVE_POOL
_RESIZE_MODES = {"nearest": "nearest", "nearest-exact": "nearest-exact", "linear": "linear",
                 "bilinear": "linear", "trilinear": "linear"}


@dataclass
class Layer:
    """One layer of the chain: its path in the model, its type and its geometry per axis."""
    path: str
    module: nn.Module
    dims: int | None          # spatial dimensions it fixes (None: any, e.g. an activation)
    axes: list                # per axis geometry (filled by _geometry once dims are known)

    @property
    def kind(self) -> str:
        return type(self.module).__name__


def _per_axis(value, dims: int) -> tuple:
    return tuple(value) if isinstance(value, (tuple, list)) else (value,) * dims


def _geometry(path: str, module: nn.Module, dims: int) -> list:
    """Per-axis geometry of `module` in a `dims`-dimensional network (UnsupportedLayerError if none)."""
    kind = type(module)
    if isinstance(module, _POINTWISE):
        return [_Pointwise()] * dims
    if kind in _CONV or kind in _CONV_TRANSPOSED:
        if module.padding_mode != "zeros":
            raise UnsupportedLayerError(path, kind.__name__, f"padding_mode '{module.padding_mode}' reads "
                                        "across the border; only zero padding has a bounded receptive field")
        kernel, stride, dilation = (_per_axis(v, dims) for v in (module.kernel_size, module.stride, module.dilation))
        if isinstance(module.padding, str):  # 'valid' or 'same' (stride 1, as torch requires)
            padding = tuple(0 if module.padding == "valid" else d * (k - 1) // 2 for k, d in zip(kernel, dilation))
        else:
            padding = _per_axis(module.padding, dims)
        if kind in _CONV:
            return [_Window(k, s, p, d) for k, s, p, d in zip(kernel, stride, padding, dilation)]
        extra = _per_axis(module.output_padding, dims)
        return [_Transposed(k, s, p, d, o) for k, s, p, d, o in zip(kernel, stride, padding, dilation, extra)]
    if kind in _POOL:
        kernel = _per_axis(module.kernel_size, dims)
        stride = _per_axis(module.stride if module.stride is not None else module.kernel_size, dims)
        padding = _per_axis(getattr(module, "padding", 0), dims)
        dilation = _per_axis(getattr(module, "dilation", 1), dims)
        return [_Window(k, s, p, d, bool(module.ceil_mode)) for k, s, p, d in zip(kernel, stride, padding, dilation)]
    if kind in _ADAPTIVE:
        return [_Adaptive(size) for size in _per_axis(module.output_size, dims)]
    if isinstance(module, nn.Upsample):
        mode = _RESIZE_MODES.get(module.mode)
        if mode is None:
            raise UnsupportedLayerError(path, kind.__name__, f"mode '{module.mode}' has no receptive-field "
                                        f"rule; supported: {', '.join(_RESIZE_MODES)}")
        if module.recompute_scale_factor:
            raise UnsupportedLayerError(path, kind.__name__, "recompute_scale_factor=True has no exact "
                                        "receptive-field rule")
        sizes = _per_axis(module.size, dims) if module.size is not None else (None,) * dims
        factors = _per_axis(module.scale_factor, dims) if module.scale_factor is not None else (None,) * dims
        return [_Resize(mode, f, s, bool(module.align_corners)) for f, s in zip(factors, sizes)]
    raise UnsupportedLayerError(path, kind.__name__, "no receptive-field rule (supported: convolutions, "
                                "transposed convolutions, pooling, upsampling and layers that act per "
                                "position; a dense layer makes every output depend on every input)")


def _module_dims(module: nn.Module) -> int | None:
    for table in (_CONV, _CONV_TRANSPOSED, _POOL, _ADAPTIVE):
        if type(module) in table:
            return table[type(module)]
    return None


def _chain(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The modules the model applies, in order: nn.Sequential (nested ones flattened), or a model
    whose torch.fx graph is one chain of submodule calls. Anything else raises UnsupportedLayerError."""
    if isinstance(model, nn.Sequential):
        layers = []
        for name, child in model.named_children():
            if isinstance(child, nn.Sequential):
                layers += [(f"{name}.{path}", module) for path, module in _chain(child)]
            else:
                layers.append((name, child))
        return layers
    import torch.fx

    try:
        graph = torch.fx.symbolic_trace(model).graph
    except Exception as error:  # data-dependent control flow, unsupported Python
        raise UnsupportedLayerError("(model)", type(model).__name__,
                                    f"cannot trace it into a chain of layers ({type(error).__name__}: {error}); "
                                    "pass an nn.Sequential") from None
    layers, previous = [], None
    for node in graph.nodes:
        if node.op == "placeholder":
            if previous is not None:
                raise UnsupportedLayerError(node.name, "input", "the model takes more than one input")
            previous = node
        elif node.op == "call_module":
            if list(node.all_input_nodes) != [previous]:
                raise UnsupportedLayerError(str(node.target), "branch", "the model is not a single chain of layers")
            layers.append((str(node.target), model.get_submodule(str(node.target))))
            previous = node
        elif node.op == "output":
            continue
        else:
            raise UnsupportedLayerError(node.name, f"{node.op} {getattr(node.target, '__name__', node.target)}",
                                        "only chains of nn.Module layers are supported; write it as a module")
    return layers


def layers_of(model: nn.Module, dims: int | None = None) -> list[Layer]:
    """The model's layer chain with per-axis geometry; `dims` is read from the first convolution or
    pooling layer when not given."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    chain = _chain(model)
    found = [d for _, module in chain if (d := _module_dims(module)) is not None]
    if dims is None:
        if not found:
            raise InputError("the model has no convolution or pooling layer to fix its spatial dimensions; "
                             "pass dims")
        dims = found[0]
    if any(d != dims for d in found):
        raise InputError(f"the model mixes layers of {sorted(set(found))} spatial dimensions")
    return [Layer(path, module, _module_dims(module), _geometry(path, module, dims)) for path, module in chain]


# ---------------------------------------------------------------------------------------------
# The theoretical receptive field

def _output_lengths(layers: list[Layer], shape: tuple[int, ...]) -> list[tuple[int, ...]]:
    """Spatial shape before each layer and after the last: len(layers) + 1 shapes."""
    shapes = [tuple(shape)]
    for layer in layers:
        following = tuple(axis.output_length(n) for axis, n in zip(layer.axes, shapes[-1]))
        if min(following) < 1:
            raise InputError(f"an input of spatial shape {tuple(shape)} is too small: layer '{layer.path}' "
                             f"({layer.kind}) would output {following}")
        shapes.append(following)
    return shapes


def _box(layers: list[Layer], shapes, pixel) -> list[tuple[int, int]]:
    """The inclusive input interval per axis that output `pixel` depends on ((0, -1) on every
    axis when it depends on no input, e.g. in a transposed convolution's gap)."""
    sets = [np.array([int(p)], dtype=np.int64) for p in pixel]
    for index in range(len(layers) - 1, -1, -1):
        sets = [axis.inputs_of(indices, n) if indices.size else indices
                for axis, indices, n in zip(layers[index].axes, sets, shapes[index])]
    if any(indices.size == 0 for indices in sets):
        return [(0, -1)] * len(sets)
    return [(int(indices[0]), int(indices[-1])) for indices in sets]


def receptive_field_box(model: nn.Module, spatial_shape, pixel) -> list[tuple[int, int]]:
    """The exact box of input pixels output `pixel` (spatial index) of `model` can depend on, for
    an input of `spatial_shape`: one inclusive (first, last) per axis, clipped to the input."""
    spatial_shape = _shape(spatial_shape)
    layers = layers_of(model, len(spatial_shape))
    shapes = _output_lengths(layers, spatial_shape)
    pixel = _pixel(pixel, shapes[-1])
    return _box(layers, shapes, pixel)


def receptive_field_mask(model: nn.Module, spatial_shape, pixel) -> torch.Tensor:
    """receptive_field_box as a boolean mask over the input's spatial shape."""
    box = receptive_field_box(model, spatial_shape, pixel)
    return box_mask(box, _shape(spatial_shape))


def box_mask(box, spatial_shape) -> torch.Tensor:
    mask = torch.zeros(tuple(spatial_shape), dtype=torch.bool)
    if all(first <= last for first, last in box):
        mask[tuple(slice(first, last + 1) for first, last in box)] = True
    return mask


def _interior_sizes(layers: list[Layer], dims: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(smallest, largest) box width per axis over output pixels away from the border: every
    position of the middle third of a virtual input long enough that none of their boxes touches
    its border (the third spans whole periods of the strides and upsamplings)."""
    length = 256
    while True:
        shapes = _output_lengths(layers, (length,) * dims)
        out = shapes[-1]
        smallest, largest, touched = [], [], False
        for axis in range(dims):
            widths = []
            for position in range(out[axis] // 3, max(out[axis] // 3 + 1, 2 * out[axis] // 3)):
                pixel = [n // 2 for n in out]
                pixel[axis] = position
                first, last = _box(layers, shapes, pixel)[axis]
                touched |= first <= 0 or last >= length - 1
                widths.append(max(last - first + 1, 0))
            smallest.append(min(widths))
            largest.append(max(widths))
        if not touched:
            return tuple(smallest), tuple(largest)
        if length > 2**16:
            raise InputError("the receptive field does not fit a 65536-pixel input: is a layer global?")
        length *= 4


@dataclass
class LayerReceptiveField:
    """One row of receptive_field_layers: the TRF of the network up to and including `path`."""
    path: str
    kind: str
    kernel: tuple | None
    stride: tuple | None
    padding: tuple | None
    dilation: tuple | None
    jump: tuple              # input pixels between neighbouring units of this layer's output (NaN: no fixed ratio)
    size_recurrence: tuple   # the textbook recurrence r += (k_eff - 1) j (see the module docstring)
    size_smallest: tuple     # exact: the smallest box width over interior output pixels
    size: tuple              # exact: the largest box width over interior output pixels (the TRF)


def receptive_field_layers(model: nn.Module, dims: int | None = None) -> list[LayerReceptiveField]:
    """The TRF after every layer: exact (smallest and largest over positions) and by the textbook
    recurrence (see the module docstring for the convention)."""
    layers = layers_of(model, dims)
    if not layers:
        raise InputError("the model has no layers")
    dims = len(layers[0].axes)
    rows = []
    jump = [Fraction(1)] * dims
    size = [Fraction(1)] * dims
    for index, layer in enumerate(layers):
        for axis, geometry in enumerate(layer.axes):
            if isinstance(geometry, _Window):
                size[axis] += geometry.dilation * (geometry.kernel - 1) * jump[axis]
                jump[axis] *= geometry.stride
            elif isinstance(geometry, _Transposed):
                jump[axis] /= geometry.stride
                size[axis] += geometry.dilation * (geometry.kernel - 1) * jump[axis]
            elif isinstance(geometry, (_Resize, _Adaptive)):
                # nearest upsampling by f: the same units, f times denser; no fixed ratio otherwise
                jump[axis] = jump[axis] * geometry.scale if geometry.scale else Fraction(0)

        def field(name, layer=layer):
            values = tuple(getattr(axis, name, None) for axis in layer.axes)
            return None if values[0] is None else values

        smallest, largest = _interior_sizes(layers[: index + 1], dims)
        rows.append(LayerReceptiveField(
            layer.path, layer.kind, field("kernel"), field("stride"), field("padding"), field("dilation"),
            tuple(float(j) if j else math.nan for j in jump),
            tuple(float(r) if all(jump) else math.nan for r in size), smallest, largest))
    return rows


def theoretical_receptive_field(model: nn.Module, dims: int | None = None) -> tuple[int, ...]:
    """The TRF size per axis of an output pixel away from the border (the last row of
    receptive_field_layers)."""
    layers = layers_of(model, dims)
    if not layers:
        raise InputError("the model has no layers")
    return _interior_sizes(layers, len(layers[0].axes))[1]


# ---------------------------------------------------------------------------------------------
# The empirical receptive field: where input gradients of a positive copy are non-zero

def positive_copy(model: nn.Module, seed: int = 0) -> nn.Module:
    """A float64 copy of `model` (the model itself is untouched) whose weights are positive and
    biases non-negative, and whose normalisations pass positive values on as positive: with
    positive inputs every ReLU is active and no sum cancels, so an input gradient is non-zero
    wherever the output depends on the input (max pooling aside: it passes one winner per window,
    see empirical_receptive_field)."""
    generator = torch.Generator().manual_seed(seed)
    twin = copy.deepcopy(model).to(torch.float64).eval()
    with torch.no_grad():
        for module in twin.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                if module.running_mean is not None:
                    module.running_mean.zero_()
                    module.running_var.fill_(1.0)
                if module.weight is not None:
                    module.weight.fill_(1.0)
                    module.bias.fill_(0.0)
                continue
            for name, parameter in module.named_parameters(recurse=False):
                if name == "bias":
                    parameter.zero_()
                else:  # weights in [0.5, 1.5): positive, different per unit (distinct max-pool winners)
                    parameter.copy_(0.5 + torch.rand(parameter.shape, generator=generator, dtype=torch.float64))
    return twin


def empirical_receptive_field(model: nn.Module, input_shape, pixel, samples: int = 16, seed: int = 0):
    """The support of the input gradient of output `pixel` (spatial index; channel 0 of the
    output), as (box, mask): per-axis inclusive (first, last) and the boolean support over the
    input's spatial shape. `input_shape` is one sample's (channels, *spatial).

    The gradients are those of positive_copy(model) on `samples` random positive inputs, and the
    support is their union over samples and channels: max pooling passes the gradient to one
    winner per window, so one input reaches only part of the TRF, while different inputs (and
    the different weights of each channel) pick different winners."""
    input_shape = tuple(int(n) for n in input_shape)
    if len(input_shape) < 2 or min(input_shape) < 1:
        raise InputError(f"input_shape must be (channels, *spatial) with positive sizes, got {input_shape}")
    if int(samples) < 1:
        raise InputError(f"samples must be at least 1, got {samples}")
    twin = positive_copy(model, seed)
    device = next((p.device for p in twin.parameters()), torch.device("cpu"))  # inputs follow the model
    generator = torch.Generator().manual_seed(seed + 1)
    x = (0.5 + torch.rand((int(samples),) + input_shape, generator=generator, dtype=torch.float64)).to(device)
    x.requires_grad_(True)
    try:
        output = twin(x)
    except RuntimeError as error:
        raise InputError(f"the model does not run on inputs of shape {input_shape}: {error}") from None
    pixel = _pixel(pixel, tuple(output.shape[2:]))
    (grad,) = torch.autograd.grad(output[(slice(None), 0) + pixel].sum(), x)
    support = (grad != 0).any(dim=0).any(dim=0).cpu()
    return bounding_box(support), support


def bounding_box(mask) -> list[tuple[int, int]]:
    """Per-axis inclusive (first, last) of the True entries ((0, -1) on every axis when none)."""
    mask = torch.as_tensor(mask).bool()
    box = []
    for axis in range(mask.dim()):
        others = tuple(a for a in range(mask.dim()) if a != axis)
        present = torch.nonzero(mask.any(dim=others) if others else mask).flatten()
        box.append((int(present[0]), int(present[-1])) if present.numel() else (0, -1))
    return box
