"""Optimal input ("backward optimization", Toms, Barnes & Ebert-Uphoff 2020, JAMES).

Not an attribution: it asks which input the network finds most typical of an output, by
gradient descent on the input while the weights stay fixed.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .. import targets as targets_module
from ..lrp import engine
from . import common

OBJECTIVES = ("logit", "output")


@dataclass
class OptimalInput:
    input: torch.Tensor      # the optimized input, shaped like start ([B, T, *x] for several targets)
    objective: torch.Tensor  # the objective before each step and after the last: [B, steps+1] / [B, T, steps+1]
    target: torch.Tensor     # the flat output indices optimized for, or the mask


def optimal_input(model: nn.Module, start, target=None, target_value=None, objective: str = "logit",
                  steps: int = 100, step_size: float = 0.01, l2: float = 0.0, dtype=None,
                  mode=None) -> OptimalInput:
    """Move each input of `start` by plain gradient descent on the loss

        -J(x) + l2 * |x|^2               when target_value is None (drive J as high as it goes)
        (J(x) - target_value)^2 + l2 * |x|^2   otherwise (drive J to a value, as Toms et al.
                                         drive a softmax output to 1 for the class of interest)

    x <- x - step_size * grad(loss), `steps` times. J(x) is the selected output of the model:
    objective="logit" takes it with a final softmax/sigmoid stripped, "output" as the model
    returns it (e.g. a class probability in [0, 1]). `target` selects outputs as in
    xaibench.explain (None = the argmax of the output at start; [B, T] optimizes T copies of
    each sample, one per target). target_value is a number or broadcasts to [B] or [B, T].
    l2 > 0 keeps the input small, so that only the features the output needs grow.

    Samples are optimized together as one batch and do not interact. dtype and mode as in
    xaibench.explain (a model in train mode with dropout or BatchNorm needs mode='eval').
    start and the model are never modified. Deterministic: no random numbers are used.
    """
    with engine.evaluation_mode(model, mode):
        return _optimal_input(model, start, target, target_value, objective, steps, step_size, l2, dtype)


def _optimal_input(model, start, target, target_value, objective, steps, step_size, l2, dtype) -> OptimalInput:
    objective = common.choice("objective", objective, OBJECTIVES)
    steps = common.integer("steps", steps)
    step_size = common.number("step_size", step_size, strict=True)
    l2 = common.number("l2", l2)
    x, graph, explained_output = common.prepare(model, start, dtype)
    selected = targets_module.resolve(explained_output, target)
    name = graph.explained_name if objective == "logit" else graph.output_name
    goal = None
    if target_value is not None:
        goal = _target_value(target_value, x, selected)

    def objective_of(rows):  # J per (target, sample) row
        output = graph.forward(rows, {}, until=name)[name]
        return (selected.selection * output).reshape(rows.shape[0], -1).sum(1)

    current = common.repeat_rows(x, selected.count)  # a new tensor: start is never touched
    trajectory = []
    with torch.enable_grad():
        for _ in range(steps):
            current = current.detach().requires_grad_(True)
            value = objective_of(current)
            trajectory.append(value.detach())
            fit = -value if goal is None else (value - goal) ** 2
            loss = fit.sum() + l2 * (current ** 2).sum()
            (grad,) = torch.autograd.grad(loss, current)
            current = current.detach() - step_size * grad
    with torch.no_grad():
        trajectory.append(objective_of(current))
    return OptimalInput(selected.arrange(current), selected.arrange(torch.stack(trajectory, dim=1)),
                        selected.description)


def _target_value(value, x: torch.Tensor, selected) -> torch.Tensor:
    """target_value as one number per (target, sample) row, target-major: [T*B]."""
    shape = (x.shape[0], selected.count) if selected.several else (x.shape[0],)
    if isinstance(value, (str, bool)):
        raise ValueError(f"target_value must be a number or a tensor, got {value!r}")
    tensor = torch.as_tensor(value).detach().to(dtype=x.dtype, device=x.device)
    try:
        tensor = tensor.expand(shape)
    except RuntimeError:
        raise ValueError(f"target_value of shape {tuple(tensor.shape)} does not broadcast to {shape}") from None
    if not bool(torch.isfinite(tensor).all()):
        raise ValueError("target_value contains NaN or Inf")
    return tensor.t().reshape(-1) if selected.several else tensor
