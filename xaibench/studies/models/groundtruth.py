"""The dense regression network of the ground-truth benchmark (Mamalakis, Ebert-Uphoff and
Barnes 2022; docs/papers.md section 6).

Facts followed: D inputs (the ocean cells) -> 512 -> 256 -> 128 -> 64 -> 32 -> 16, ReLU after
each, -> 1 linear output; trained with MSE (the paper: SGD lr 0.02, batch 32, 50 epochs).
Initialisation: Glorot-uniform weights and zero biases, Keras' defaults (the paper used Keras).
"""

from __future__ import annotations

from torch import nn

PAPER_WIDTHS = (512, 256, 128, 64, 32, 16)


class GroundTruthDense(nn.Sequential):
    """[B, n_inputs] -> [B, 1]: Linear + ReLU per hidden width, then Linear(last width, 1)."""

    def __init__(self, n_inputs: int = 458, widths=PAPER_WIDTHS):
        widths = tuple(int(width) for width in widths)
        if n_inputs < 1 or not widths or min(widths) < 1:
            raise ValueError(f"n_inputs and every width must be positive, got {n_inputs} and {widths}")
        layers: list[nn.Module] = []
        features = n_inputs
        for width in widths:
            layers += [nn.Linear(features, width), nn.ReLU()]
            features = width
        layers.append(nn.Linear(features, 1))
        super().__init__(*layers)
        self.n_inputs, self.widths = n_inputs, widths
        for layer in self:
            if isinstance(layer, nn.Linear):
                nn.init.xavier_uniform_(layer.weight)
                nn.init.zeros_(layer.bias)

    def input_shape(self, batch: int = 1) -> tuple[int, ...]:
        return (batch, self.n_inputs)

    def metadata(self) -> dict:
        return {"name": "groundtruth", "n_inputs": self.n_inputs, "widths": list(self.widths)}
