"""Gradient-based attributions on the traced graph (softmax stripped, as for LRP).

Several targets per sample are a batch dimension: the input is repeated T times and one
backward pass gives every target's gradient.
"""

from __future__ import annotations

import torch
from torch import nn

from .. import targets as targets_module
from ..explanation import Explanation
from . import common


def _gradient(model: nn.Module, x, target, dtype=None, output=None):
    x, graph, explained_output = common.prepare(model, x, dtype, output)
    selected = targets_module.resolve(explained_output, target)
    inputs = x if isinstance(x, tuple) else (x,)
    repeated = tuple(common.repeat_rows(t, selected.count).requires_grad_(True) for t in inputs)
    with torch.enable_grad():
        out = graph.forward(repeated, {})[graph.explained_name]
        grads = torch.autograd.grad(out, repeated, selected.selection, allow_unused=True)
    grads = tuple(torch.zeros_like(r) if g is None else g for r, g in zip(repeated, grads))
    explained = selected.explained(explained_output)
    return inputs, grads, selected, explained, graph, isinstance(x, tuple)


def _no_options(method, options):
    if options:
        raise ValueError(f"method '{method}' takes no options, got {sorted(options)}")


def _arranged(selected, per_input, several):
    arranged = tuple(selected.arrange(t) for t in per_input)
    return arranged if several else arranged[0]


def gradient(model, x, target=None, dtype=None, output=None, **options) -> Explanation:
    _no_options("gradient", options)
    inputs, grads, selected, explained, graph, several = _gradient(model, x, target, dtype, output)
    return Explanation(_arranged(selected, grads, several), selected.arrange(explained), "gradient", "native",
                       selected.description, stripped=graph.stripped)


def input_x_gradient(model, x, target=None, dtype=None, output=None, **options) -> Explanation:
    _no_options("input_x_gradient", options)
    inputs, grads, selected, explained, graph, several = _gradient(model, x, target, dtype, output)
    relevance = tuple(g * common.repeat_rows(t, selected.count) for g, t in zip(grads, inputs))
    return Explanation(_arranged(selected, relevance, several), selected.arrange(explained), "input_x_gradient",
                       "native", selected.description, stripped=graph.stripped)


METHODS = {"gradient": gradient, "input_x_gradient": input_x_gradient}
