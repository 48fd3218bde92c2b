"""Hypothesis strategies that build small random networks and inputs for the LRP tests.

The structure of a network (depth, layer types, kernel sizes, strides, ...) is drawn by
hypothesis, so failures shrink to a small network; the numbers in it (weights, biases,
BatchNorm statistics, input values) come from a torch.Generator seeded by a drawn integer, so
a failing example is reproduced from its printed structure and seed.

The architectures with fixed structure (ResidualNet, TinyUNet, FunctionalNet), the layer classes
by dimension, randomize() and the fixed named networks (batchnorm_model) live with the other
test networks in xaibench/studies/networks.py; this module draws their sizes and seeds.

Every strategy returns a `Case`: the model (float32, eval mode), an input batch and a short
description. Options switch features off for tests whose identity needs it (bias-free nets
for LRP-0 = gradient x input, ReLU-only nets for the sign of z+, zennit-compatible nets).

Below the strategies are the helpers that more than one test module uses: the options a method
needs (method_options), the ledger's closure (assert_ledger_closes), small fixed networks and
inputs (relu_net, mlp, randn), the models of the documented backend differences, and snapshots
for the "model and input are left untouched" tests.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import torch
from hypothesis import strategies as st
from torch import nn

import xaibench

# The architectures, the layer tables, randomize() and the fixed networks are the shared test networks
# (xaibench/studies/networks.py); the tests import ResidualNet, randomize, batchnorm_model from here.
from xaibench.studies.networks import (  # noqa: F401
    ADAPTIVE_AVGPOOL,
    AVGPOOL,
    BATCHNORM,
    CONV,
    CONV_TRANSPOSED,
    FUNCTIONAL_AFTER,
    FUNCTIONAL_BEFORE,
    INTERPOLATING,
    MAXPOOL,
    FunctionalNet,
    ResidualNet,
    TinyUNet,
    batchnorm_model,
    functional_size,
    randomize,
)

# Spatial sizes are kept small so one explanation takes milliseconds.
SPATIAL = {1: 12, 2: 8, 3: 5}
MAX_SPATIAL = {1: 16, 2: 10, 3: 6}

ALL_RESAMPLES = ("maxpool", "avgpool", "adaptive", "nearest", "interpolate")


@dataclass
class Case:
    model: nn.Module
    x: torch.Tensor
    description: str

    def __repr__(self):  # what hypothesis prints for a falsifying example
        return f"Case({self.description}, x{tuple(self.x.shape)})"


# --- numbers ---------------------------------------------------------------------------------
def make_input(shape, seed: int, nonnegative=False, zeros=True, away_from_zero=False):
    """A float32 input: normal values, some exact zeros, negatives unless nonnegative."""
    generator = torch.Generator().manual_seed(seed + 7919)
    x = torch.randn(shape, generator=generator)
    if away_from_zero:
        x = torch.sign(x) * (0.2 + x.abs())
    if nonnegative:
        x = x.abs()
    if zeros:
        x[torch.rand(shape, generator=generator) < 0.2] = 0.0
    return x


@st.composite
def _numbers(draw, bias):
    """(seed, bias_scale, dead_fraction) for randomize()."""
    seed = draw(st.integers(0, 2**31 - 1))
    if not bias:
        return seed, 0.0, 0.0
    bias_scale = draw(st.sampled_from([0.1, 1.0, 10.0]))  # 10: large biases
    dead = draw(st.sampled_from([0.0, 0.0, 0.3]))
    return seed, bias_scale, dead


@st.composite
def _input_style(draw, nonnegative, zeros, away_from_zero):
    batch = draw(st.integers(1, 3))
    if nonnegative is None:
        nonnegative = draw(st.booleans())
    if zeros is None:
        zeros = draw(st.booleans())
    return batch, dict(nonnegative=nonnegative, zeros=zeros, away_from_zero=away_from_zero)


def _activation(draw, activations):
    kind = draw(st.sampled_from(activations))
    return nn.ReLU() if kind == "relu" else nn.LeakyReLU(draw(st.sampled_from([0.01, 0.2])))


# --- dense networks --------------------------------------------------------------------------
@st.composite
def dense_networks(draw, bias=True, activations=("relu", "leaky"), batchnorm=True, dropout=True,
                   nonnegative=None, zeros=None, away_from_zero=False, max_depth=6):
    """An MLP: depth 1-6 of Linear -> [BatchNorm1d] -> activation -> [Dropout], then Linear."""
    seed, bias_scale, dead = draw(_numbers(bias))
    width = draw(st.integers(2, 7))
    layers, parts = [], [f"dense in={width}"]
    depth = draw(st.integers(1, max_depth))
    for _ in range(depth - 1):
        out = draw(st.integers(2, 8))
        layers.append(nn.Linear(width, out, bias=bias))
        parts.append(f"Linear({out})")
        if batchnorm and draw(st.booleans()):
            layers.append(nn.BatchNorm1d(out))
            parts.append("BN")
        layers.append(_activation(draw, activations))
        parts.append(type(layers[-1]).__name__)
        if dropout and draw(st.booleans()):
            layers.append(nn.Dropout(0.3))
            parts.append("Dropout")
        width = out
    n_out = draw(st.integers(1, 4))
    layers.append(nn.Linear(width, n_out, bias=bias))
    parts.append(f"Linear({n_out})")
    model = randomize(nn.Sequential(*layers), seed, bias_scale, dead)
    batch, style = draw(_input_style(nonnegative, zeros, away_from_zero))
    x = make_input((batch, model[0].in_features), seed, **style)
    return Case(model, x, " ".join(parts) + f" seed={seed} bias_scale={bias_scale} dead={dead}")


# --- convolutional networks ------------------------------------------------------------------
def _pool_out(n, k, s, p):
    return (n + 2 * p - k) // s + 1


@st.composite
def conv_networks(draw, dims=(1, 2, 3), bias=True, activations=("relu", "leaky"),
                  resamples=ALL_RESAMPLES, transposed=True, batchnorm=True, batchnorm_first=True,
                  dropout=True, nonnegative=None, zeros=None, away_from_zero=False, max_depth=6,
                  leaky_before_upsample=False, pool_padding=True):
    """A conv net: depth 1-6 stages of Conv|ConvTranspose -> [BatchNorm] -> activation ->
    [a resampling layer], optionally a BatchNorm as the very first layer, then Flatten -> Linear.

    Resampling: MaxPool (kernel 2-3, stride 1-3: overlapping, tiling and gapped windows,
    optional padding unless pool_padding=False), AvgPool, AdaptiveAvgPool, Upsample nearest or (bi/tri)linear.
    """
    d = draw(st.sampled_from(dims))
    seed, bias_scale, dead = draw(_numbers(bias))
    channels = in_channels = draw(st.integers(1, 3))
    size = SPATIAL[d]
    layers, parts = [], [f"conv{d}d in={channels}x{size}"]
    if batchnorm and batchnorm_first and draw(st.booleans()):
        layers.append(BATCHNORM[d](channels))
        parts.append("BN(first)")
    depth = draw(st.integers(1, max_depth))
    for _ in range(depth):
        out = draw(st.integers(1, 4))
        use_transposed = transposed and draw(st.integers(0, 3)) == 0 and size * 2 + 1 <= MAX_SPATIAL[d]
        if use_transposed:
            k = draw(st.integers(1, 3))
            s = draw(st.integers(1, 2))
            layers.append(CONV_TRANSPOSED[d](channels, out, k, stride=s, bias=bias))
            size = (size - 1) * s + k
            parts.append(f"ConvT(k{k},s{s})")
        else:
            k = draw(st.integers(1, min(3, size)))
            p = draw(st.integers(0, k // 2 if k > 1 else 0))
            s = draw(st.integers(1, 2))
            layers.append(CONV[d](channels, out, k, stride=s, padding=p, bias=bias))
            size = _pool_out(size, k, s, p)
            parts.append(f"Conv(k{k},s{s},p{p})")
        channels = out
        if batchnorm and draw(st.booleans()):
            layers.append(BATCHNORM[d](channels))
            parts.append("BN")
        options = [r for r in resamples if r not in ("nearest", "interpolate") or size * 2 <= MAX_SPATIAL[d]]
        options = [r for r in options if r not in ("maxpool", "avgpool") or size >= 2]
        kind = draw(st.sampled_from(options)) if options and draw(st.booleans()) else None
        if leaky_before_upsample and kind in ("nearest", "interpolate"):
            layers.append(nn.LeakyReLU(0.1))  # no exact zeros reach the upsampling
        else:
            layers.append(_activation(draw, activations))
        parts.append(type(layers[-1]).__name__)
        if dropout and draw(st.integers(0, 4)) == 0:
            layers.append(nn.Dropout(0.2))
            parts.append("Dropout")
        if kind is not None:
            if kind in ("maxpool", "avgpool"):
                k = draw(st.integers(2, min(3, size)))
                s = draw(st.integers(1, 3))
                p = draw(st.integers(0, k // 2)) if pool_padding else 0
                cls = MAXPOOL[d] if kind == "maxpool" else AVGPOOL[d]
                layers.append(cls(k, stride=s, padding=p))
                size = _pool_out(size, k, s, p)
                parts.append(f"{cls.__name__}(k{k},s{s},p{p})")
            elif kind == "adaptive":
                target = draw(st.integers(1, size))
                layers.append(ADAPTIVE_AVGPOOL[d](target))
                size = target
                parts.append(f"AdaptiveAvg({target})")
            else:
                mode = "nearest" if kind == "nearest" else INTERPOLATING[d]
                layers.append(nn.Upsample(scale_factor=2, mode=mode))
                size *= 2
                parts.append(f"Upsample({mode})")
    n_out = draw(st.integers(1, 4))
    layers += [nn.Flatten(), nn.Linear(channels * size**d, n_out, bias=bias)]
    parts.append(f"Flatten Linear({n_out})")
    model = randomize(nn.Sequential(*layers), seed, bias_scale, dead)
    batch, style = draw(_input_style(nonnegative, zeros, away_from_zero))
    x = make_input((batch, in_channels) + (SPATIAL[d],) * d, seed, **style)
    return Case(model, x, " ".join(parts) + f" seed={seed} bias_scale={bias_scale} dead={dead}")


# --- non-Sequential networks -----------------------------------------------------------------
@st.composite
def residual_networks(draw, bias=True, activations=("relu", "leaky"), final_relu=None, nonnegative=None,
                      zeros=None, away_from_zero=False):
    seed, bias_scale, dead = draw(_numbers(bias))
    conv = draw(st.booleans())
    channels = draw(st.integers(1, 3))
    n_out = draw(st.integers(1, 3))
    blocks = draw(st.integers(1, 2))
    final = draw(st.booleans()) if final_relu is None else final_relu
    activation = draw(st.sampled_from(activations))
    model = randomize(ResidualNet(conv, channels, n_out, blocks, bias, final, activation), seed, bias_scale, dead)
    batch, style = draw(_input_style(nonnegative, zeros, away_from_zero))
    shape = (batch, channels, 6, 6) if conv else (batch, channels)
    x = make_input(shape, seed, **style)
    return Case(model, x, f"residual conv={conv} blocks={blocks} final_relu={final} {activation} "
                          f"seed={seed} bias_scale={bias_scale} dead={dead}")


@st.composite
def unet_networks(draw, bias=True, activations=("relu", "leaky"), upsamples=("nearest", "bilinear"),
                  nonnegative=None, zeros=None, away_from_zero=False):
    seed, bias_scale, dead = draw(_numbers(bias))
    channels = draw(st.integers(1, 2))
    width = draw(st.integers(1, 3))
    upsample = draw(st.sampled_from(upsamples))
    activation = draw(st.sampled_from(activations))
    size = draw(st.sampled_from([4, 6]))
    model = randomize(TinyUNet(channels, width, upsample, bias, activation), seed, bias_scale, dead)
    batch, style = draw(_input_style(nonnegative, zeros, away_from_zero))
    x = make_input((batch, channels, size, size), seed, **style)
    return Case(model, x, f"unet width={width} {upsample} {activation} seed={seed} "
                          f"bias_scale={bias_scale} dead={dead}")


@st.composite
def functional_networks(draw, bias=True, nonnegative=None, zeros=None, away_from_zero=False, cat_constant=False):
    """A FunctionalNet with 0-2 steps before the stem and 1-4 after it, sizes kept small;
    cat_constant: sometimes with the constant channel (a model for the drawn batch size only)."""
    seed, bias_scale, dead = draw(_numbers(bias))
    batch, style = draw(_input_style(nonnegative, zeros, away_from_zero))
    channels, size = draw(st.integers(1, 2)), draw(st.integers(3, 5))

    def draw_steps(choices, low, high, h, w):
        steps = []
        for _ in range(draw(st.integers(low, high))):
            allowed = [op for op in choices if (op != "slice" or h >= 2) and
                       (op not in ("nearest", "bilinear") or max(h, w) <= 5)]
            op = draw(st.sampled_from(allowed))
            h, w = functional_size(op, h, w)
            steps.append(op)
        return steps, h, w

    before, h, w = draw_steps(FUNCTIONAL_BEFORE, 0, 2, size, size)
    after, _, _ = draw_steps(FUNCTIONAL_AFTER, 1, 4, h, w)
    constant = cat_constant and draw(st.booleans())
    model = FunctionalNet(channels, size, before, after, draw(st.integers(1, 3)), batch if constant else None)
    if not bias:
        model.stem.bias, model.inner.bias, model.head.bias = None, None, None
    model = randomize(model, seed, bias_scale, dead)
    x = make_input((batch, channels, size, size), seed, **style)
    return Case(model, x, f"functional before={before} after={after} cat_constant={constant} seed={seed} "
                          f"bias_scale={bias_scale}")


def networks(**options):
    """Any of the four families (options a family does not take are dropped for it)."""
    def pick(strategy, names):
        return strategy(**{k: v for k, v in options.items() if k in names})

    common = {"bias", "activations", "nonnegative", "zeros", "away_from_zero"}
    return st.one_of(
        pick(dense_networks, common | {"batchnorm", "dropout", "max_depth"}),
        pick(conv_networks, common | {"dims", "resamples", "transposed", "batchnorm", "batchnorm_first",
                                      "dropout", "max_depth", "leaky_before_upsample"}),
        pick(residual_networks, common | {"final_relu"}),
        pick(unet_networks, common | {"upsamples"}),
        pick(functional_networks, common - {"activations"}),
    )


# --- method options --------------------------------------------------------------------------
BOX_METHODS = ("lrp.zbox", "lrp.epsilon_gamma_box")


def method_options(method: str, x: torch.Tensor, dtype=torch.float64, **extra) -> dict:
    """Options a method needs: z^B bounds from the input's min and max (tensors shaped like x,
    which both backends accept), alpha/beta for the free alpha-beta method."""
    options = dict(extra)
    if method in BOX_METHODS:
        options["low"] = torch.full(x.shape, float(x.min()) - 0.5, dtype=dtype)
        options["high"] = torch.full(x.shape, float(x.max()) + 0.5, dtype=dtype)
    if method == "lrp.alpha_beta":
        options.update(alpha=3.0, beta=2.0)
    return options


# --- shared by the "model and input are left untouched" tests ---------------------------------------
def snapshot(model):
    """(state dict copy, training flag per module, dtype per parameter)."""
    return ({k: v.detach().clone() for k, v in model.state_dict().items()},
            {name: m.training for name, m in model.named_modules()},
            {name: p.dtype for name, p in model.named_parameters()})



# --- the native LRP methods and the ledger's closure -------------------------------------------------
#: every native LRP method (the graph-walk and target tests run each of them)
LRP_METHODS = [m for m in xaibench.methods("native") if m.startswith("lrp.")]
#: the native methods other than LRP and the gradient (tests/test_methods.py)
NEW_METHODS = ["integrated_gradients", "smoothgrad", "occlusion"]


def ledger_scale(e) -> torch.Tensor:
    """Per (sample[, target]) the size of the largest term the conservation sum adds up."""
    dims = tuple(range(e.output.dim(), e.relevance.dim()))
    candidates = [e.output.abs(), e.relevance.abs().sum(dims)]
    for row in e.ledger:
        for column in (row.relevance_in, row.relevance_out, row.absorbed_bias, row.absorbed_stabilizer,
                       row.absorbed_dropped, row.absorbed_constant):
            candidates.append(column.abs())
    scale = torch.stack([c.expand_as(e.output) for c in candidates]).amax(0)
    return scale.clamp(min=torch.finfo(scale.dtype).tiny)


def assert_ledger_closes(e, tolerance):
    """The conservation sum and every ledger row close to `tolerance` times the ledger's scale
    (the tolerances are explained in tests/test_graph.py)."""
    assert e.ledger is not None and len(e.ledger) > 0
    scale = ledger_scale(e)
    error = e.conservation_error / scale
    assert torch.isfinite(e.relevance).all(), "non-finite relevance"
    assert float(error.max()) <= tolerance, (
        f"conservation error {e.conservation_error.tolist()} (relative {error.tolist()}), output "
        f"{e.output.tolist()}\n{e.ledger}")
    # the error the Explanation reports must be what the ledger says
    dims = tuple(range(e.output.dim(), e.relevance.dim()))
    recomputed = (e.relevance.sum(dims) + e.ledger.absorbed() - e.output).abs()
    assert float(((recomputed - e.conservation_error).abs() / scale).max()) <= tolerance
    for row in e.ledger:
        residual = row.residual.abs() / scale
        assert float(residual.max()) <= tolerance, (
            f"ledger row {row.layer} ({row.kind}, {row.rule}) does not close: residual "
            f"{row.residual.tolist()}, out {row.relevance_out.tolist()}, in {row.relevance_in.tolist()}, "
            f"absorbed {row.absorbed.tolist()}")
    # consecutive rows chain: what the input layer receives is what the walk left at the input
    first = e.ledger[0]
    assert torch.allclose(first.relevance_out, e.output, rtol=0, atol=float(tolerance * scale.max()))


# --- small fixed networks and inputs ---------------------------------------------------------------
def randn(*shape, seed=0):
    """A standard normal float32 tensor from its own seeded generator."""
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def relu_net(seed=0, last=None):
    """6 -> 16 -> 16 -> 3 with ReLUs (modules l1, a1, l2, a2, head[, last])."""
    layers = OrderedDict([("l1", nn.Linear(6, 16)), ("a1", nn.ReLU()), ("l2", nn.Linear(16, 16)),
                          ("a2", nn.ReLU()), ("head", nn.Linear(16, 3))])
    if last is not None:
        layers["last"] = last
    return randomize(nn.Sequential(layers), seed=seed)


def mlp(last=None):
    """4 -> 6 -> 3 with a ReLU (modules encoder, act, head[, last])."""
    layers = OrderedDict([("encoder", nn.Linear(4, 6)), ("act", nn.ReLU()), ("head", nn.Linear(6, 3))])
    if last is not None:
        layers["last"] = last
    return randomize(nn.Sequential(layers), seed=0)


# --- the models of the documented backend differences (tests/test_table.py, tests/test_validate.py) --
def upsampling_cnn():
    """A model with bilinear upsampling: zennit's lrp.flat differs from native (documented)."""
    torch.manual_seed(9)
    return nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Upsample(scale_factor=2, mode="bilinear"), nn.Flatten(), nn.Linear(2 * 8 * 8, 3)).eval()


def batchnorm_cnn():
    """BatchNorm with statistics far from mean 0, variance 1: innvestigate differs (documented)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.MaxPool2d(2),
                          nn.Flatten(), nn.Linear(4 * 4 * 4, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 3))
    with torch.no_grad():
        for bn in (model[1], model[6]):
            bn.running_mean.normal_(0, 0.5)
            bn.running_var.uniform_(0.3, 3.0)
            bn.weight.uniform_(0.5, 1.5)
            bn.bias.normal_(0, 0.3)
    return model.eval()


def padded_cnn():
    """A conv padding Keras cannot express as 'same': innvestigate's flat differs (documented)."""
    torch.manual_seed(8)
    return nn.Sequential(nn.Conv2d(1, 2, 2, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(2 * 9 * 9, 3)).eval()


def documented_difference_examples():
    """One (backend, method, options, model) per documented difference where it applies."""
    from external_model import my_cnn

    torch.manual_seed(0)
    cnn = my_cnn.build().eval()
    return {
        "issue 116": ("innvestigate", "lrp.alpha2beta1", {}, cnn),
        "w^2 rule ignores biases": ("innvestigate", "lrp.wsquare", {}, cnn),
        "BatchNorm as a layer of its own": ("innvestigate", "lrp.epsilon", {}, batchnorm_cnn()),
        "explicit zero padding": ("innvestigate", "lrp.flat", {}, padded_cnn()),
        "SmoothGrad": ("innvestigate", "smoothgrad", {}, cnn),
        "left Riemann sum": ("innvestigate", "integrated_gradients", {}, cnn),
        "z^B bounds": ("innvestigate", "lrp.zbox", {}, cnn),
        "upsampling": ("zennit", "lrp.flat", {}, upsampling_cnn()),
    }


def full_snapshot(model):
    """Everything validate must leave alone: parameters and buffers bit for bit, the module tree
    with each module's attributes, train/eval mode, requires_grad and hooks."""
    return ({k: v.clone() for k, v in model.state_dict().items()},
            [(name, type(m), m.training, dict(m._forward_hooks), repr(m)) for name, m in model.named_modules()],
            [p.requires_grad for p in model.parameters()])


def unchanged(model, snapshot):
    """Whether the model is as full_snapshot() recorded it."""
    state, modules, requires_grad = full_snapshot(model)
    return (state.keys() == snapshot[0].keys() and all(torch.equal(state[k], snapshot[0][k]) for k in state)
            and modules == snapshot[1] and requires_grad == snapshot[2])


# --- modern blocks (issue 16): normalizations, smooth activations, gates, token MLPs -------------------
MODERN_ACTIVATIONS = {"silu": nn.SiLU, "gelu": nn.GELU, "hardswish": nn.Hardswish, "mish": nn.Mish,
                      "elu": nn.ELU, "relu6": nn.ReLU6, "tanh": nn.Tanh, "softplus": nn.Softplus}


class Gate(nn.Module):
    """Squeeze-excitation: features * sigmoid(W2 relu(W1 mean(features))), the gate broadcast."""

    def __init__(self, channels, dims):
        super().__init__()
        self.squeeze = nn.Linear(channels, max(1, channels // 2))
        self.excite = nn.Linear(max(1, channels // 2), channels)
        self.dims = dims

    def forward(self, x):
        s = x.mean(tuple(range(2, x.dim())))
        s = torch.sigmoid(self.excite(torch.relu(self.squeeze(s))))
        return x * s.view(s.shape + (1,) * self.dims)


class GatedMLP(nn.Module):
    """A token MLP: LayerNorm -> (SiLU(W_g x) * W_u x) -> W_d, with a residual (SwiGLU-like)."""

    def __init__(self, width, hidden):
        super().__init__()
        self.norm = nn.LayerNorm(width)
        self.gate = nn.Linear(width, hidden)
        self.up = nn.Linear(width, hidden)
        self.down = nn.Linear(hidden, width)

    def forward(self, x):
        h = self.norm(x)
        return x + self.down(nn.functional.silu(self.gate(h)) * self.up(h))


def _randomize_norms(model, seed):
    generator = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, (nn.LayerNorm, nn.GroupNorm)) and module.weight is not None:
                module.weight.copy_(1 + 0.5 * torch.randn(module.weight.shape, generator=generator))
                if module.bias is not None:
                    module.bias.copy_(0.3 * torch.randn(module.bias.shape, generator=generator))
    return model


@st.composite
def modern_networks(draw, bias=True):
    """Either a conv net (Conv -> [GroupNorm | InstanceNorm] -> smooth activation -> [gate]),
    pooled to a Linear head, or a token net [B, L, C] (Linear -> [GatedMLP | LayerNorm -> GELU
    -> Linear] ... -> mean over tokens -> Linear)."""
    seed, bias_scale, dead = draw(_numbers(bias))
    parts = []
    if draw(st.booleans()):
        channels, layers_ = draw(st.integers(2, 4)), []
        width = channels
        parts.append(f"conv in={channels}")
        for _ in range(draw(st.integers(1, 3))):
            out = 2 * draw(st.integers(1, 3))
            layers_.append(nn.Conv2d(width, out, 3, padding=1, bias=bias))
            norm = draw(st.sampled_from(["none", "group", "instance"]))
            if norm == "group":
                layers_.append(nn.GroupNorm(2, out))
            elif norm == "instance":
                layers_.append(nn.InstanceNorm2d(out, affine=draw(st.booleans())))
            activation = draw(st.sampled_from(sorted(MODERN_ACTIVATIONS)))
            layers_.append(MODERN_ACTIVATIONS[activation]())
            parts.append(f"Conv({out}) {norm} {activation}")
            if draw(st.booleans()):
                layers_.append(Gate(out, 2))
                parts.append("gate")
            width = out
        layers_ += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(width, draw(st.integers(1, 3)), bias=bias)]
        shape = (channels, 5, 5)
    else:
        tokens, width = draw(st.integers(2, 5)), draw(st.integers(2, 6))
        layers_ = [nn.Linear(width, width, bias=bias)]
        parts.append(f"tokens L={tokens} C={width}")
        for _ in range(draw(st.integers(1, 3))):
            if draw(st.booleans()):
                layers_.append(GatedMLP(width, draw(st.integers(2, 6))))
                parts.append("GatedMLP")
            else:
                layers_ += [nn.LayerNorm(width, bias=bias), nn.GELU(), nn.Linear(width, width, bias=bias)]
                parts.append("LN GELU Linear")
        layers_ += [nn.Flatten(), nn.Linear(tokens * width, draw(st.integers(1, 3)), bias=bias)]
        shape = (tokens, width)
    model = _randomize_norms(randomize(nn.Sequential(*layers_), seed, bias_scale, dead), seed)
    batch, style = draw(_input_style(None, None, False))
    x = make_input((batch,) + shape, seed, **style)
    return Case(model.eval(), x, " ".join(parts) + f" seed={seed} bias_scale={bias_scale} dead={dead}")
