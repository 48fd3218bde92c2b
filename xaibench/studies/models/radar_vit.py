"""A small vision transformer for the radar task: the transformer reference case beside the
GREMLIN encoder-decoders (issue 17, "radar_vit").

    input [B, 4, H, W] -> patch embedding (Conv2d, kernel = stride = patch_size) -> tokens
    [B, (H/p)(W/p), width] + a learned positional embedding -> `depth` pre-norm encoder blocks
    (x + attention(LayerNorm(x)), then x + MLP(LayerNorm(x)) with GELU) -> LayerNorm -> a Linear
    per token to its p x p output pixels -> "unpatchify" (reshape/permute) -> [B, 1, H, W].

Why written from parts (nn.Linear projections, matrix products, torch.softmax): every operation
is one the native LRP engine explains with its attention rules (CP-LRP by default, AttnLRP on
request), and each projection is a module of its own, which the other backends' module rules
see. (The engine also explains nn.MultiheadAttention, by writing it out in these same parts:
xaibench/lrp/decompose.py.)

Why this design for the radar task: every token attends to every other one, so the theoretical
receptive field of each output pixel is the whole image (the CNNs' is a box that grows with N).
Whether the trained network learns the data's locality (the generator's footprint) is what the
receptive-field study measures. The positional embedding is learned, so the network is built
for one image size (the data's); it is a constant in the LRP ledger (booked as absorbed).

Initialization: truncated-normal (std 0.02) positional embedding, Glorot-uniform Linear and
Conv2d weights with zero biases, LayerNorm scale 1 and shift 0: the usual ViT recipe (close to
the Keras default of the CNNs).
"""

from __future__ import annotations

import torch
from torch import nn


class SelfAttention(nn.Module):
    """Multi-head self-attention from its parts: [B, N, D] -> [B, N, D]."""

    def __init__(self, width: int, heads: int):
        super().__init__()
        if width % heads:
            raise ValueError(f"width {width} is not a multiple of heads {heads}")
        self.heads, self.head_width = heads, width // heads
        self.scale = self.head_width ** -0.5
        self.query, self.key, self.value = nn.Linear(width, width), nn.Linear(width, width), nn.Linear(width, width)
        self.out = nn.Linear(width, width)

    def _split(self, t: torch.Tensor) -> torch.Tensor:
        """[B, N, D] -> [B, heads, N, D / heads]."""
        return t.reshape(t.shape[0], t.shape[1], self.heads, self.head_width).transpose(1, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = self._split(self.query(x)), self._split(self.key(x)), self._split(self.value(x))
        weights = torch.softmax(q @ k.transpose(-2, -1) * self.scale, dim=-1)  # [B, heads, N, N]
        context = (weights @ v).transpose(1, 2)  # [B, N, heads, D / heads]
        return self.out(context.reshape(x.shape[0], x.shape[1], self.heads * self.head_width))


class EncoderBlock(nn.Module):
    """Pre-norm transformer encoder block (as ViT): x + attention(norm(x)), then x + MLP(norm(x))."""

    def __init__(self, width: int, heads: int, mlp_width: int):
        super().__init__()
        self.attention_norm = nn.LayerNorm(width)
        self.attention = SelfAttention(width, heads)
        self.mlp_norm = nn.LayerNorm(width)
        self.mlp = nn.Sequential(nn.Linear(width, mlp_width), nn.GELU(), nn.Linear(mlp_width, width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attention(self.attention_norm(x))
        return x + self.mlp(self.mlp_norm(x))


class RadarViT(nn.Module):
    """[B, in_channels, height, width] -> [B, 1, height, width]; height and width must be multiples
    of patch_size (the positional embedding fixes the image size)."""

    def __init__(self, in_channels: int = 4, height: int = 64, width: int = 64, patch_size: int = 4,
                 embed_width: int = 48, depth: int = 3, heads: int = 4, mlp_ratio: int = 2):
        super().__init__()
        for name, value in (("in_channels", in_channels), ("height", height), ("width", width),
                            ("patch_size", patch_size), ("embed_width", embed_width), ("depth", depth),
                            ("heads", heads), ("mlp_ratio", mlp_ratio)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if height % patch_size or width % patch_size:
            raise ValueError(f"the image {height} x {width} is not a whole number of {patch_size} x {patch_size} "
                             "patches")
        self.in_channels, self.height, self.width, self.patch_size = in_channels, height, width, patch_size
        self.embed_width, self.depth, self.heads, self.mlp_ratio = embed_width, depth, heads, mlp_ratio
        self.grid = (height // patch_size, width // patch_size)
        self.patch_embedding = nn.Conv2d(in_channels, embed_width, kernel_size=patch_size, stride=patch_size)
        self.position = nn.Parameter(torch.zeros(1, self.grid[0] * self.grid[1], embed_width))
        self.blocks = nn.Sequential(*[EncoderBlock(embed_width, heads, mlp_ratio * embed_width) for _ in range(depth)])
        self.norm = nn.LayerNorm(embed_width)
        self.decoder = nn.Linear(embed_width, patch_size * patch_size)  # one token -> its p x p output pixels
        nn.init.trunc_normal_(self.position, std=0.02)
        for module in self.modules():
            if isinstance(module, nn.Linear | nn.Conv2d):
                nn.init.xavier_uniform_(module.weight)
                nn.init.zeros_(module.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, p = x.shape[0], self.patch_size
        (rows, columns) = self.grid
        tokens = self.patch_embedding(x).flatten(2).transpose(1, 2)  # [B, rows * columns, D], row-major
        tokens = self.blocks(tokens + self.position)
        pixels = self.decoder(self.norm(tokens))  # [B, rows * columns, p * p]
        # unpatchify: token (r, c), pixel (i, j) of its patch -> output pixel (r p + i, c p + j)
        pixels = pixels.reshape(batch, rows, columns, p, p).permute(0, 1, 3, 2, 4)
        return pixels.reshape(batch, 1, rows * p, columns * p)

    def input_shape(self, batch: int = 1, height: int | None = None, width: int | None = None) -> tuple[int, ...]:
        return (batch, self.in_channels, height or self.height, width or self.width)

    def metadata(self) -> dict:
        return {"name": "radar_vit", "in_channels": self.in_channels, "height": self.height, "width": self.width,
                "patch_size": self.patch_size, "embed_width": self.embed_width, "depth": self.depth,
                "heads": self.heads, "mlp_ratio": self.mlp_ratio}
