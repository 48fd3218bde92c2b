"""Argument checks shared by the receptive-field functions: each names what is wrong."""

from __future__ import annotations

import torch

from xaibench.errors import InputError

# ---------------------------------------------------------------------------------------------
# Checks

def _shape(shape) -> tuple[int, ...]:
    try:
        shape = tuple(int(n) for n in shape)
    except (TypeError, ValueError):
        raise InputError(f"a spatial shape must be a sequence of integers, got {shape!r}") from None
    if not shape or min(shape) < 1:
        raise InputError(f"a spatial shape needs positive sizes, got {shape}")
    return shape


def _pixel(pixel, shape) -> tuple[int, ...]:
    try:
        values = tuple(int(p) for p in pixel)
    except (TypeError, ValueError):
        raise InputError(f"a pixel must be a sequence of integer indices, got {pixel!r}") from None
    if any(int(p) != p for p in pixel):
        raise InputError(f"a pixel must hold integer indices, got {pixel!r}")
    if len(values) != len(shape) or any(not 0 <= p < n for p, n in zip(values, shape)):
        raise InputError(f"pixel {values} is outside the output of spatial shape {tuple(shape)}")
    return values


def _map(erf_map) -> torch.Tensor:
    values = torch.as_tensor(erf_map).detach().to(torch.float64).cpu()
    if values.dim() < 1:
        raise InputError("a receptive-field map needs at least one dimension")
    if not bool(torch.isfinite(values).all()):
        raise InputError("the receptive-field map contains NaN or Inf")
    if bool((values < 0).any()):
        raise InputError("a receptive-field map holds magnitudes (>= 0); take abs() first")
    return values


def _check_batch(x, pixels):
    if not torch.is_tensor(x) or x.dim() < 3:
        raise InputError(f"x must be a tensor [batch, channels, *spatial], got "
                         f"{tuple(x.shape) if torch.is_tensor(x) else type(x).__name__}")
    pixels = [tuple(p) for p in pixels]
    if not pixels:
        raise InputError("give at least one output pixel")
    return x, pixels
