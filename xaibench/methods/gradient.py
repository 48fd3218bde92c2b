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


def _gradient(model: nn.Module, x, target, dtype=None):
    x, graph, output = common.prepare(model, x, dtype)
    selected = targets_module.resolve(output, target)
    repeated = x.repeat((selected.count,) + (1,) * (x.dim() - 1)).requires_grad_(True)
    with torch.enable_grad():
        out = graph.forward(repeated, {})[graph.explained_name]
        (grad,) = torch.autograd.grad(out, repeated, selected.selection)
    explained = selected.explained(output)
    return x, grad, selected, explained, graph


def _no_options(method, options):
    if options:
        raise ValueError(f"method '{method}' takes no options, got {sorted(options)}")


def gradient(model, x, target=None, dtype=None, **options) -> Explanation:
    _no_options("gradient", options)
    x, grad, selected, explained, graph = _gradient(model, x, target, dtype)
    return Explanation(selected.arrange(grad), selected.arrange(explained), "gradient", "native",
                       selected.description, stripped=graph.stripped)


def input_x_gradient(model, x, target=None, dtype=None, **options) -> Explanation:
    _no_options("input_x_gradient", options)
    x, grad, selected, explained, graph = _gradient(model, x, target, dtype)
    relevance = grad * x.repeat((selected.count,) + (1,) * (x.dim() - 1))
    return Explanation(selected.arrange(relevance), selected.arrange(explained), "input_x_gradient",
                       "native", selected.description, stripped=graph.stripped)


METHODS = {"gradient": gradient, "input_x_gradient": input_x_gradient}
