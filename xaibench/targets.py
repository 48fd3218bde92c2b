"""What is explained: turning the user's `target` into a selection over the model output.

    None            argmax of each sample's output (a single output: that one)
    int             the same flat output index for every sample
    [B] integers    one flat output index per sample
    [B, T] integers T output indices per sample, explained at once as a batch dimension
    bool mask       shaped like one sample's output, or [B, *output]: the sum of the
                    selected outputs is explained (e.g. a region of a radar map)

The selection is returned as a 0/1 tensor [T*B, *output], target-major, so that LRP seeds
relevance with selection * output and gradients use it as the output cotangent.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .errors import InputError


@dataclass
class Targets:
    selection: torch.Tensor  # [T*B, *output] of 0/1
    count: int               # T
    several: bool            # True when the user asked for [B, T] targets
    description: torch.Tensor  # flat indices [B] / [B, T], or the mask

    def explained(self, output: torch.Tensor) -> torch.Tensor:
        """The explained output per (target, sample): [T*B]."""
        batch = output.shape[0]
        sel = self.selection.view(self.count, batch, -1)
        return (sel * output.reshape(1, batch, -1)).sum(-1).reshape(-1)

    def arrange(self, per_row: torch.Tensor) -> torch.Tensor:
        """[T*B, ...] target-major -> [B, ...] or [B, T, ...] as the user asked."""
        batch = per_row.shape[0] // self.count
        rest = tuple(per_row.shape[1:])
        stacked = per_row.reshape((self.count, batch) + rest)
        if self.several:
            return stacked.transpose(0, 1)
        return stacked[0]


def resolve(output: torch.Tensor, target) -> Targets:
    batch = output.shape[0]
    per_sample = output.reshape(batch, -1)
    n_out = per_sample.shape[1]
    out_shape = tuple(output.shape[1:])
    device = output.device

    if isinstance(target, np.ndarray):
        target = torch.from_numpy(target)
    if isinstance(target, (list, tuple)):
        target = torch.tensor(target)

    if torch.is_tensor(target) and target.dtype == torch.bool:
        mask = target.to(device)
        if tuple(mask.shape) == out_shape:
            mask = mask.unsqueeze(0).expand((batch,) + out_shape)
        elif tuple(mask.shape) != (batch,) + out_shape:
            raise InputError(
                f"a boolean target mask must be shaped like one sample's output {out_shape} "
                f"or like the whole output {(batch,) + out_shape}; got {tuple(mask.shape)}")
        empty = (~mask.reshape(batch, -1).any(1)).nonzero().flatten().tolist()
        if empty:
            raise InputError(f"the target mask selects no output for sample(s) {empty}")
        selection = mask.reshape(batch, *out_shape).to(output.dtype)
        return Targets(selection, 1, False, target)

    if target is None:
        indices = per_sample.argmax(1) if n_out > 1 else torch.zeros(batch, dtype=torch.long, device=device)
        indices = indices.unsqueeze(1)
        several = False
    elif isinstance(target, (int, np.integer)) or (torch.is_tensor(target) and target.dim() == 0):
        value = int(target)
        indices = torch.full((batch, 1), value, dtype=torch.long, device=device)
        several = False
    elif torch.is_tensor(target):
        if target.dtype.is_floating_point or target.dtype.is_complex:
            raise InputError(f"target indices must be integers, got dtype {target.dtype}")
        target = target.to(device=device, dtype=torch.long)
        if target.dim() == 1:
            if target.shape[0] != batch:
                raise InputError(f"a 1-D target needs one index per sample ({batch}), got {target.shape[0]}")
            indices, several = target.unsqueeze(1), False
        elif target.dim() == 2:
            if target.shape[0] != batch:
                raise InputError(f"a [B, T] target needs B = {batch} rows, got {target.shape[0]}")
            indices, several = target, True
        else:
            raise InputError(f"target indices must be 1-D [B] or 2-D [B, T], got shape {tuple(target.shape)}")
    else:
        raise InputError(f"cannot use a target of type {type(target).__name__}")

    bad = (indices < 0) | (indices >= n_out)
    if bad.any():
        rows = bad.any(1).nonzero().flatten().tolist()
        values = indices[bad].unique().tolist()
        raise InputError(
            f"target index {values} out of range for an output of {n_out} value(s) per sample "
            f"(shape {out_shape}); sample(s) {rows[:10]}")
    count = indices.shape[1]
    selection = torch.zeros((count, batch, n_out), dtype=output.dtype, device=device)
    selection.scatter_(2, indices.t().unsqueeze(2), 1.0)
    selection = selection.view((count * batch,) + out_shape)
    description = indices if several else indices[:, 0]
    return Targets(selection, count, several, description)
