"""Occlusion (Zeiler & Fergus 2014): how much the output drops when a patch is replaced.

Inputs are [B, features] (the patch runs along the features) or [B, C, *spatial] (the patch
runs along the spatial dims and covers all channels at once, or one channel at a time with
per_channel=True). The windows start every `stride` elements, and one more window is aligned
with the end of each dim so that every element is covered. The drop f(x) - f(x_occluded) of
a window is spread evenly over its elements and averaged where windows overlap, so 1-element
windows with fill 0 on a linear model give exactly w * x.

Occluded copies are a batch: `batch_size` copies per forward pass. Several targets need no
more passes, since one forward pass gives every output.
"""

from __future__ import annotations

import itertools
import math
import numbers

import torch

from .. import targets as targets_module
from ..errors import InputError
from ..explanation import Explanation
from . import common

DEFAULTS = {"patch": 1, "stride": None, "fill": 0.0, "per_channel": False, "batch_size": None}


def per_dim(name: str, value, sizes) -> tuple:
    """An int for every spatial dim, or a tuple with one int per spatial dim."""
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        value = (value,) * len(sizes)
    if not isinstance(value, (tuple, list)) or len(value) != len(sizes):
        raise ValueError(f"option '{name}' must be an int or a tuple of {len(sizes)} ints "
                         f"(one per spatial dim of sizes {tuple(sizes)}), got {value!r}")
    return tuple(common.integer(name, v) for v in value)


def _starts(size: int, patch: int, stride: int) -> list:
    starts = list(range(0, size - patch + 1, stride))
    if starts[-1] + patch < size:
        starts.append(size - patch)  # cover the end even when the stride does not reach it
    return starts


def windows(shape, patch, stride, per_channel):
    """The windows over one sample of `shape` (no batch dim), as tuples of slices."""
    spatial = shape if len(shape) == 1 else shape[1:]
    patch = per_dim("patch", patch, spatial)
    stride = per_dim("stride", patch if stride is None else stride, spatial)
    too_large = [(p, s) for p, s in zip(patch, spatial) if p > s]
    if too_large:
        raise InputError(f"option 'patch' {patch} is larger than the input's spatial size {tuple(spatial)}")
    if len(shape) > 1:  # the channel dim: all channels at once, or one at a time
        channel = 1 if per_channel else shape[0]
        patch, stride, spatial = (channel,) + patch, (channel,) + stride, tuple(shape)
    ranges = [[slice(s, s + p) for s in _starts(n, p, st)] for n, p, st in zip(spatial, patch, stride)]
    return list(itertools.product(*ranges)), math.prod(patch)


def occlusion(model, x, target=None, dtype=None, output=None, **options) -> Explanation:
    options = common.take_options("occlusion", options, DEFAULTS)
    if not isinstance(options["per_channel"], bool):
        raise ValueError(f"option 'per_channel' must be True or False, got {options['per_channel']!r}")
    if isinstance(options["fill"], str) and options["fill"] != "mean":
        raise ValueError(f"option 'fill' must be a number, 'mean' or a tensor, got {options['fill']!r}")
    x, graph, output = common.prepare(model, x, dtype, output, method="occlusion")
    fill = common.reference("fill", options["fill"], x)
    selected = targets_module.resolve(output, target)
    shape, batch = tuple(x.shape[1:]), x.shape[0]
    all_windows, elements = windows(shape, options["patch"], options["stride"], options["per_channel"])
    per_pass = max(1, common.chunk("batch_size", options["batch_size"], 1, x[0].numel()) // batch)

    explained_x = selected.explained(output)
    selection = selected.selection.reshape(selected.count, batch, -1)
    total = torch.zeros((selected.count * batch, x[0].numel()), dtype=x.dtype, device=x.device)
    covered = torch.zeros(x[0].numel(), dtype=x.dtype, device=x.device)
    with torch.no_grad():
        for first in range(0, len(all_windows), per_pass):
            group = all_windows[first:first + per_pass]
            mask = torch.zeros((len(group),) + shape, dtype=torch.bool, device=x.device)
            for i, window in enumerate(group):
                mask[(i,) + window] = True
            occluded = torch.where(mask.unsqueeze(1), fill, x).reshape((len(group) * batch,) + shape)
            out = common.explained(graph, occluded).reshape(len(group), batch, -1)
            # explained output per (window, target, sample), target-major like explained_x
            occluded_output = torch.einsum("tbo,wbo->wtb", selection, out).reshape(len(group), -1)
            drop = (explained_x.unsqueeze(0) - occluded_output) / elements
            flat_mask = mask.reshape(len(group), -1).to(x.dtype)
            total += drop.t() @ flat_mask
            covered += flat_mask.sum(0)
    relevance = (total / covered).reshape((-1,) + shape)
    return Explanation(selected.arrange(relevance), selected.arrange(explained_x), "occlusion", "native",
                       selected.description, stripped=graph.stripped)
