"""What the native non-LRP methods share: option checks, reference inputs, the prepared graph.

Every method runs the traced graph of the model (as LRP does), so a final softmax/sigmoid is
stripped the same way, and the user's model itself is never called with gradients on.
"""

from __future__ import annotations

import math
import numbers

import numpy as np
import torch
from torch import nn

from ..errors import InputError, OneInputOnlyError
from ..lrp import engine

# Input elements per forward/backward pass when the caller does not choose a chunk size:
# 2**24 float32 values are 64 MiB of input, small enough for a laptop, large enough for a GPU.
ELEMENT_BUDGET = 2 ** 24


def take_options(method: str, options: dict, defaults: dict) -> dict:
    """defaults updated by options; an unknown option raises a ValueError listing the known ones."""
    unknown = sorted(set(options) - set(defaults))
    if unknown:
        raise ValueError(f"method '{method}' has no option(s) {', '.join(map(repr, unknown))}; "
                         f"its options are: {', '.join(sorted(defaults))}")
    return {**defaults, **options}


def integer(name: str, value, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"option '{name}' must be an integer >= {minimum}, got {value!r}")
    return int(value)


def number(name: str, value, minimum: float = 0.0, strict: bool = False) -> float:
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or value < minimum or (strict and value == minimum):
        relation = ">" if strict else ">="
        raise ValueError(f"option '{name}' must be a finite number {relation} {minimum}, got {value!r}")
    return float(value)


def choice(name: str, value, choices) -> str:
    if value not in choices:
        raise ValueError(f"option '{name}' must be one of {', '.join(map(repr, choices))}, got {value!r}")
    return value


def chunk(name: str, value, rows_per_item: int, elements_per_row: int) -> int:
    """How many items (steps, noise draws, occlusion windows) go into one pass."""
    if value is not None:
        return integer(name, value)
    return max(1, ELEMENT_BUDGET // max(1, rows_per_item * elements_per_row))


def reference(name: str, value, x: torch.Tensor) -> torch.Tensor:
    """A reference input shaped like x: 'zeros', 'mean' (the batch mean, a climatology
    stand-in), or a number/tensor/array broadcastable to x."""
    if isinstance(value, str):
        choice(name, value, ("zeros", "mean"))
        if value == "zeros":
            return torch.zeros_like(x)
        if x.shape[0] < 2:
            # the mean of one sample is the sample: every attribution would silently be zero
            raise InputError(f"option {name}='mean' is the batch mean and needs more than one sample")
        return x.mean(0, keepdim=True).expand_as(x)
    if isinstance(value, bool) or not (torch.is_tensor(value) or isinstance(value, (numbers.Real, np.ndarray))):
        raise ValueError(f"option '{name}' must be 'zeros', 'mean', a number or a tensor, got {type(value).__name__}")
    tensor = torch.as_tensor(value).detach().to(dtype=x.dtype, device=x.device)
    try:
        tensor = tensor.expand_as(x)
    except RuntimeError:
        raise InputError(f"option '{name}' of shape {tuple(tensor.shape)} does not broadcast to the input "
                         f"{tuple(x.shape)}") from None
    if not bool(torch.isfinite(tensor).all()):
        raise InputError(f"option '{name}' contains NaN or Inf")
    return tensor


def prepare(model: nn.Module, x, dtype, output=None, method: str | None = None):
    """Checked input, the model's traced graph (verified against the model whenever it is
    new) and the explained output f(x) [B, *out]. output: which of several model outputs is
    explained. method: a method that takes one input tensor only (its name for the error)."""
    if method is not None and isinstance(x, (tuple, list)):
        raise OneInputOnlyError(f"method '{method}' explains models with one input tensor; for several inputs use "
                         "an LRP method, gradient or input_x_gradient")
    prepared = engine.prepare(model, x, dtype, output)
    with torch.no_grad():
        explained_output = explained(prepared.graph, prepared.x)
    return prepared.x, prepared.graph, explained_output


def explained(graph, x) -> torch.Tensor:
    """The explained output (softmax stripped) of a batch (x: a tensor or a tuple of them)."""
    return graph.forward(x, {})[graph.explained_name]


def repeat_rows(tensor: torch.Tensor, count: int) -> torch.Tensor:
    """[B, ...] -> [count*B, ...], target-major like targets.Targets.selection."""
    return tensor.repeat((count,) + (1,) * (tensor.dim() - 1))
