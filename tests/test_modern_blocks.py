"""The post-2018 blocks against independent references (float64, 1e-10).

- elementwise nonlinearities: the identity rule (relevance passes through unchanged);
- LayerNorm, GroupNorm, InstanceNorm, RMSNorm with the standard deviation held constant: the
  reference builds each sample's matrix from the normalization with that sample's std frozen
  (written here from the formula, not from the engine's operator) and applies the textbook rule;
- products of two input-dependent tensors: uniform (half to each factor) and gate held constant;
- adaptive max pooling, stochastic depth, shape arithmetic in forward, tuple/dict outputs and
  several inputs.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import xaibench
from xaibench.lrp import composites
from xaibench.lrp.graph import trace
from xaibench.lrp.reference import layer_matrix, local_matrix
from xaibench.lrp.reference import relevance as reference_relevance

TOLERANCE = 1e-10
D = torch.float64


def _walk(module, x, method="lrp.epsilon", seed=0, **options):
    """The engine's relevance at the input of one module for a random output relevance of two
    targets at once; returns (relevance_in, r_out, graph values)."""
    graph = trace(nn.Sequential(module) if not isinstance(module, nn.Sequential) else module).to(D, x.device)
    state = {"composite": composites.composite(method, **options)}
    values = graph.forward(x, state)
    out = values[graph.explained_name]
    g = torch.Generator().manual_seed(seed)
    r_out = torch.randn((2 * x.shape[0],) + tuple(out.shape[1:]), generator=g, dtype=D)
    relevance_in, rows = graph.relevance(values, r_out, state)
    return relevance_in, r_out, rows


def _sample(shape, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=g, dtype=D) * 1.5 + 0.3
    x[torch.rand(shape, generator=g) < 0.1] = 0.0
    return x


# --- elementwise nonlinearities: the identity rule -----------------------------------------------
ACTIVATION_MODULES = [nn.ReLU6(), nn.Hardtanh(-0.5, 2.0), nn.SiLU(), nn.GELU(), nn.GELU("tanh"), nn.Hardswish(),
                      nn.Mish(), nn.ELU(), nn.SELU(), nn.CELU(0.7), nn.Softplus(), nn.Tanh(), nn.Sigmoid(),
                      nn.Hardsigmoid(), nn.PReLU(3), nn.Softsign()]


class _Functional(nn.Module):
    def __init__(self, function):
        super().__init__()
        self.function = function

    def forward(self, x):
        return self.function(x) * 1.0  # the product keeps the activation inside the network (not final)


ACTIVATION_FUNCTIONS = {"relu6": F.relu6, "hardtanh": F.hardtanh, "silu": F.silu, "gelu": F.gelu,
                        "hardswish": F.hardswish, "mish": F.mish, "elu": F.elu, "selu": F.selu, "celu": F.celu,
                        "softplus": F.softplus, "tanh": torch.tanh, "sigmoid_method": lambda t: t.sigmoid(),
                        "tanh_method": lambda t: t.tanh(), "hardsigmoid": F.hardsigmoid}


@pytest.mark.parametrize("activation", ACTIVATION_MODULES + [_Functional(f) for f in ACTIVATION_FUNCTIONS.values()],
                         ids=[type(m).__name__ for m in ACTIVATION_MODULES] + list(ACTIVATION_FUNCTIONS))
def test_activations_pass_relevance_through_unchanged(activation):
    x = _sample((3, 3, 4))
    model = nn.Sequential(activation, nn.Identity()).double()
    relevance_in, r_out, _ = _walk(model, x, method="lrp.z")
    assert torch.equal(relevance_in, r_out)
    graph = trace(model).to(D, x.device)
    assert torch.allclose(graph.forward(x, {})[graph.explained_name], model(x), atol=1e-14)


def test_non_monotone_activations_do_not_carry_zbox_bounds():
    """f(low), f(high) bound f(x) only for a monotone f: through SiLU z^B must refuse, through Tanh it applies."""
    x = _sample((2, 4)).clamp(-1, 1)
    for activation, carries in ((nn.SiLU(), False), (nn.GELU(), False), (nn.Tanh(), True), (nn.ReLU6(), True)):
        model = nn.Sequential(activation, nn.Linear(4, 3)).double()
        if carries:
            xaibench.explain(model, x, "lrp.zbox", low=-1.0, high=1.0)
        else:
            with pytest.raises(xaibench.UnsupportedLayerError, match="cannot be carried"):
                xaibench.explain(model, x, "lrp.zbox", low=-1.0, high=1.0)


# --- normalizations: std held constant -----------------------------------------------------------
def _frozen(kind, module, x_b):
    """The normalization of one sample x_b as a function of t with x_b's standard deviation
    frozen (mean subtraction stays a function of t): an affine map, from the textbook formula."""
    w = getattr(module, "weight", None)
    b = getattr(module, "bias", None)
    if kind == "layer":
        dims = tuple(range(-len(module.normalized_shape), 0))
        std = torch.sqrt(x_b.var(dims, unbiased=False, keepdim=True) + module.eps)

        def f(t):
            y = (t - t.mean(tuple(d for d in dims), keepdim=True)) / std
            return y * (1 if w is None else w) + (0 if b is None else b)
    elif kind == "rms":
        dims = tuple(range(-len(module.normalized_shape), 0))
        eps = torch.finfo(x_b.dtype).eps if module.eps is None else module.eps
        rms = torch.sqrt(x_b.pow(2).mean(dims, keepdim=True) + eps)

        def f(t):
            return t / rms * (1 if w is None else w)
    elif kind in ("group", "instance"):
        groups = module.num_groups if kind == "group" else x_b.shape[0]
        channels = x_b.shape[0]
        view = (channels,) + (1,) * (x_b.dim() - 1)
        std = torch.sqrt(x_b.reshape(groups, -1).var(1, unbiased=False) + module.eps)

        def f(t):
            flat = t.reshape(t.shape[0], groups, -1)
            y = ((flat - flat.mean(-1, keepdim=True)) / std[None, :, None]).reshape(t.shape)
            if w is not None:
                y = y * w.view(view)
            return y if b is None else y + b.view(view)
    else:  # instance norm with running statistics: per-channel affine
        channels = x_b.shape[0]
        view = (channels,) + (1,) * (x_b.dim() - 1)

        def f(t):
            y = (t - module.running_mean.view(view)) / torch.sqrt(module.running_var.view(view) + module.eps)
            if w is not None:
                y = y * w.view(view)
            return y if b is None else y + b.view(view)
    return f


def _randomized(module, seed):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype))
        for name in ("running_mean", "running_var"):
            buffer = getattr(module, name, None)
            if buffer is not None:
                buffer.copy_(torch.rand(buffer.shape, generator=g, dtype=buffer.dtype) + 0.5)
    return module


NORMS = {
    "layernorm_last": (lambda: nn.LayerNorm(5), (3, 5), "layer"),
    "layernorm_two_dims": (lambda: nn.LayerNorm((3, 4)), (2, 3, 4), "layer"),
    "layernorm_no_bias": (lambda: nn.LayerNorm(4, bias=False), (3, 4), "layer"),
    "layernorm_no_affine": (lambda: nn.LayerNorm(4, elementwise_affine=False), (2, 4), "layer"),
    "groupnorm": (lambda: nn.GroupNorm(2, 4), (4, 3, 2), "group"),
    "groupnorm_one_group": (lambda: nn.GroupNorm(1, 3), (3, 2, 2), "group"),
    "instancenorm2d_affine": (lambda: nn.InstanceNorm2d(3, affine=True), (3, 2, 3), "instance"),
    "instancenorm1d": (lambda: nn.InstanceNorm1d(2), (2, 5), "instance"),
    "instancenorm_running": (lambda: nn.InstanceNorm2d(2, affine=True, track_running_stats=True).eval(),
                             (2, 2, 3), "running"),
    "rmsnorm": (lambda: nn.RMSNorm(4), (3, 4), "rms"),
}

NORM_RULES = {
    "z": ("lrp.z", {}, "z", {}),
    "epsilon": ("lrp.epsilon", {"epsilon": 0.1}, "epsilon", {"epsilon": 0.1}),
    "zplus": ("lrp.zplus", {}, "zplus", {}),
    "alpha2beta1": ("lrp.alpha2beta1", {}, "alpha_beta", {"alpha": 2.0, "beta": 1.0}),
    "gamma": ("lrp.gamma", {"gamma": 0.25}, "gamma", {"gamma": 0.25}),
    "wsquare": ("lrp.wsquare", {}, "wsquare", {}),
    "flat": ("lrp.flat", {}, "flat", {}),
}


@pytest.mark.parametrize("bias", [True, False], ids=["bias", "ignore_bias"])
@pytest.mark.parametrize("rule", sorted(NORM_RULES))
@pytest.mark.parametrize("norm", sorted(NORMS))
def test_normalizations_match_the_frozen_std_reference(norm, rule, bias):
    build, shape, kind = NORMS[norm]
    module = _randomized(build().double(), seed=len(norm))
    method, options, ref_rule, ref_options = NORM_RULES[rule]
    x = _sample((2,) + shape, seed=len(rule))
    relevance_in, r_out, _ = _walk(module, x, method, **{**options, "bias": bias})
    worst = 0.0
    for row in range(r_out.shape[0]):
        x_b = x[row % x.shape[0]]
        M, b = layer_matrix(_frozen(kind, module, x_b), shape)
        expected = reference_relevance(ref_rule, M, b, x_b.reshape(-1), r_out[row].reshape(-1), bias=bias,
                                       **ref_options)
        error = (relevance_in[row].reshape(-1) - expected).abs().max() / max(1.0, float(expected.abs().max()))
        worst = max(worst, float(error))
    assert worst < TOLERANCE, f"{norm}/{rule}: error {worst:.3g}"


def test_normalization_reference_is_not_vacuous():
    """The engine's LayerNorm against a reference with the std NOT frozen (the mean of t alone) differs."""
    module = _randomized(nn.LayerNorm(5).double(), 1)
    x = _sample((2, 5))
    relevance_in, r_out, _ = _walk(module, x, "lrp.z")
    x_b = x[0]
    wrong_std = torch.sqrt(x_b.var(unbiased=True) + module.eps)  # the unbiased variance: a different layer

    def f(t):
        return (t - t.mean(-1, keepdim=True)) / wrong_std * module.weight + module.bias
    M, b = layer_matrix(f, (5,))
    expected = reference_relevance("z", M, b, x_b, r_out[0])
    assert (relevance_in[0] - expected).abs().max() > 1e-4


def test_normalization_ledger_books_the_bias_share():
    module = _randomized(nn.LayerNorm(6).double(), 3)
    x = _sample((3, 6))
    model = nn.Sequential(nn.Linear(6, 6), module, nn.Linear(6, 2)).double()
    e = xaibench.explain(model, x, "lrp.epsilon", epsilon=0.1)
    row = next(r for r in e.ledger if r.kind == "LayerNorm")
    assert "std held constant" in row.rule
    assert float(row.absorbed_bias.abs().max()) > 1e-6
    assert float(row.residual.abs().max()) < 1e-12
    assert float(e.conservation_error.max()) < 1e-12


def test_functional_layer_norm_of_convnext_permute_layernorm_permute():
    class LayerNorm2d(nn.LayerNorm):  # as torchvision's ConvNeXt: channels last, normalized, back
        def forward(self, x):
            x = x.permute(0, 2, 3, 1)
            x = F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)
            return x.permute(0, 3, 1, 2)

    norm = _randomized(LayerNorm2d(3).double(), 4)
    x = _sample((2, 3, 2, 2))
    relevance_in, r_out, _ = _walk(nn.Sequential(norm), x, "lrp.epsilon", epsilon=0.1)
    channels_last = nn.LayerNorm(3).double()
    channels_last.load_state_dict(norm.state_dict())
    for row in range(r_out.shape[0]):
        x_b = x[row % 2].permute(1, 2, 0)
        f = _frozen("layer", channels_last, x_b)
        M, b = layer_matrix(f, (2, 2, 3))
        expected = reference_relevance("epsilon", M, b, x_b.reshape(-1), r_out[row].permute(1, 2, 0).reshape(-1),
                                       epsilon=0.1)
        got = relevance_in[row].permute(1, 2, 0).reshape(-1)
        assert (got - expected).abs().max() < TOLERANCE


def test_hand_written_layer_norm_holds_the_divisor_constant():
    """(x - mean) / sqrt(var + eps) written out: the divisor gets no relevance, pow and sqrt need no rule,
    and the map equals nn.LayerNorm's without affine part."""
    class HandNorm(nn.Module):
        def forward(self, x):
            u = x.mean(-1, keepdim=True)
            s = (x - u).pow(2).mean(-1, keepdim=True)
            return (x - u) / torch.sqrt(s + 1e-5)

    x = _sample((2, 5))
    model = nn.Sequential(nn.Linear(5, 5), HandNorm(), nn.Linear(5, 2)).double()
    e = xaibench.explain(model, x, "lrp.z")
    assert float(e.relative_conservation_error.max()) < 1e-10
    assert any("divisor held constant" in row.rule for row in e.ledger)


# --- products --------------------------------------------------------------------------------------
class _Gated(nn.Module):
    """x[:, :3] * sigmoid(x[:, 3:]): a gate times its features."""

    def forward(self, x):
        return x[:, :3] * torch.sigmoid(x[:, 3:])


class _SqueezeExcitation(nn.Module):
    """features * sigmoid(mean over the map): the gate is broadcast over H, W."""

    def forward(self, x):
        return x * torch.sigmoid(x.mean((2, 3), keepdim=True))


def test_uniform_product_rule_gives_half_to_each_factor():
    x = _sample((2, 6))
    relevance_in, r_out, rows = _walk(_Gated(), x, "lrp.z")
    expected = torch.cat([r_out / 2, r_out / 2], 1)  # the sigmoid passes its half through unchanged
    assert torch.allclose(relevance_in, expected, atol=1e-14)
    product = next(r for r in rows if "Product" in r[0].rule_name())
    assert torch.allclose(product[1], product[2], atol=1e-14)  # nothing absorbed


def test_gate_constant_gives_everything_to_the_gated_features():
    x = _sample((2, 6))
    relevance_in, r_out, _ = _walk(_Gated(), x, "lrp.z", product="gate_constant")
    assert torch.allclose(relevance_in[:, :3], r_out, atol=1e-14)
    assert torch.equal(relevance_in[:, 3:], torch.zeros_like(r_out))


@pytest.mark.parametrize("product", ["uniform", "gate_constant"])
def test_broadcast_gate_gets_its_relevance_summed_over_the_map(product):
    x = _sample((2, 3, 4, 4))
    e = xaibench.explain(nn.Sequential(_SqueezeExcitation(), nn.Flatten(), nn.Linear(48, 2)).double(), x,
                         "lrp.z", product=product)
    assert float(e.relative_conservation_error.max()) < 1e-10
    squeeze = xaibench.explain(nn.Sequential(_SqueezeExcitation(), nn.Flatten(), nn.Linear(48, 2)).double(), x,
                               "lrp.z", product="uniform").relevance
    if product == "gate_constant":
        assert not torch.allclose(e.relevance, squeeze)


def test_a_sigmoid_gate_wins_over_silu_features():
    """EfficientNet's SE block: SiLU features times a sigmoid gate; the sigmoid is the gate."""
    class SiLUFeaturesGate(nn.Module):
        def forward(self, x):
            features = F.silu(x[:, :3])
            return features * torch.sigmoid(x[:, 3:])
    x = _sample((2, 6))
    relevance_in, r_out, _ = _walk(SiLUFeaturesGate(), x, "lrp.z", product="gate_constant")
    assert torch.allclose(relevance_in[:, :3], r_out, atol=1e-14)
    assert torch.equal(relevance_in[:, 3:], torch.zeros_like(r_out))


def test_gate_constant_names_a_product_without_a_gate():
    class Square(nn.Module):
        def forward(self, x):
            return x * x
    x = _sample((2, 4))
    e = xaibench.explain(nn.Sequential(Square(), nn.Linear(4, 2)).double(), x, "lrp.z")  # uniform: fine
    assert float(e.relative_conservation_error.max()) < 1e-10
    with pytest.raises(xaibench.UnsupportedLayerError, match="neither factor"):
        xaibench.explain(nn.Sequential(Square(), nn.Linear(4, 2)).double(), x, "lrp.z", product="gate_constant")
    with pytest.raises(ValueError, match="product must be one of"):
        xaibench.explain(nn.Sequential(Square(), nn.Linear(4, 2)).double(), x, "lrp.z", product="half")


def test_constant_factor_is_scaling_layer_scale():
    class LayerScale(nn.Module):
        def __init__(self):
            super().__init__()
            self.gamma = nn.Parameter(torch.tensor([[0.5], [-2.0], [3.0]], dtype=D))

        def forward(self, x):
            return self.gamma * x
    x = _sample((2, 3, 4))
    relevance_in, r_out, _ = _walk(LayerScale(), x, "lrp.z")
    assert torch.equal(relevance_in, r_out)


# --- adaptive max pooling -------------------------------------------------------------------------
@pytest.mark.parametrize("pool, shape", [(nn.AdaptiveMaxPool2d((2, 3)), (2, 5, 7)),
                                         (nn.AdaptiveMaxPool1d(3), (2, 7)),
                                         (nn.AdaptiveMaxPool3d((1, 2, None)), (1, 3, 4, 3))],
                         ids=["2d", "1d", "3d_none"])
def test_adaptive_max_pool_winner_take_all_is_the_local_jacobian(pool, shape):
    x = _sample((2,) + shape)
    relevance_in, r_out, _ = _walk(pool, x, "lrp.epsilon")
    for row in range(r_out.shape[0]):
        M = local_matrix(pool, x[row % 2])
        assert (relevance_in[row].reshape(-1) - M.T @ r_out[row].reshape(-1)).abs().max() < TOLERANCE


def test_adaptive_max_pool_proportional_matches_the_window_reference():
    pool, shape = nn.AdaptiveMaxPool2d((2, 3)), (2, 5, 7)
    x = _sample((2,) + shape).abs()
    relevance_in, r_out, _ = _walk(pool, x, "lrp.epsilon", maxpool="proportional")

    def windows(length, out):  # written from the definition, not from the engine
        return [(math.floor(j * length / out), math.ceil((j + 1) * length / out)) for j in range(out)]

    def window_sum(t):
        rows = []
        for (r0, r1) in windows(5, 2):
            rows.append(torch.stack([t[..., r0:r1, c0:c1].sum((-1, -2)) for (c0, c1) in windows(7, 3)], -1))
        return torch.stack(rows, -2)
    M, _ = layer_matrix(window_sum, shape)
    for row in range(r_out.shape[0]):
        expected = reference_relevance("norm", M, torch.zeros(M.shape[0], dtype=D), x[row % 2].reshape(-1),
                                       r_out[row].reshape(-1), stabilizer=1e-6)
        assert (relevance_in[row].reshape(-1) - expected).abs().max() < TOLERANCE


# --- shape arithmetic, splits, stochastic depth ------------------------------------------------------
class _ShapeArithmetic(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(4, 4, 3, padding=1)
        self.head = nn.Linear(4 * 3 * 3, 2)

    def forward(self, x):
        n, c, h, w = x.shape
        x = self.conv(x)
        groups = 2
        x = x.view(n, groups, c // groups, h, w).transpose(1, 2).contiguous().view(n, -1, h, w)  # channel shuffle
        x1, x2 = x.chunk(2, dim=1)
        x = torch.cat((x2, F.relu(x1)), dim=1)
        n, c, h, w = x.size()
        return self.head(x.view(n, c * h * w))


def test_shape_arithmetic_channel_shuffle_and_chunk_conserve():
    model = _ShapeArithmetic().double()
    x = _sample((3, 4, 3, 3))
    e = xaibench.explain(model, x, "lrp.z")
    assert float(e.relative_conservation_error.max()) < 1e-10
    # sizes are evaluated at run time: another batch size works with the same graph
    e = xaibench.explain(model, _sample((5, 4, 3, 3)), "lrp.epsilon")
    assert float(e.relative_conservation_error.max()) < 1e-10
    gradient = xaibench.explain(model, x, "gradient").relevance
    with torch.enable_grad():
        xg = x.clone().requires_grad_(True)
        out = model(xg)
        out.gather(1, out.argmax(1, keepdim=True)).sum().backward()
    assert torch.allclose(gradient, xg.grad, atol=1e-12)


def test_stochastic_depth_is_the_identity_in_eval():
    torchvision = pytest.importorskip("torchvision")

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.linear = nn.Linear(4, 4)
            self.drop = torchvision.ops.StochasticDepth(0.5, "row")

        def forward(self, x):
            return x + self.drop(self.linear(x))
    model = nn.Sequential(Block(), nn.Linear(4, 2)).double().eval()
    e = xaibench.explain(model, _sample((2, 4)), "lrp.z")
    assert float(e.relative_conservation_error.max()) < 1e-10
    model.train()
    with pytest.raises(xaibench.XaibenchError, match="mode='eval'"):
        xaibench.explain(model, _sample((2, 4)), "lrp.z")
    e = xaibench.explain(model, _sample((2, 4)), "lrp.z", mode="eval")
    assert model.training and float(e.relative_conservation_error.max()) < 1e-10


def test_an_operation_without_a_rule_is_still_named_where_relevance_reaches_it():
    class Sine(nn.Module):
        def forward(self, x):
            return torch.sin(x) * 2.0
    with pytest.raises(xaibench.UnsupportedLayerError, match="'sin"):
        xaibench.explain(nn.Sequential(nn.Linear(3, 3), Sine(), nn.Linear(3, 2)).double(), _sample((2, 3)), "lrp.z")

    class SineOfSize(nn.Module):  # a constant computed from a size: no relevance reaches it
        def forward(self, x):
            return x * torch.sin(torch.arange(x.shape[1], dtype=x.dtype)) + 1.0
    e = xaibench.explain(nn.Sequential(SineOfSize(), nn.Linear(3, 2)).double(), _sample((2, 3)), "lrp.z")
    assert float(e.relative_conservation_error.max()) < 1e-10


# --- several outputs ------------------------------------------------------------------------------
class _TwoHeads(nn.Module):
    def __init__(self, as_dict):
        super().__init__()
        self.body = nn.Linear(4, 5)
        self.a, self.b = nn.Linear(5, 3), nn.Linear(5, 2)
        self.as_dict = as_dict

    def forward(self, x):
        h = F.relu(self.body(x))
        return {"out": self.a(h), "aux": self.b(h)} if self.as_dict else (self.a(h), self.b(h))


@pytest.mark.parametrize("as_dict", [True, False], ids=["dict", "tuple"])
def test_output_option_selects_the_output_explained(as_dict):
    model = _TwoHeads(as_dict).double()
    x = _sample((3, 4))
    with pytest.raises(xaibench.InputError, match="output=") as info:
        xaibench.explain(model, x, "lrp.epsilon")
    assert ("'out', 'aux'" if as_dict else "0, 1") in str(info.value)
    key = "aux" if as_dict else 1
    for method in ("lrp.epsilon", "gradient", "integrated_gradients"):
        e = xaibench.explain(model, x, method, output=key)
        assert e.output.shape == (3,)
        assert torch.allclose(e.output, model(x)[key].max(1).values)
    e = xaibench.explain(model, x, "lrp.z", output=key)
    assert float(e.relative_conservation_error.max()) < 1e-10
    with pytest.raises(xaibench.InputError, match="not one of the model's outputs"):
        xaibench.explain(model, x, "lrp.epsilon", output="nope" if as_dict else 5)


def test_output_option_on_a_single_output_model_is_an_error():
    with pytest.raises(xaibench.InputError, match="returns one tensor"):
        xaibench.explain(nn.Linear(3, 2).double(), _sample((2, 3)), "lrp.epsilon", output=0)


# --- several inputs -------------------------------------------------------------------------------
class _TwoInputs(nn.Module):
    """Two variables as separate inputs (e.g. SST and wind), joined after their own encoders."""

    def __init__(self):
        super().__init__()
        self.sst = nn.Conv2d(1, 3, 3, padding=1)
        self.wind = nn.Linear(4, 6)
        self.head = nn.Linear(3 * 4 * 4 + 6, 3)

    def forward(self, sst, wind):
        a = F.relu(self.sst(sst)).flatten(1)
        b = torch.tanh(self.wind(wind))
        return self.head(torch.cat([a, b], 1))


def test_several_inputs_get_relevance_shaped_like_them_with_one_ledger():
    model = _TwoInputs().double()
    sst, wind = _sample((3, 1, 4, 4)), _sample((3, 4), seed=1)
    e = xaibench.explain(model, (sst, wind), "lrp.z")
    assert isinstance(e.relevance, tuple) and [r.shape for r in e.relevance] == [sst.shape, wind.shape]
    total = e.relevance[0].sum((1, 2, 3)) + e.relevance[1].sum(1)
    assert torch.allclose(total + e.ledger.absorbed(), e.output, atol=1e-12)
    assert float(e.relative_conservation_error.max()) < 1e-10
    several = xaibench.explain(model, (sst, wind), "lrp.epsilon", target=torch.tensor([[0, 2]] * 3))
    assert [r.shape for r in several.relevance] == [(3, 2, 1, 4, 4), (3, 2, 4)]
    # the gradient per input is the one autograd gives
    g = xaibench.explain(model, (sst, wind), "gradient", target=1).relevance
    with torch.enable_grad():
        a, b = sst.clone().requires_grad_(True), wind.clone().requires_grad_(True)
        model(a, b)[:, 1].sum().backward()
    assert torch.allclose(g[0], a.grad) and torch.allclose(g[1], b.grad)
    ixg = xaibench.explain(model, (sst, wind), "input_x_gradient", target=1).relevance
    assert torch.allclose(ixg[1], b.grad * wind)


def test_several_inputs_bad_calls_are_named():
    model = _TwoInputs().double()
    sst, wind = _sample((3, 1, 4, 4)), _sample((3, 4), seed=1)
    with pytest.raises(xaibench.InputError, match="takes 2 input tensor"):
        xaibench.explain(model, sst, "lrp.z")
    with pytest.raises(xaibench.InputError, match="different batch sizes"):
        xaibench.explain(model, (sst, wind[:2]), "lrp.z")
    bad = wind.clone()
    bad[1, 0] = float("nan")
    with pytest.raises(xaibench.InputError, match=r"input 1: .*\[1\]"):
        xaibench.explain(model, (sst, bad), "lrp.z")
    with pytest.raises(xaibench.InputError, match="one input tensor"):
        xaibench.explain(model, (sst, wind), "smoothgrad")


# --- property: the ledger closes on any drawn modern network ----------------------------------------
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from strategies import assert_ledger_closes, modern_networks  # noqa: E402


@settings(max_examples=40, deadline=None)
@given(case=modern_networks(), method=st.sampled_from(["lrp.z", "lrp.epsilon", "lrp.alpha2beta1", "lrp.gamma",
                                                       "lrp.epsilon_plus", "lrp.flat"]),
       product=st.sampled_from(["uniform", "gate_constant"]))
def test_ledger_closes_on_drawn_modern_networks(case, method, product):
    model, x = case.model.double(), case.x.double()
    e = xaibench.explain(model, x, method, product=product)
    assert_ledger_closes(e, 1e-10)
    graph_output = xaibench.explain(model, x, "gradient").output
    assert torch.allclose(graph_output, model(x).max(1).values, atol=1e-10)


class _NeedsConcreteShapes(nn.Module):
    """range(x.dim()) needs a number while tracing: the trace is specialized to the input's shape."""

    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(4, 2)

    def forward(self, x):
        x = x.mean(tuple(range(2, x.dim())))
        return self.linear(x)


def test_a_model_needing_concrete_shapes_gets_a_graph_per_input_shape():
    from xaibench.lrp import engine

    model = _NeedsConcreteShapes().double()
    for shape in ((2, 4, 3, 3), (3, 4, 5, 2), (2, 4, 3, 3)):
        e = xaibench.explain(model, _sample(shape), "lrp.z")
        assert float(e.relative_conservation_error.max()) < 1e-10
        assert torch.allclose(e.output, model(_sample(shape)).max(1).values)
    graphs = [g for g in engine._CACHE[model]["graphs"].values() if isinstance(g, dict)]
    assert sorted(g["graph"].specialized_to for g in graphs) == [((2, 4, 3, 3),), ((3, 4, 5, 2),)]
    with pytest.raises(xaibench.UnsupportedLayerError, match="could not be traced symbolically"):
        trace(model)  # without an example input the shapes are not known


def test_in_place_operations_do_not_change_the_values_the_rules_read():
    """nn.SiLU(inplace=True), F.relu(x, inplace=True), x.relu_() and x *= 2 would overwrite the
    stored output of the layer before them, and the ledger would no longer close."""
    class InPlace(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b, self.c, self.d = (nn.Linear(4, 4) for _ in range(4))
            self.act = nn.SiLU(inplace=True)
            self.head = nn.Linear(4, 2)

        def forward(self, x):
            x = self.act(self.a(x))
            x = F.relu(self.b(x), inplace=True)
            x = self.c(x).relu_()
            x = self.d(x)
            x *= 2.0
            return self.head(F.hardtanh(x, -3.0, 3.0, True))

    model = InPlace().double()
    x = _sample((3, 4))
    e = xaibench.explain(model, x, "lrp.epsilon")
    assert_ledger_closes(e, 1e-10)
    assert torch.allclose(e.output, model(x).max(1).values)


def test_a_tensor_attribute_is_not_taken_for_metadata():
    """x.T is a tensor that depends on the input: relevance reaching it must be refused, not booked
    as a constant (x.shape is metadata and needs no rule)."""
    class Transposed(nn.Module):
        def __init__(self):
            super().__init__()
            self.linear = nn.Linear(3, 2)

        def forward(self, x):
            return self.linear(x.T.T)

    with pytest.raises(xaibench.UnsupportedLayerError, match=r"\.T"):
        xaibench.explain(Transposed().double(), _sample((2, 3)), "lrp.z")


def test_output_wrapper_for_other_backends_leaves_every_module_mode_as_it_was():
    """A model in train mode with one submodule in eval mode: choosing an output for zennit must not
    switch that submodule (nn.Module.train() on a wrapper would)."""
    model = _TwoHeads(True).double()
    model.b.eval()
    e = xaibench.explain(model, _sample((2, 4)), "gradient", backend="zennit", output="aux")
    assert e.output.shape == (2,)
    assert model.training and model.body.training and not model.b.training
