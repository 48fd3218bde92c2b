"""Gradient-based attributions on the traced graph (softmax stripped, as for LRP).

Several targets per sample [B, T]: one forward pass, then one backward pass per target through
the retained graph. Repeating the input T times for one backward pass did T forward passes and
held T copies of every activation: ERF maps of 8 radar pixels (N=3, 256x256, 2 samples, one CPU
thread) took 14.8x one gradient and 946 MiB that way, more than a loop of single calls (9.8x).
"""

from __future__ import annotations

import torch
from torch import nn

from .. import targets as targets_module
from ..explanation import Explanation
from ..lrp import engine
from . import common


def _gradient(model: nn.Module, x, target, dtype=None, output=None):
    prepared = engine.prepare(model, x, dtype, output)
    x, graph, inputs = prepared.x, prepared.graph, prepared.inputs
    leaves = tuple(t.detach().requires_grad_(True) for t in inputs)
    batch = inputs[0].shape[0]
    per_target = []
    with torch.enable_grad():
        out = graph.forward(leaves, {})[graph.explained_name]
        # the targets from this pass's own output: a separate no-grad pass for them cost a forward
        explained_output = out.detach()
        selected = targets_module.resolve(explained_output, target)
        for t in range(selected.count):   # selection is target-major: target t is a block of B rows
            cotangent = selected.selection[t * batch:(t + 1) * batch]
            grads = torch.autograd.grad(out, leaves, cotangent, allow_unused=True,
                                        retain_graph=t < selected.count - 1)
            per_target.append(tuple(torch.zeros_like(leaf) if g is None else g for leaf, g in zip(leaves, grads)))
    grads = tuple(torch.cat(pieces) for pieces in zip(*per_target))   # [T*B, ...] target-major
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
