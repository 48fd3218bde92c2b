"""The small test networks: one collection that the census, the conformance table and the tests draw from.

No data is involved: every network here is built from fixed seeds, so the same seed gives the same
weights and inputs, bit for bit, on every machine (the census and conformance tables are compared
exactly with results/baseline/ by tests/test_baseline.py).

    building blocks     layer classes by spatial dimension (CONV, MAXPOOL, ...), randomize() (the
                        tests' seeded weights: N(0, 1/fan_in), dead ReLUs, BatchNorm statistics)
    architectures       the parametric classes the hypothesis strategies draw (tests/strategies.py):
                        ResidualNet, TinyUNet, FunctionalNet; Functional, one functional step for
                        the dense-matrix reference tests of single layers
    fixed networks      batchnorm_model (the tests' "model and input are left untouched" net)
    conformance         CONFORMANCE_NETWORKS and conformance_network(name, seed, batch): the graph
                        shapes of the conformance table (torch's own init under torch.manual_seed)
    census              CensusModel, CENSUS_MODELS (name -> spec: builder, input shape, domain,
                        bias scale, target), census_model(spec, seed) (float64, He weights from
                        randomize_he), census_inputs(spec, n, seed), bias_free_copy(model);
                        SkipResNet and SkipUNet, the DAG shapes innvestigate mirrors (Add, Concatenate)
    modern blocks       DiffusionUNet (GroupNorm, SiLU, residual blocks, a cat skip, upsampling) and
                        TwoBranchNet: the census zoo's own architectures (and the engine tests');
                        awaken(model, seed): random weights that keep a deep backbone's activations
                        of order one (the zoo and tests/test_zoo.py)

Each collection keeps its own seeding (it is what its committed tables were made with); the names
are those of the tables' network/model columns, so a census "dense" and a conformance "dense" are
two different networks.
"""

from __future__ import annotations

import copy
import math
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from xaibench import layers


# --- building blocks -------------------------------------------------------------------------
# layer classes by spatial rank (xaibench.layers has them by class)
def _by_rank(group: dict) -> dict:
    return {rank: kind for kind, rank in group.items()}


CONV = _by_rank(layers.CONV)
CONV_TRANSPOSED = _by_rank(layers.CONV_TRANSPOSED)
MAXPOOL = _by_rank(layers.MAXPOOL)
AVGPOOL = _by_rank(layers.AVGPOOL)
ADAPTIVE_AVGPOOL = _by_rank(layers.ADAPTIVE_AVGPOOL)
BATCHNORM = {0: nn.BatchNorm1d, 1: nn.BatchNorm1d, 2: nn.BatchNorm2d, 3: nn.BatchNorm3d}
#: Upsample's interpolating mode by spatial dimension
INTERPOLATING = {1: "linear", 2: "bilinear", 3: "trilinear"}


def randomize(model: nn.Module, seed: int, bias_scale: float = 1.0, dead_fraction: float = 0.0):
    """Overwrite every parameter and BatchNorm statistic from a seeded generator (the tests' numbers).

    Weights ~ N(0, 1/fan_in); biases ~ N(0, bias_scale^2), and a fraction of the units of each
    layer get a strongly negative bias (-5 bias_scale - 5): dead ReLUs. BatchNorm gets running
    statistics far from (0, 1) and an affine part that can flip signs.
    """
    generator = torch.Generator().manual_seed(seed)

    def normal(shape, std=1.0, mean=0.0):
        return torch.randn(shape, generator=generator) * std + mean

    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, (nn.Linear, nn.modules.conv._ConvNd)):
                w = module.weight
                fan_in = w.shape[1] * math.prod(w.shape[2:]) if w.dim() > 2 else w.shape[1]
                if isinstance(module, nn.modules.conv._ConvTransposeNd):
                    fan_in = w.shape[0] * math.prod(w.shape[2:])
                w.copy_(normal(w.shape, 1.0 / math.sqrt(fan_in)))
                if module.bias is not None:
                    b = normal(module.bias.shape, bias_scale)
                    dead = torch.rand(b.shape, generator=generator) < dead_fraction
                    b[dead] = -5.0 * bias_scale - 5.0
                    module.bias.copy_(b)
            elif isinstance(module, nn.modules.batchnorm._BatchNorm):
                n = module.num_features
                module.running_mean.copy_(normal(n, 1.0))
                module.running_var.copy_(torch.rand(n, generator=generator) * 3.0 + 0.2)
                if module.weight is not None:
                    module.weight.copy_(normal(n, 0.7, 1.0))
                    module.bias.copy_(normal(n, bias_scale))
    model.eval()
    return model


def randomize_he(model: nn.Module, seed: int, bias_scale: float) -> nn.Module:
    """Weights ~ N(0, 2/fan_in) (He, so activations keep their scale through ReLUs), biases ~
    N(0, bias_scale^2), drawn in float64 from a generator of their own: the same numbers on every
    machine. Only Linear and conv layers (the census's numbers)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, (nn.Linear, nn.modules.conv._ConvNd)):
                weight = module.weight
                fan_in = weight[0].numel()
                if isinstance(module, nn.modules.conv._ConvTransposeNd):
                    fan_in = weight.shape[0] * weight[0, 0].numel()
                weight.copy_(torch.randn(weight.shape, generator=generator, dtype=torch.float64)
                             * math.sqrt(2.0 / fan_in))
                if module.bias is not None:
                    module.bias.copy_(torch.randn(module.bias.shape, generator=generator, dtype=torch.float64)
                                      * bias_scale)
    return model.eval()


def bias_free_copy(model: nn.Module) -> nn.Module:
    """A deep copy with every bias set to zero (the parameter kept, so the layers are the same)."""
    clone = copy.deepcopy(model)
    with torch.no_grad():
        for module in clone.modules():
            bias = getattr(module, "bias", None)
            if isinstance(bias, torch.Tensor):
                bias.zero_()
    return clone.eval()


# --- architectures (the hypothesis strategies draw their sizes) ------------------------------
class ResidualNet(nn.Module):
    """stem -> ReLU -> h + f(h) (one or two blocks) -> head; f = Linear/Conv, act, Linear/Conv[, ReLU]."""

    def __init__(self, conv: bool, channels: int, n_out: int, blocks: int, bias: bool, final_relu: bool,
                 activation: str):
        super().__init__()
        if conv:
            self.stem = nn.Conv2d(channels, 3, 3, padding=1, bias=bias)
            make = lambda: nn.Conv2d(3, 3, 3, padding=1, bias=bias)  # noqa: E731
        else:
            self.stem = nn.Linear(channels, 5, bias=bias)
            make = lambda: nn.Linear(5, 5, bias=bias)  # noqa: E731
        self.stem_activation = nn.ReLU()
        act = (lambda: nn.ReLU()) if activation == "relu" else (lambda: nn.LeakyReLU(0.1))
        self.blocks = nn.ModuleList(
            nn.Sequential(make(), act(), make(), *([nn.ReLU()] if final_relu else []))
            for _ in range(blocks))
        self.flatten = nn.Flatten()
        self.head = nn.Linear(3 * 6 * 6 if conv else 5, n_out, bias=bias)

    def forward(self, x):
        h = self.stem_activation(self.stem(x))
        for block in self.blocks:
            h = h + block(h)
        return self.head(self.flatten(h))


class TinyUNet(nn.Module):
    """A two-level encoder-decoder with a torch.cat skip connection and a dense [B, 1, H, W] output."""

    def __init__(self, channels: int, width: int, upsample: str, bias: bool, activation: str):
        super().__init__()
        act = (lambda: nn.ReLU()) if activation == "relu" else (lambda: nn.LeakyReLU(0.1))
        self.encode1 = nn.Conv2d(channels, width, 3, padding=1, bias=bias)
        self.act1 = act()
        self.pool = nn.MaxPool2d(2)
        self.encode2 = nn.Conv2d(width, 2 * width, 3, padding=1, bias=bias)
        self.act2 = act()
        self.up = nn.Upsample(scale_factor=2, mode=upsample)
        self.decode = nn.Conv2d(3 * width, width, 3, padding=1, bias=bias)
        self.act3 = act()
        self.out = nn.Conv2d(width, 1, 1, bias=bias)

    def forward(self, x):
        e1 = self.act1(self.encode1(x))
        e2 = self.act2(self.encode2(self.pool(e1)))
        d = self.act3(self.decode(torch.cat([self.up(e2), e1], dim=1)))
        return self.out(d)


class FunctionalNet(nn.Module):
    """conv -> a sequence of functional steps -> flatten -> linear, with some steps before the
    first conv too (they carry the z^B bounds). The steps are the engine paths that are not
    modules: zero padding, slicing, scaling by a number, adding a buffer or a number,
    permute/transpose, means and sums over a spatial dim, F.interpolate, torch.relu; and, with
    constant_batch, a constant channel concatenated before the head (torch.cat needs the batch
    size, so such a model takes only batches of that size)."""

    def __init__(self, channels, size, before, after, n_out, constant_batch=None):
        super().__init__()
        self.before, self.after = list(before), list(after)
        self.stem = nn.Conv2d(channels, 3, 3, padding=1)
        self.inner = nn.Conv2d(3, 3, 3, padding=1)
        self.register_buffer("offset", torch.linspace(-1.0, 2.0, 3).view(3, 1, 1))
        h, w = size, size
        for op in self.before + self.after:
            h, w = functional_size(op, h, w)
        block = None if constant_batch is None else torch.linspace(-2.0, 3.0, constant_batch * h * w)
        self.register_buffer("block", None if block is None else block.view(-1, 1, h, w))
        self.head = nn.Linear((3 if self.block is None else 4) * h * w, n_out)

    def _apply(self, op, h):  # noqa: C901 - one branch per step kind, on purpose
        if op == "pad":
            return F.pad(h, (1, 1, 1, 1))
        if op == "slice":
            return h[:, :, 1:, :]
        if op == "scale":
            return h * -1.5
        if op == "add_buffer":
            return h + self.offset
        if op == "add_number":
            return h - 0.7
        if op == "permute":
            return h.permute(0, 1, 3, 2)
        if op == "transpose":
            return torch.transpose(h, 2, 3)
        if op == "mean":
            return h.mean(dim=3, keepdim=True)
        if op == "sum":
            return torch.sum(h, dim=2, keepdim=True)
        if op == "nearest":
            return F.interpolate(h, scale_factor=2, mode="nearest")
        if op == "bilinear":
            return F.interpolate(h, scale_factor=2, mode="bilinear", align_corners=False)
        if op == "relu":
            return torch.relu(h)
        if op == "conv":
            return self.inner(h)
        raise ValueError(op)

    def forward(self, x):
        for op in self.before:
            x = self._apply(op, x)
        h = self.stem(x)
        for op in self.after:
            h = self._apply(op, h)
        if self.block is not None:
            h = torch.cat([h, self.block], dim=1)
        return self.head(h.flatten(1))


def functional_size(op, h, w):
    """The spatial size (h, w) after one FunctionalNet step."""
    if op == "pad":
        return h + 2, w + 2
    if op == "slice":
        return h - 1, w
    if op in ("permute", "transpose"):
        return w, h
    if op == "mean":
        return h, 1
    if op == "sum":
        return 1, w
    if op in ("nearest", "bilinear"):
        return 2 * h, 2 * w
    return h, w


#: FunctionalNet's steps before and after its stem
FUNCTIONAL_BEFORE = ("pad", "slice", "scale", "add_number", "permute", "nearest", "relu")
FUNCTIONAL_AFTER = ("pad", "slice", "scale", "add_buffer", "add_number", "permute", "transpose", "mean", "sum",
                    "nearest", "bilinear", "relu", "conv")


class Functional(nn.Module):
    """One functional step of a forward(), for the dense-matrix reference tests of the engine
    paths that are not modules: slicing, zero padding, scaling, constant operands read with
    get_attr (a buffer, a parameter), permute/transpose, means and sums, F.interpolate, torch.cat
    with a constant tensor."""

    def __init__(self, kind: str):
        super().__init__()
        self.kind = kind
        generator = torch.Generator().manual_seed(7)
        self.register_buffer("offset", torch.randn(6, generator=generator).reshape(2, 3) + 2.0)
        self.shift = nn.Parameter(torch.randn(2, 3, generator=generator) - 2.0)
        # torch.cat needs the batch size: 2, engine_vs_reference's
        self.register_buffer("block", torch.randn(2, 1, 3, generator=generator))

    def forward(self, x):
        kind = self.kind
        if kind == "interpolate_nearest":
            return F.interpolate(x, scale_factor=2, mode="nearest")
        if kind == "interpolate_nearest_size":
            return F.interpolate(x, size=(7, 3), mode="nearest")
        if kind == "interpolate_bilinear":
            return F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
        if kind == "getitem_slice":
            return x[:, 1:, ::2, 1:-1]
        if kind == "pad_zero":
            return F.pad(x, (1, 2, 0, 1))
        if kind == "scale_by_number":
            return x * 2.5 / 4.0
        if kind == "permute_transpose":
            return x.permute(0, 3, 1, 2).transpose(1, 3)
        if kind == "mean":
            return torch.mean(x, dim=(2, 3))
        if kind == "sum":
            return x.sum(-1)
        if kind == "add_buffer":
            return x + self.offset
        if kind == "add_parameter":
            return self.shift + x
        if kind == "subtract_number":
            return x - 1.5
        if kind == "cat_constant":
            return torch.cat([x, self.block], dim=1)
        raise ValueError(kind)


# --- fixed networks of the tests -------------------------------------------------------------
def batchnorm_model():
    """A small conv net with BatchNorm, Dropout and max pooling, seeded (float32, eval mode)."""
    model = nn.Sequential(nn.Conv2d(2, 3, 3, padding=1), nn.BatchNorm2d(3), nn.ReLU(), nn.Dropout(0.5),
                          nn.MaxPool2d(2), nn.Flatten(), nn.Linear(3 * 3 * 3, 4), nn.BatchNorm1d(4),
                          nn.ReLU(), nn.Linear(4, 2))
    return randomize(model, seed=3)


# --- the conformance table's networks: the supported graph shapes ----------------------------
class ConformanceResidualNet(nn.Module):
    """conv -> relu -> [conv -> relu] + skip -> pool -> dense: a residual addition."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(2, 4, 3, padding=1)
        self.inner = nn.Conv2d(4, 4, 3, padding=1)
        self.head = nn.Linear(4 * 4 * 4, 3)

    def forward(self, x):
        h = F.relu(self.stem(x))
        h = h + F.relu(self.inner(h))
        h = F.avg_pool2d(h, 2)
        return self.head(torch.flatten(h, 1))


class ConformanceUNet(nn.Module):
    """A two-level encoder-decoder with a concatenation skip, dense (map) output."""

    def __init__(self, channels=4):
        super().__init__()
        self.down = nn.Conv2d(2, channels, 3, padding=1)
        self.bottom = nn.Conv2d(channels, channels, 3, padding=1)
        self.up = nn.ConvTranspose2d(channels, channels, 2, stride=2)
        self.out = nn.Conv2d(2 * channels, 1, 1)

    def forward(self, x):
        skip = F.relu(self.down(x))
        h = F.relu(self.bottom(F.max_pool2d(skip, 2)))
        h = F.relu(self.up(h))
        return self.out(torch.cat([skip, h], dim=1))


def _batchnorm_net():
    """Conv and dense layers each followed by a BatchNorm with drawn statistics (global RNG)."""
    net = nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.MaxPool2d(2),
                        nn.Flatten(), nn.Linear(4 * 4 * 4, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 3))
    for module in net:
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
            module.weight.data.uniform_(0.5, 1.5)
            module.bias.data.uniform_(-0.5, 0.5)
    return net


class ConformanceNetwork(NamedTuple):
    build: Callable[[], nn.Module]   # float32, torch's own init (seeded by conformance_network)
    input_shape: tuple[int, ...]     # one sample
    target: int | None               # None: argmax; an int: that flat output index


CONFORMANCE_NETWORKS = {
    "dense": ConformanceNetwork(lambda: nn.Sequential(nn.Linear(20, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU(),
                                                      nn.Linear(16, 3)), (20,), None),
    "conv1d": ConformanceNetwork(lambda: nn.Sequential(nn.Conv1d(2, 4, 3, padding=1), nn.ReLU(), nn.MaxPool1d(2),
                                                       nn.Flatten(), nn.Linear(4 * 8, 3)), (2, 16), None),
    "conv2d_pool": ConformanceNetwork(lambda: nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), nn.ReLU(),
                                                            nn.MaxPool2d(2), nn.Conv2d(4, 4, 3, padding=1),
                                                            nn.ReLU(), nn.AvgPool2d(2), nn.Flatten(),
                                                            nn.Linear(4 * 2 * 2, 3)), (2, 8, 8), None),
    "conv3d": ConformanceNetwork(lambda: nn.Sequential(nn.Conv3d(2, 4, 3, padding=1), nn.ReLU(),
                                                       nn.MaxPool3d((1, 2, 2)), nn.AdaptiveAvgPool3d(1),
                                                       nn.Flatten(), nn.Linear(4, 2)), (2, 3, 8, 8), None),
    "encoder_decoder": ConformanceNetwork(lambda: nn.Sequential(nn.Conv2d(4, 8, 3, padding=1), nn.ReLU(),
                                                                nn.MaxPool2d(2), nn.Conv2d(8, 8, 3, padding=1),
                                                                nn.ReLU(), nn.Upsample(scale_factor=2),
                                                                nn.Conv2d(8, 1, 1)), (4, 8, 8), 27),
    "transposed_decoder": ConformanceNetwork(lambda: nn.Sequential(nn.Linear(6, 16), nn.ReLU(),
                                                                   nn.Unflatten(1, (4, 2, 2)),
                                                                   nn.ConvTranspose2d(4, 2, 2, stride=2), nn.ReLU(),
                                                                   nn.Conv2d(2, 1, 3, padding=1)), (6,), 5),
    "batchnorm": ConformanceNetwork(_batchnorm_net, (2, 8, 8), None),
    "residual": ConformanceNetwork(ConformanceResidualNet, (2, 8, 8), None),
    "unet_skip": ConformanceNetwork(ConformanceUNet, (2, 8, 8), 20),
}


def conformance_network(name: str, seed: int = 0, batch: int = 4):
    """(float64 model, its float32 copy, a float64 standard-normal input batch, target) of one
    conformance network: torch.manual_seed(seed), then the model, the input, the float32 copy
    (in that order: the global RNG draws are the table's)."""
    network = CONFORMANCE_NETWORKS[name]
    torch.manual_seed(seed)
    model = network.build().double().eval()
    x = torch.randn((batch,) + network.input_shape, dtype=torch.float64)
    model32 = network.build().eval()
    model32.load_state_dict({k: v.float() for k, v in model.state_dict().items()})
    return model, model32, x, network.target


# --- the census's models ---------------------------------------------------------------------
class SkipResNet(nn.Module):
    """ResNet-shaped: stem, an identity block relu(h + f(h)), a block with a 1x1 projection
    proj(h) + f(h) (torch.add), max pooling, dense head."""

    def __init__(self, bias=True):
        super().__init__()
        self.stem = nn.Conv2d(2, 4, 3, padding=1, bias=bias)
        self.f1 = nn.Sequential(nn.Conv2d(4, 4, 3, padding=1, bias=bias), nn.ReLU(),
                                nn.Conv2d(4, 4, 3, padding=1, bias=bias))
        self.projection = nn.Conv2d(4, 6, 1, bias=bias)
        self.f2 = nn.Sequential(nn.Conv2d(4, 6, 3, padding=1, bias=bias), nn.ReLU(),
                                nn.Conv2d(6, 6, 3, padding=1, bias=bias), nn.ReLU())
        self.pool = nn.MaxPool2d(2)
        self.head = nn.Linear(6 * 3 * 3, 3, bias=bias)

    def forward(self, x):
        h = torch.relu(self.stem(x))
        h = torch.relu(h + self.f1(h))
        h = torch.add(self.projection(h), self.f2(h))
        return self.head(torch.flatten(self.pool(h), 1))


class SkipUNet(nn.Module):
    """U-Net-shaped: two encoder levels, nearest upsampling, two torch.cat skip concatenations
    along channels, a 1-channel map as the output."""

    def __init__(self, bias=True):
        super().__init__()
        self.encode1 = nn.Conv2d(2, 3, 3, padding=1, bias=bias)
        self.encode2 = nn.Conv2d(3, 4, 3, padding=1, bias=bias)
        self.bottom = nn.Conv2d(4, 4, 3, padding=1, bias=bias)
        self.pool = nn.MaxPool2d(2)
        self.up = nn.Upsample(scale_factor=2, mode="nearest")
        self.decode2 = nn.Conv2d(8, 4, 3, padding=1, bias=bias)
        self.decode1 = nn.Conv2d(7, 3, 3, padding=1, bias=bias)
        self.out = nn.Conv2d(3, 1, 1, bias=bias)

    def forward(self, x):
        e1 = torch.relu(self.encode1(x))                      # 8 x 8
        e2 = torch.relu(self.encode2(self.pool(e1)))          # 4 x 4
        b = torch.relu(self.bottom(self.pool(e2)))            # 2 x 2
        d2 = torch.relu(self.decode2(torch.cat([self.up(b), e2], dim=1)))
        d1 = torch.relu(self.decode1(torch.cat([self.up(d2), e1], 1)))
        return self.out(d1)



@dataclass(frozen=True)
class CensusModel:
    name: str
    description: str
    build: Callable[[], nn.Module]
    input_shape: tuple[int, ...]          # one sample
    domain: tuple[float, float]           # every sample spans exactly [low, high]
    bias_scale: float                     # standard deviation of the random biases
    target: int | None = None             # None: argmax; an int: that flat output index


def _dense():
    return nn.Sequential(nn.Linear(12, 10), nn.ReLU(), nn.Linear(10, 8), nn.ReLU(), nn.Linear(8, 3))


def _dense_deep():
    layers = [nn.Linear(20, 16), nn.ReLU()]
    for _ in range(3):
        layers += [nn.Linear(16, 16), nn.ReLU()]
    return nn.Sequential(*layers, nn.Linear(16, 4))


def _conv1d():
    return nn.Sequential(nn.Conv1d(2, 4, 3, padding=1), nn.ReLU(), nn.MaxPool1d(2), nn.Conv1d(4, 4, 3), nn.ReLU(),
                         nn.AvgPool1d(2), nn.Flatten(), nn.Linear(4 * 3, 3))


def _conv2d():
    return nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(4, 6, 3, padding=1),
                         nn.ReLU(), nn.AvgPool2d(2), nn.Flatten(), nn.Linear(6 * 2 * 2, 3))


def _conv2d_upsample():
    return nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), nn.ReLU(), nn.Upsample(scale_factor=2, mode="nearest"),
                         nn.Conv2d(3, 4, 3, stride=2), nn.ReLU(), nn.MaxPool2d(2, stride=1), nn.Flatten(),
                         nn.Linear(4 * 4 * 4, 2))


def _conv_transposed():
    return nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), nn.ReLU(), nn.ConvTranspose2d(4, 2, 2, stride=2), nn.ReLU(),
                         nn.Flatten(), nn.Linear(2 * 16 * 16, 3))


def _reference(name):
    """The benchmark's reference architecture `name` at a small size (xaibench.studies.models)."""
    from xaibench.studies.models import ConvectionCNN, EnsoDense, RadarEncoderDecoder

    if name == "enso":
        return lambda: EnsoDense(18, 36, hidden=8)
    if name == "convection":
        return lambda: ConvectionCNN(height=16, width=16)
    return lambda: RadarEncoderDecoder(n_blocks=int(name[-1]))


RADAR_SIZE = 16
_CENSUS_MODELS = [
    CensusModel("dense", "random dense 12-10-8-3", _dense, (12,), (-1.0, 1.0), 1.0),
    CensusModel("dense_deep", "random dense 20-16-16-16-16-4", _dense_deep, (20,), (-1.0, 1.0), 0.3),
    CensusModel("conv1d", "random conv1d, max and average pooling", _conv1d, (2, 16), (-1.0, 1.0), 0.3),
    CensusModel("conv2d", "random conv2d, max and average pooling", _conv2d, (2, 8, 8), (-1.0, 1.0), 0.3),
    CensusModel("conv2d_upsample", "random conv2d, nearest upsampling, strided conv, overlapping max pool",
                _conv2d_upsample, (1, 6, 6), (-1.0, 1.0), 0.3),
    CensusModel("conv_transposed", "random conv2d with a ConvTranspose2d (innvestigate cannot mirror it)",
                _conv_transposed, (2, 8, 8), (-1.0, 1.0), 0.3),
    CensusModel("residual", "ResNet-shaped: identity and 1x1-projection residual blocks (innvestigate: Add)",
                SkipResNet, (2, 6, 6), (-1.0, 1.0), 0.3),
    CensusModel("unet_skips", "U-Net-shaped: two levels, nearest upsampling, two cat skips, centre pixel "
                "(innvestigate: Concatenate)", SkipUNet, (2, 8, 8), (-1.0, 1.0), 0.3, target=4 * 8 + 4),
    CensusModel("enso", "ENSO dense 8-8-2 on an 18x36 grid", _reference("enso"), (1, 18, 36), (-1.0, 1.0), 0.1),
    CensusModel("convection", "convection 3D CNN, 2x5x16x16", _reference("convection"), (2, 5, 16, 16),
                (0.0, 1.0), 0.1),
    *[CensusModel(f"radar{n}", f"radar encoder-decoder N={n}, 4x{RADAR_SIZE}x{RADAR_SIZE}, centre pixel",
                  _reference(f"radar{n}"), (4, RADAR_SIZE, RADAR_SIZE), (0.0, 1.0), 0.1,
                  target=(RADAR_SIZE // 2) * RADAR_SIZE + RADAR_SIZE // 2) for n in (1, 2, 3)],
]
#: name -> CensusModel, in the census's order
CENSUS_MODELS = {model.name: model for model in _CENSUS_MODELS}


def census_seed(seed: int, name: str) -> int:
    """The seed of one census model's numbers: the run's seed and the model's name."""
    return seed * 100_003 + zlib.crc32(name.encode())


def census_inputs(spec: CensusModel, n_samples: int, seed: int) -> torch.Tensor:
    """n_samples float64 inputs, each rescaled to span exactly spec.domain."""
    generator = torch.Generator().manual_seed(census_seed(seed, spec.name) + 1)
    x = torch.randn((n_samples,) + spec.input_shape, generator=generator, dtype=torch.float64)
    flat = x.reshape(n_samples, -1)
    low, high = spec.domain
    minimum, maximum = flat.min(1, keepdim=True).values, flat.max(1, keepdim=True).values
    flat = (flat - minimum) / (maximum - minimum) * (high - low) + low
    return flat.reshape(x.shape)


def census_model(spec: CensusModel, seed: int) -> nn.Module:
    """The model in float64 with seeded random weights and biases (randomize_he)."""
    torch.manual_seed(0)   # the constructors' own init is overwritten; keep the global RNG out of it
    return randomize_he(spec.build().double(), census_seed(seed, spec.name), spec.bias_scale)


# --- modern blocks: the census zoo's own architectures (and the engine tests') ----------------
class DiffusionResBlock(nn.Module):
    """GroupNorm -> SiLU -> conv, twice, plus a skip (a 1x1 conv where the width changes): the
    residual block of diffusion U-Nets (Ho et al. 2020), without the time embedding."""

    def __init__(self, channels_in: int, channels_out: int, groups: int):
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, channels_in)
        self.act1 = nn.SiLU()
        self.conv1 = nn.Conv2d(channels_in, channels_out, 3, padding=1)
        self.norm2 = nn.GroupNorm(groups, channels_out)
        self.act2 = nn.SiLU()
        self.conv2 = nn.Conv2d(channels_out, channels_out, 3, padding=1)
        self.skip = nn.Identity() if channels_in == channels_out else nn.Conv2d(channels_in, channels_out, 1)

    def forward(self, x):
        h = self.conv1(self.act1(self.norm1(x)))
        h = self.conv2(self.act2(self.norm2(h)))
        return self.skip(x) + h


class DiffusionUNet(nn.Module):
    """A small diffusion-style U-Net: conv stem, residual blocks with GroupNorm and SiLU, a strided
    conv down, a middle block, nearest upsampling, a torch.cat skip from the encoder, and a
    GroupNorm -> SiLU -> conv head with as many output channels as input channels (a noise
    prediction map). Sizes: the input's height and width must be even."""

    def __init__(self, channels: int = 2, width: int = 8, groups: int = 4):
        super().__init__()
        self.stem = nn.Conv2d(channels, width, 3, padding=1)
        self.encode = DiffusionResBlock(width, width, groups)
        self.down = nn.Conv2d(width, 2 * width, 3, stride=2, padding=1)
        self.middle = DiffusionResBlock(2 * width, 2 * width, groups)
        self.up = nn.Upsample(scale_factor=2, mode="nearest")
        self.up_conv = nn.Conv2d(2 * width, width, 3, padding=1)
        self.decode = DiffusionResBlock(2 * width, width, groups)
        self.head_norm = nn.GroupNorm(groups, width)
        self.head_act = nn.SiLU()
        self.head = nn.Conv2d(width, channels, 3, padding=1)

    def forward(self, x):
        skip = self.encode(self.stem(x))
        h = self.middle(self.down(skip))
        h = self.up_conv(self.up(h))
        h = self.decode(torch.cat([h, skip], dim=1))
        return self.head(self.head_act(self.head_norm(h)))


class TwoBranchNet(nn.Module):
    """One input, two branches (a 3x3 conv path with average pooling, a dilated 3x3 conv path
    with max pooling), their features concatenated, then a dense head."""

    def __init__(self, channels: int = 2, size: int = 8, width: int = 4, n_out: int = 3):
        super().__init__()
        self.local = nn.Sequential(nn.Conv2d(channels, width, 3, padding=1), nn.ReLU(), nn.AvgPool2d(2))
        self.wide = nn.Sequential(nn.Conv2d(channels, width, 3, padding=2, dilation=2), nn.ReLU(), nn.MaxPool2d(2))
        self.head = nn.Sequential(nn.Linear(2 * width * (size // 2) ** 2, 8), nn.ReLU(), nn.Linear(8, n_out))

    def forward(self, x):
        features = torch.cat([self.local(x).flatten(1), self.wide(x).flatten(1)], dim=1)
        return self.head(features)


def awaken(model: nn.Module, seed: int = 0) -> nn.Module:
    """Seeded random weights that keep the activations of a deep backbone of order one: He
    weights (N(0, 2/fan_in)), biases N(0, 0.1^2), BatchNorm statistics near (0, 1), norm affine
    parts near (1, 0), layer scales at 0.5. torchvision's own initialization leaves the logits of
    MobileNet or EfficientNet near 1e-9 at random weights, where every rule's stabilizer absorbs
    the whole output and a conservation check says nothing. Returns the model in eval mode."""
    generator = torch.Generator().manual_seed(seed)

    def normal(shape, std, mean=0.0):
        return torch.randn(shape, generator=generator) * std + mean

    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, (nn.Linear, nn.modules.conv._ConvNd)):
                module.weight.copy_(normal(module.weight.shape, math.sqrt(2.0 / module.weight[0].numel())))
                if module.bias is not None:
                    module.bias.copy_(normal(module.bias.shape, 0.1))
            elif isinstance(module, nn.modules.batchnorm._BatchNorm) and module.running_mean is not None:
                module.running_mean.copy_(normal(module.running_mean.shape, 0.1))
                module.running_var.copy_(0.5 + torch.rand(module.running_var.shape, generator=generator))
            if isinstance(module, (nn.modules.batchnorm._BatchNorm, nn.LayerNorm, nn.GroupNorm)) \
                    and module.weight is not None:
                module.weight.copy_(normal(module.weight.shape, 0.2, 1.0))
                if module.bias is not None:
                    module.bias.copy_(normal(module.bias.shape, 0.1))
        for name, parameter in model.named_parameters():
            if "layer_scale" in name:
                parameter.fill_(0.5)
    return model.eval()
