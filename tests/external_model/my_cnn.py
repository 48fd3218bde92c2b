"""Small models standing in for a researcher's own code (tests of `xaibench validate`).

Inputs are single-channel 8 x 8 maps; the netCDF files the tests write hold (sample, lat, lon),
so validate has to add the channel axis the model expects.
"""

from __future__ import annotations

import torch
from torch import nn


class SmallCNN(nn.Module):
    """conv -> relu -> maxpool -> conv -> relu -> avgpool -> dense -> relu -> dense (3 classes).

    A custom forward (not nn.Sequential) as most research code is written. Activations and
    pooling are modules, not torch.nn.functional calls: zennit and innvestigate see only
    modules and would explain a functional avg_pool2d with the plain gradient.
    """

    def __init__(self, channels: int = 1, classes: int = 3, hidden: int = 16):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, 4, 3, padding=1)
        self.conv2 = nn.Conv2d(4, 8, 3, padding=1)
        self.fc1 = nn.Linear(8 * 2 * 2, hidden)
        self.fc2 = nn.Linear(hidden, classes)
        self.relu1, self.relu2, self.relu3 = nn.ReLU(), nn.ReLU(), nn.ReLU()
        self.maxpool = nn.MaxPool2d(2)
        self.avgpool = nn.AvgPool2d(2)
        self.flatten = nn.Flatten()

    def forward(self, x):
        h = self.maxpool(self.relu1(self.conv1(x)))
        h = self.avgpool(self.relu2(self.conv2(h)))
        h = self.relu3(self.fc1(self.flatten(h)))
        return self.fc2(h)


def build(channels: int = 1, classes: int = 3, hidden: int = 16) -> nn.Module:
    return SmallCNN(channels, classes, hidden)


def build_with_softshrink() -> nn.Module:
    """Softshrink has no LRP rule in the engine: validate must say so, not fall back silently."""
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.Softshrink(), nn.Flatten(), nn.Linear(4 * 8 * 8, 3))


def build_calibrated() -> nn.Module:
    """A regression head whose top layer is a one-unit BatchNorm: an affine map y = s*z + c with
    s > 0 before and after re-initialization. Every attribution of z is only rescaled by it, so
    re-initializing the top layer cannot change the ranking of |relevance|: the randomization
    check must fail (by construction, not by a property of any method)."""
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                          nn.Linear(4 * 4 * 4, 1), nn.BatchNorm1d(1))
    with torch.no_grad():
        model[5].weight.fill_(2.0)   # positive scale (reset_parameters sets it to 1: also positive)
        model[5].bias.fill_(0.5)
        model[5].running_mean.fill_(0.1)
        model[5].running_var.fill_(4.0)
    return model.eval()


def not_a_model():
    return "a string"
