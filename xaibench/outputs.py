"""Models that return several outputs (a tuple, or a dict such as torchvision's segmentation
models' {'out': ..., 'aux': ...}): the option output= chooses the one explained.

The native engine reads the choice while tracing (lrp.graph), so its ledger keeps the model's
own layer paths. The other libraries explain one tensor output, so they get the model wrapped
in SelectedOutput, which returns only the chosen output."""

from __future__ import annotations

from torch import nn


class SelectedOutput(nn.Module):
    """model(*inputs)[output]: one output of a model with several (the model itself is
    held, not copied or changed)."""

    def __init__(self, model: nn.Module, output):
        super().__init__()
        self.model = model
        self.output = output
        # the wrapper's own flag only: train() would set every submodule's mode of the user's model
        self.training = model.training

    def forward(self, *inputs):
        return self.model(*inputs)[self.output]


def for_backend(model: nn.Module, output) -> nn.Module:
    """The model as a backend other than the native engine sees it."""
    return model if output is None else SelectedOutput(model, output)
