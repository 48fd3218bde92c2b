"""The convection-detection 3D CNN after Lee, Kummerow and Ebert-Uphoff (2021, AMT 14, 2699).

Facts followed (docs/papers.md section 3):
- input: five consecutive GOES-16 images of two channels (ABI channel 2, 0.65 um
  reflectance, and channel 14, 11.2 um brightness temperature), here [B, 2, 5, H, W] with
  channels as Conv3d input channels and the five frames as the depth (time) axis, so that
  the kernels can see temporal "bubbling" texture as well as brightness;
- output: convection / no convection (two logits; the paper also produced maps).

Not published (docs/papers.md section 3 marks patch size and layers [U]), so chosen here and documented:
- patch 64 x 64 pixels by default;
- three 3x3x3 Conv3d blocks (2 -> 16 -> 32 -> 32 channels, padding 1 keeps the five frames),
  ReLU after each; MaxPool3d((1, 2, 2)) after the first two pools space only, never time
  (five frames are too few to halve), so the last block still sees all frames;
- AdaptiveAvgPool3d(1) + Flatten make the head independent of the patch size; then
  Linear(32, 16), ReLU, Linear(16, 2).
The choice gives the engine every layer type of interest in a 3D CNN (Conv3d, MaxPool3d,
adaptive average pooling, dense head) while staying small enough for CPU tests.
"""

from __future__ import annotations

from torch import nn


class ConvectionCNN(nn.Sequential):
    """[B, 2, frames, H, W] -> two logits (no convection, convection)."""

    def __init__(self, in_channels: int = 2, frames: int = 5, height: int = 64, width: int = 64,
                 channels: tuple[int, int, int] = (16, 32, 32), hidden: int = 16, n_classes: int = 2):
        if height % 4 or width % 4:
            raise ValueError(f"height and width must be multiples of 4 (two 2x2 poolings), got {height}x{width}")
        c1, c2, c3 = channels
        super().__init__(
            nn.Conv3d(in_channels, c1, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.MaxPool3d((1, 2, 2)),
            nn.Conv3d(c1, c2, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.MaxPool3d((1, 2, 2)),
            nn.Conv3d(c2, c3, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.AdaptiveAvgPool3d(1),
            nn.Flatten(),
            nn.Linear(c3, hidden),
            nn.ReLU(),
            nn.Linear(hidden, n_classes),
        )
        self.in_channels, self.frames, self.height, self.width = in_channels, frames, height, width
        self.channels, self.hidden, self.n_classes = tuple(channels), hidden, n_classes

    def input_shape(self, batch: int = 1) -> tuple[int, ...]:
        return (batch, self.in_channels, self.frames, self.height, self.width)

    def metadata(self) -> dict:
        return {"name": "convection", "in_channels": self.in_channels, "frames": self.frames,
                "height": self.height, "width": self.width, "channels": list(self.channels),
                "hidden": self.hidden, "n_classes": self.n_classes}
