"""Integrated gradients (Sundararajan et al. 2017) with a completeness residual.

relevance = (x - baseline) * integral_0^1 grad f(baseline + a (x - baseline)) da, the integral
taken by a Riemann rule. Completeness says sum(relevance) = f(x) - f(baseline); what the rule
leaves over is reported as Explanation.conservation_error, like the LRP ledger's.

Every step of every sample and target is one row of a batch; the step dimension is cut into
chunks of `batch_steps` steps so that a chunk fits in memory.
"""

from __future__ import annotations

import torch

from .. import targets as targets_module
from ..explanation import Explanation
from . import common

RULES = ("riemann_trapezoid", "riemann_left", "riemann_midpoint")
DEFAULTS = {"baseline": "zeros", "steps": 64, "rule": "riemann_trapezoid", "batch_steps": None}


def riemann(rule: str, steps: int, dtype, device):
    """Points a in [0, 1] and their weights (summing to 1) for the path integral."""
    k = torch.arange(steps, dtype=dtype, device=device)
    if rule == "riemann_left":
        return k / steps, torch.full_like(k, 1.0 / steps)
    if rule == "riemann_midpoint":
        return (k + 0.5) / steps, torch.full_like(k, 1.0 / steps)
    weights = torch.full_like(k, 1.0 / (steps - 1))
    weights[0] = weights[-1] = 0.5 / (steps - 1)
    return k / (steps - 1), weights


def integrated_gradients(model, x, target=None, dtype=None, output=None, **options) -> Explanation:
    options = common.take_options("integrated_gradients", options, DEFAULTS)
    rule = common.choice("rule", options["rule"], RULES)
    steps = common.integer("steps", options["steps"], minimum=2 if rule == "riemann_trapezoid" else 1)
    x, graph, output = common.prepare(model, x, dtype, output, method="integrated_gradients")
    baseline = common.reference("baseline", options["baseline"], x)
    selected = targets_module.resolve(output, target)
    rows = selected.count * x.shape[0]
    per_pass = common.chunk("batch_steps", options["batch_steps"], rows, x[0].numel())

    start = common.repeat_rows(baseline, selected.count)
    difference = common.repeat_rows(x, selected.count) - start
    points, weights = riemann(rule, steps, x.dtype, x.device)
    extra = (1,) * x.dim()  # broadcasts a per-step number over [rows, *x]
    integral = torch.zeros_like(difference)
    with torch.enable_grad():
        for first in range(0, steps, per_pass):
            a = points[first:first + per_pass].view((-1,) + extra)
            w = weights[first:first + per_pass].view((-1,) + extra)
            n = a.shape[0]
            path = (start + a * difference).reshape((n * rows,) + tuple(x.shape[1:])).requires_grad_(True)
            cotangent = selected.selection.repeat((n,) + (1,) * (selected.selection.dim() - 1))
            (grad,) = torch.autograd.grad(common.explained(graph, path), path, cotangent)
            integral += (grad.view((n,) + tuple(difference.shape)) * w).sum(0)
    relevance = difference * integral

    with torch.no_grad():
        explained_x = selected.explained(output)
        explained_baseline = selected.explained(common.explained(graph, baseline))
    completeness = explained_x - explained_baseline
    residual = (relevance.reshape(rows, -1).sum(1) - completeness).abs()
    return Explanation(selected.arrange(relevance), selected.arrange(explained_x), "integrated_gradients",
                       "native", selected.description, conservation_error=selected.arrange(residual),
                       stripped=graph.stripped)
