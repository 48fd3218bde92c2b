"""A researcher's model with two inputs (tests of `xaibench validate` with several variables).

forward(sst, wind): an SST map (sample, 1, 8, 8) through a small CNN and a wind profile
(sample, 6 levels) through a dense layer, joined before a dense head with 3 classes. The netCDF
files the tests write hold sst (time, lat, lon) and wind (time, level), so validate has to add
the channel axis to the first and take the second as stored.
"""

from __future__ import annotations

import torch
from torch import nn


class TwoInputs(nn.Module):
    def __init__(self, levels: int = 6, classes: int = 3, hidden: int = 8):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.relu1, self.relu2, self.relu3 = nn.ReLU(), nn.ReLU(), nn.ReLU()
        self.pool = nn.MaxPool2d(2)
        self.flatten = nn.Flatten()
        self.wind = nn.Linear(levels, hidden)
        self.head = nn.Linear(4 * 4 * 4 + hidden, hidden)
        self.out = nn.Linear(hidden, classes)

    def features(self, sst, wind):
        a = self.flatten(self.pool(self.relu1(self.conv(sst))))
        b = self.relu2(self.wind(wind))
        return self.relu3(self.head(torch.cat([a, b], 1)))

    def forward(self, sst, wind):
        return self.out(self.features(sst, wind))


class TwoHeads(TwoInputs):
    """The same network returning a dict: the classes and an auxiliary regression head."""

    def __init__(self, levels: int = 6, classes: int = 3, hidden: int = 8):
        super().__init__(levels, classes, hidden)
        self.aux = nn.Linear(hidden, 1)

    def forward(self, sst, wind):
        h = self.features(sst, wind)
        return {"logits": self.out(h), "aux": self.aux(h)}


def build(levels: int = 6, classes: int = 3, hidden: int = 8) -> nn.Module:
    return TwoInputs(levels, classes, hidden)


def build_two_heads(levels: int = 6, classes: int = 3, hidden: int = 8) -> nn.Module:
    return TwoHeads(levels, classes, hidden)
