"""Effective receptive fields (ERF): mean |attribution| maps of output pixels, many pixels in one
explain call, the backward-optimization change, and the sizes of a map (mass width, Gaussian
sigma, boxes)."""

from __future__ import annotations

import math

import torch
from torch import nn

from xaibench.errors import InputError, UnsupportedLayerError
from xaibench.receptive_field.checks import _check_batch, _map, _pixel
from xaibench.receptive_field.theoretical import _output_lengths, bounding_box, layers_of

MASS_FRACTION = 0.95
ERF_METHODS = ("gradient", "lrp.epsilon", "lrp.alpha1beta0")
#: rows (target pixels x samples) explained per call: bounds memory, never the result
DEFAULT_CHUNK_ROWS = 32


# ---------------------------------------------------------------------------------------------
# Effective receptive fields

def _targets(pixels, out_spatial) -> torch.Tensor:
    """Flat output indices (channel 0) of the pixels: [T]."""
    flat = []
    for pixel in pixels:
        index = 0
        for p, n in zip(_pixel(pixel, out_spatial), out_spatial):
            index = index * n + p
        flat.append(index)
    return torch.tensor(flat, dtype=torch.long)


def _output_spatial(model, x) -> tuple[int, ...]:
    """The output's spatial shape: from the layer geometry when the model is a chain of layers
    the TRF rules know, else from one forward pass of the first sample. An ERF needs no TRF, so
    a model without one (attention, branches) still gets its ERF maps."""
    try:
        layers = layers_of(model, x.dim() - 2)
    except UnsupportedLayerError:
        with torch.no_grad():
            return tuple(model(x[:1]).shape[2:])
    return _output_lengths(layers, tuple(x.shape[2:]))[-1]


def effective_receptive_field(model: nn.Module, x: torch.Tensor, pixels, method: str = "gradient",
                              dtype=None, chunk_rows: int = DEFAULT_CHUNK_ROWS, **options) -> torch.Tensor:
    """ERF maps [T, *spatial]: for each of T output pixels, |attribution| summed over input
    channels and averaged over the samples of x ([B, C, *spatial]). method: "gradient" (Luo et
    al.'s ERF, averaged as |gradient|) or any method of xaibench.explain (e.g. lrp.epsilon,
    lrp.alpha1beta0). The T pixels are explained at once as a [B, T] target; chunk_rows bounds
    the rows (pixels x samples) of one call, splitting the samples, never the pixels."""
    from xaibench import api
    def magnitude(part, target):
        explanation = api.explain(model, part, method, target=target, dtype=dtype, **options)
        return explanation.relevance.detach().abs().sum(dim=2).sum(dim=0)  # [T, *spatial]

    return _mean_over_samples(model, x, pixels, chunk_rows, magnitude)


def effective_receptive_field_loop(model, x, pixels, method="gradient", dtype=None, **options) -> torch.Tensor:
    """The same maps as effective_receptive_field, one pixel per call (the benchmark's reference)."""
    from xaibench import api
    x, pixels = _check_batch(x, pixels)
    targets = _targets(pixels, _output_spatial(model, x))
    maps = [api.explain(model, x, method, target=int(t), dtype=dtype, **options).relevance.detach().abs()
            .sum(dim=1).mean(dim=0) for t in targets]
    return torch.stack(maps)


ERF_MAP_PIXELS = 8  # output pixels of an ERF-map measurement (the engine benchmark's ERF-map row)


def erf_map_pixels(height: int, width: int, count: int = ERF_MAP_PIXELS) -> list[tuple[int, int]]:
    """`count` output pixels on the middle row, spread over the middle half of the patch."""
    if count < 1 or width < count:
        raise InputError(f"cannot place {count} pixels on a row of {width}")
    return [(height // 2, width // 4 + (i * (width // 2)) // max(count - 1, 1)) for i in range(count)]


def erf_map_call(model, x, pixels=None, method: str = "gradient"):
    """A callable computing the ERF maps of `pixels` (default: erf_map_pixels) of `model` on the
    batch x at once (a [B, T] target), e.g. for a timing loop (xaibench.studies.bench)."""
    if pixels is None:
        pixels = erf_map_pixels(*x.shape[-2:])
    return lambda: effective_receptive_field(model, x, pixels, method)



def backward_optimization_changes(model: nn.Module, x: torch.Tensor, pixels, steps: int = 20,
                                  step_size: float = 0.01, dtype=None,
                                  chunk_rows: int = DEFAULT_CHUNK_ROWS) -> torch.Tensor:
    """Maps [T, *spatial] of how far backward optimization moves each input pixel: |x_opt - x|
    summed over channels and averaged over samples, where x_opt maximises output pixel t by
    `steps` gradient steps from x (xaibench.methods.optimal_input; GREMLIN's ERF estimate takes
    the bounding box of the changed pixels, see bounding_box)."""
    from xaibench.methods.optimal_input import optimal_input

    def change(part, target):
        result = optimal_input(model, part, target=target, objective="output", steps=steps, step_size=step_size,
                               dtype=dtype)
        return (result.input - part.to(result.input.dtype).unsqueeze(1)).abs().sum(dim=2).sum(dim=0)

    return _mean_over_samples(model, x, pixels, chunk_rows, change)


def _mean_over_samples(model, x, pixels, chunk_rows, per_part) -> torch.Tensor:
    """The mean over the samples of x of per_part(samples, [b, T] target) -> [T, *spatial] sums,
    computed in calls of at most chunk_rows rows (pixels x samples): the samples are split, never
    the pixels, so the T pixels stay one batched target."""
    x, pixels = _check_batch(x, pixels)
    targets = _targets(pixels, _output_spatial(model, x))
    per_call = max(1, int(chunk_rows) // len(pixels))
    total = None
    for start in range(0, x.shape[0], per_call):
        part = x[start:start + per_call]
        value = per_part(part, targets.expand(part.shape[0], -1))
        total = value if total is None else total + value
    return total / x.shape[0]


# ---------------------------------------------------------------------------------------------
# Sizes of a map

def mass_width(erf_map, pixel, fraction: float = MASS_FRACTION) -> int:
    """The side, in pixels, of the smallest square (cube) centred on `pixel` that holds at least
    `fraction` of the map's total mass, clipped to the map's support (the bounding box of its
    non-zero entries, which lies inside the patch): 2 r + 1 away from borders, less where the
    square is cut. Clipping to the support removes no mass, so the width never exceeds the
    support's (nor therefore the TRF's). 0 for an all-zero map."""
    return box_width(mass_box(erf_map, pixel, fraction))


def mass_box(erf_map, pixel, fraction: float = MASS_FRACTION) -> list[tuple[int, int]]:
    """The clipped square of mass_width as per-axis inclusive (first, last) ((0, -1) when empty)."""
    values = _map(erf_map)
    if not 0 < fraction <= 1:
        raise InputError(f"fraction must be in (0, 1], got {fraction}")
    pixel = _pixel(pixel, tuple(values.shape))
    total = float(values.sum())
    if total == 0:
        return [(0, -1)] * values.dim()
    support = bounding_box(values > 0)
    for radius in range(max(values.shape) + 1):
        window = [(max(p - radius, first), min(p + radius, last)) for p, (first, last) in zip(pixel, support)]
        inside = values[tuple(slice(first, last + 1) for first, last in window)] if all(
            first <= last for first, last in window) else values.new_zeros(0)
        if float(inside.sum()) >= fraction * total * (1 - 1e-12):
            return window
    return support  # unreachable: the largest window holds everything


def gaussian_sigma(erf_map) -> float:
    """sqrt of the mean per-axis variance of the normalised map about its centroid (the
    moment, i.e. maximum-likelihood, fit of a Gaussian), in pixels; NaN for an all-zero map."""
    values = _map(erf_map)
    total = values.sum()
    if float(total) == 0:
        return math.nan
    variances = []
    for axis in range(values.dim()):
        others = tuple(a for a in range(values.dim()) if a != axis)
        marginal = values.sum(dim=others) / total if others else values / total
        position = torch.arange(marginal.numel(), dtype=torch.float64)
        centre = (marginal * position).sum()
        variances.append(float((marginal * (position - centre) ** 2).sum()))
    return math.sqrt(sum(variances) / len(variances))


def box_width(box) -> int:
    """The largest side of a box in pixels (0 for an empty box)."""
    return max((max(last - first + 1, 0) for first, last in box), default=0)


def changed_box(change_map, threshold: float = 0.01) -> list[tuple[int, int]]:
    """Bounding box of the pixels that changed (> 0) by at least `threshold` times the largest
    change (threshold 0: every changed pixel)."""
    values = _map(change_map)
    if not 0 <= threshold <= 1:
        raise InputError(f"threshold must be in [0, 1], got {threshold}")
    peak = float(values.max()) if values.numel() else 0.0
    if peak == 0:
        return [(0, -1)] * values.dim()
    return bounding_box((values > 0) & (values >= threshold * peak))
