"""The radar encoder-decoder after Hilburn, Ebert-Uphoff and Miller (2021, "GREMLIN").

Facts followed (docs/papers.md section 2, verified in the paper and its code):
- input: 4 channels (GOES-16 ABI C07, C09, C13 brightness temperature and GLM lightning
  group density), 256 x 256 patches; output: one map of scaled composite reflectivity;
- a plain encoder-decoder with N blocks each way (the paper uses N = 3), no skip connections,
  no batch norm, no dropout:
    encoder block = Conv 3x3, 32 filters, 'same' padding, ReLU -> MaxPool 2x2
    decoder block = Conv 3x3, 32 filters, 'same' padding, ReLU -> UpSampling 2x2 (nearest)
    output        = Conv 1x1, linear, 1 channel
- Glorot-uniform initialisation (zero bias), as Keras' default;
- loss: the weighted MSE mean(exp(5 y^4) (yhat - y)^2), which weights strong echoes (`weighted_mse`).

The output keeps the input's spatial size when H and W are multiples of 2^N.
"""

from __future__ import annotations

import torch
from torch import nn


class RadarEncoderDecoder(nn.Sequential):
    """[B, 4, H, W] -> [B, 1, H, W]."""

    def __init__(self, n_blocks: int = 3, in_channels: int = 4, filters: int = 32):
        if n_blocks not in (1, 2, 3):
            raise ValueError(f"n_blocks must be 1, 2 or 3 (the paper's range), got {n_blocks}")
        layers: list[nn.Module] = []
        channels = in_channels
        for _ in range(n_blocks):  # encoder
            layers += [nn.Conv2d(channels, filters, kernel_size=3, padding=1), nn.ReLU(), nn.MaxPool2d(2)]
            channels = filters
        for _ in range(n_blocks):  # decoder
            layers += [nn.Conv2d(channels, filters, kernel_size=3, padding=1), nn.ReLU(),
                       nn.Upsample(scale_factor=2, mode="nearest")]
        layers.append(nn.Conv2d(filters, 1, kernel_size=1))
        super().__init__(*layers)
        self.n_blocks, self.in_channels, self.filters = n_blocks, in_channels, filters
        for layer in self:
            if isinstance(layer, nn.Conv2d):
                nn.init.xavier_uniform_(layer.weight)
                nn.init.zeros_(layer.bias)

    def input_shape(self, batch: int = 1, height: int = 256, width: int = 256) -> tuple[int, ...]:
        return (batch, self.in_channels, height, width)

    def metadata(self) -> dict:
        return {"name": "radar", "n_blocks": self.n_blocks, "in_channels": self.in_channels,
                "filters": self.filters}


def weighted_mse(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """mean(exp(5 y^4) (prediction - y)^2), y = target scaled to 0-1 (Hilburn et al. 2021)."""
    if prediction.shape != target.shape:
        raise ValueError(f"prediction {tuple(prediction.shape)} and target {tuple(target.shape)} differ in shape")
    return (torch.exp(5.0 * target**4) * (prediction - target) ** 2).mean()
