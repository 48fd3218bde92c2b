"""The result of xaibench.explain."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:  # the ledger lives with the LRP engine, which imports this module
    from .lrp.ledger import Ledger


@dataclass
class Explanation:
    relevance: torch.Tensor   # shaped like x ([B, T, *x] for several targets per sample); a tuple for several inputs
    output: torch.Tensor      # the explained output value ([B] or [B, T]), softmax stripped
    method: str
    backend: str
    target: torch.Tensor      # the flat output indices explained, or the mask
    ledger: Ledger | None = None   # native LRP only
    # per sample: native LRP, the ledger's closure; integrated gradients, its completeness residual
    conservation_error: torch.Tensor | None = None
    stripped: list = field(default_factory=list)    # final layers removed before explaining
    options: dict = field(default_factory=dict)
    dtype: torch.dtype | None = None        # the dtype the explanation was computed in
    input_dtype: torch.dtype | None = None  # the dtype of the input given (cast to dtype if they differ)
    #: the model's mode: 'eval', or 'train' for a model whose output does not depend on it
    #: (explain(..., mode='eval') on a model in train mode records 'eval')
    mode: str | None = None
    #: for a model with several outputs, the one explained (explain's output=)
    output_choice: object = None

    @property
    def relative_conservation_error(self) -> torch.Tensor | None:
        """conservation_error / max(|output|, sum |relevance|): scale-free."""
        if self.conservation_error is None:
            return None
        magnitude = 0
        for relevance in (self.relevance if isinstance(self.relevance, tuple) else (self.relevance,)):
            dims = tuple(range(self.output.dim(), relevance.dim()))
            magnitude = magnitude + (relevance.abs().sum(dims) if dims else relevance.abs())
        scale = torch.maximum(self.output.abs(), magnitude)
        tiny = torch.finfo(scale.dtype).tiny
        return self.conservation_error / scale.clamp(min=tiny)
