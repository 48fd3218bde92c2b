"""The ENSO dense network after Toms, Barnes and Ebert-Uphoff (2020, JAMES).

Facts followed (docs/papers.md section 1, verified in the paper and Toms' tutorial notebook):
- input: one SST anomaly map, flattened (land set to 0 by the data step, not here);
- Dense(8, ReLU) -> Dense(8, ReLU) -> Dense(2): two logits, El Nino vs La Nina;
- the paper ends with a softmax; it is removed before explaining. Here the logits are the
  default output and `softmax=True` appends nn.Softmax(dim=1), so that the engine's
  stripping of a final softmax can be tested on the reference network.
- he_normal initialisation of the first layer (kaiming_normal_, fan_in, ReLU gain); the
  L2 penalties (25, 0.01, 0.01) belong to the training loop, not to the architecture.

The default grid is 90 x 180 (2 degree global); the input may be given flat [B, n_lat*n_lon]
or as a map [B, 1, n_lat, n_lon] (or [B, n_lat, n_lon]): the leading nn.Flatten takes both.
"""

from __future__ import annotations

from torch import nn


class EnsoDense(nn.Sequential):
    """Flatten -> Linear(n_lat*n_lon, hidden) -> ReLU -> Linear(hidden, hidden) -> ReLU ->
    Linear(hidden, 2) [-> Softmax(dim=1) when softmax=True]."""

    def __init__(self, n_lat: int = 90, n_lon: int = 180, hidden: int = 8, n_classes: int = 2,
                 softmax: bool = False):
        if n_lat < 1 or n_lon < 1 or hidden < 1 or n_classes < 1:
            raise ValueError(f"n_lat, n_lon, hidden, n_classes must be positive, got "
                             f"{n_lat}, {n_lon}, {hidden}, {n_classes}")
        layers = [
            nn.Flatten(),
            nn.Linear(n_lat * n_lon, hidden),
            nn.ReLU(),
            nn.Linear(hidden, hidden),
            nn.ReLU(),
            nn.Linear(hidden, n_classes),
        ]
        if softmax:
            layers.append(nn.Softmax(dim=1))
        super().__init__(*layers)
        self.n_lat, self.n_lon, self.hidden, self.n_classes = n_lat, n_lon, hidden, n_classes
        # Keras he_normal = truncated normal; the plain normal with the same std is close
        # enough for an untrained reference (training replaces the weights anyway).
        for layer in self:
            if isinstance(layer, nn.Linear):
                nn.init.kaiming_normal_(layer.weight, nonlinearity="relu")
                nn.init.zeros_(layer.bias)

    def input_shape(self, batch: int = 1) -> tuple[int, ...]:
        """The shape of a batch of input maps."""
        return (batch, 1, self.n_lat, self.n_lon)

    def metadata(self) -> dict:
        """Constructor arguments (for saving the model as state_dict + JSON)."""
        return {"name": "enso", "n_lat": self.n_lat, "n_lon": self.n_lon, "hidden": self.hidden,
                "n_classes": self.n_classes, "softmax": isinstance(self[-1], nn.Softmax)}
