"""The native engine against zennit 0.5.1, method by method, in float64.

Agreement. Both implement the same formulas (same streams, same stabilizer eps*sign(z) with
sign(0) = +1), so in float64 they differ only by rounding: each layer's 1/z factor amplifies a
relative rounding of ~1e-16 by at most |terms|/|z|. We compare max|R_native - R_zennit| per
sample to the sample's sum|R|: measured at most ~4e-11 over the generated networks; the bound
is 1e-8, leaving a large margin for unlucky near-zero denominators while still catching any
formula difference (those show up at 1e-3 and above).

Two settings make the comparison exact rather than approximately equal, and each is its own
documented difference below:
- stabilizer=1e-12: average pooling is the Norm rule (x/(sum + eps)) in both; the stabilizer
  only has to be small against the sums.
- BatchNorm eps=0: zennit's SequentialMergeBatchNorm resets the BatchNorm to running_var=1 but
  keeps its eps, so the "identity" left behind scales by 1/sqrt(1 + eps) (~5e-6 per BatchNorm).
"""

from __future__ import annotations

import pytest
import torch
import zennit  # noqa: E402,F401  in the pinned main environment: a missing zennit fails, never skips
from hypothesis import given
from hypothesis import strategies as st
from strategies import assert_ledger_closes, conv_networks, dense_networks, method_options, randomize
from torch import nn

import xaibench

ZENNIT_METHODS = xaibench.methods("zennit")
AGREEMENT = 1e-8

sequential_nets = st.one_of(
    dense_networks(),
    conv_networks(resamples=("maxpool", "avgpool", "nearest"), transposed=False, batchnorm_first=False,
                  leaky_before_upsample=True),
    # transposed convolutions, without BatchNorm (see test_zennit_merges_batchnorm_into_transposed_conv)
    conv_networks(resamples=("maxpool", "avgpool", "nearest"), batchnorm=False, leaky_before_upsample=True),
)


def float64_copy(case, batchnorm_eps=0.0):
    model = case.model.double()
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.eps = batchnorm_eps
    return model, case.x.double()


def relative_difference(a, b):
    """max |a - b| per sample over that sample's sum |a| (the relevance scale)."""
    dims = tuple(range(1, a.dim()))
    scale = a.abs().sum(dims).clamp(min=1e-300)
    return float(((a - b).abs().amax(dims) / scale).max())


@pytest.mark.parametrize("method", ZENNIT_METHODS)
@given(case=sequential_nets)
def test_native_agrees_with_zennit(method, case):
    model, x = float64_copy(case)
    options = method_options(method, x)
    if method.startswith("lrp."):
        options["stabilizer"] = 1e-12
    native = xaibench.explain(model, x, method, **options)
    reference = xaibench.explain(model, x, method, backend="zennit", **options)
    assert native.relevance.shape == reference.relevance.shape == x.shape
    torch.testing.assert_close(native.output, reference.output, rtol=1e-12, atol=1e-12)
    difference = relative_difference(native.relevance, reference.relevance)
    assert difference <= AGREEMENT, f"{method}: relative difference {difference:.3g}"


# --- documented differences ------------------------------------------------------------------
def _seeded(model, seed=0, bias_scale=1.0):
    return randomize(model, seed, bias_scale).double()


class _Residual(nn.Module):
    def __init__(self, blocks):
        super().__init__()
        self.stem = nn.Linear(4, 5, bias=False)
        self.act = nn.ReLU()
        self.blocks = nn.ModuleList(nn.Sequential(nn.Linear(5, 5, bias=False), nn.ReLU(),
                                                  nn.Linear(5, 5, bias=False)) for _ in range(blocks))
        self.head = nn.Linear(5, 2, bias=False)

    def forward(self, x):
        h = self.act(self.stem(x))
        for block in self.blocks:
            h = h + block(h)
        return self.head(h)


@pytest.mark.parametrize("blocks", [1, 2])
def test_difference_residual_add_counts_relevance_twice_in_zennit(blocks):
    """(a) zennit has no rule for a functional `h + f(h)`: the plain gradient hands the full
    relevance of the sum to both operands, so on a bias-free net under LRP-0 the relevance
    reaching the input is 2**(active blocks) times the output. The native Norm rule splits it: conserved."""
    model = _seeded(_Residual(blocks), seed=3)
    x = torch.randn(3, 4, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    native = xaibench.explain(model, x, "lrp.z", stabilizer=1e-12)
    reference = xaibench.explain(model, x, "lrp.z", backend="zennit", stabilizer=1e-12)
    torch.testing.assert_close(native.relevance.sum(1), native.output, rtol=1e-9, atol=1e-12)
    assert_ledger_closes(native, 1e-10)
    # each block whose f(h) is not identically zero (all-dead ReLUs) doubles the relevance
    multiplier = torch.ones(x.shape[0], dtype=torch.float64)
    with torch.no_grad():
        h = model.act(model.stem(x))
        for block in model.blocks:
            f = block(h)
            multiplier = multiplier * torch.where(f.abs().sum(1) > 0, 2.0, 1.0)
            h = h + f
    assert bool((multiplier > 1).any())
    torch.testing.assert_close(reference.relevance.sum(1), multiplier * reference.output, rtol=1e-9, atol=1e-12)


def test_difference_none_stabilizer_sign_at_zero_is_plus_one_in_both():
    """(b) A pooled value that is exactly 0 while relevance reaches it (w^2 ignores activations):
    the Norm denominator 0 becomes +eps in both libraries (sign(0) = +1), so the two inputs get
    +x R / eps and -x R / eps, identically."""
    model = nn.Sequential(nn.AvgPool1d(2), nn.Flatten(), nn.Linear(2, 1)).double()
    with torch.no_grad():
        model[2].weight.copy_(torch.tensor([[1.0, 2.0]]))
        model[2].bias.fill_(0.5)
    x = torch.tensor([[[0.25, -0.25, 1.0, 3.0]]], dtype=torch.float64)  # first window averages to 0
    eps = 1e-6
    native = xaibench.explain(model, x, "lrp.wsquare", stabilizer=eps)
    reference = xaibench.explain(model, x, "lrp.wsquare", backend="zennit", stabilizer=eps)
    output = 2.0 * 2.0 + 0.5  # 2 * mean(1, 3) + bias
    r_pool = output * 1.0 / (1.0 + 4.0 + 0.25)  # w^2 share of the first pooled value (bias^2 joins)
    expected_first = 0.25 * 0.5 * r_pool / (0.0 + eps)  # x * (1/2) * R / (0 + eps * (+1))
    torch.testing.assert_close(native.relevance[0, 0, :2],
                               torch.tensor([expected_first, -expected_first], dtype=torch.float64),
                               rtol=1e-5, atol=0)  # 1e-5: w^2's own stabilizer, eps/5.25
    torch.testing.assert_close(native.relevance, reference.relevance, rtol=1e-9, atol=1e-9)
    assert_ledger_closes(native, 1e-10)


def test_difference_none_maxpool_is_winner_take_all_in_both():
    """(c) Overlapping max pooling (kernel 3, stride 1) with tied maxima: both libraries send
    the relevance of each window to the position torch's max_pool reports."""
    model = _seeded(nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.ReLU(), nn.MaxPool2d(3, stride=1),
                                  nn.Flatten(), nn.Linear(2 * 4 * 4, 3)), seed=5)
    x = torch.randn(2, 1, 6, 6, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    x[:, :, :3, :3] = 0.0  # ties among zeros
    for method in ("lrp.epsilon", "lrp.zplus", "lrp.alpha2beta1", "lrp.wsquare"):
        native = xaibench.explain(model, x, method, stabilizer=1e-12)
        reference = xaibench.explain(model, x, method, backend="zennit", stabilizer=1e-12)
        assert relative_difference(native.relevance, reference.relevance) <= AGREEMENT, method


@pytest.mark.parametrize("conv", [False, True])
def test_difference_batchnorm_first_is_pass_in_zennit(conv):
    """(d) A BatchNorm that follows no linear layer: zennit passes relevance through it
    unchanged; natively it is folded into the next layer (dense) or kept as an affine layer
    with its own rule (conv with padding). The results differ; the native one conserves."""
    if conv:
        model = nn.Sequential(nn.BatchNorm2d(2), nn.Conv2d(2, 3, 3, padding=1), nn.ReLU(), nn.Flatten(),
                              nn.Linear(3 * 4 * 4, 2))
        x = torch.rand(2, 2, 4, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    else:
        model = nn.Sequential(nn.BatchNorm1d(4), nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 2))
        x = torch.rand(2, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    model = _seeded(model, seed=11)
    native = xaibench.explain(model, x, "lrp.epsilon", stabilizer=1e-12)
    reference = xaibench.explain(model, x, "lrp.epsilon", backend="zennit", stabilizer=1e-12)
    assert relative_difference(native.relevance, reference.relevance) > 1e-3
    assert_ledger_closes(native, 1e-10)


def test_difference_bilinear_upsample_is_plain_gradient_in_zennit():
    """(e) Bilinear upsampling: the Norm rule natively, the plain gradient in zennit (whose
    weights sum to 1 per output, so it also conserves, but distributes differently)."""
    model = _seeded(nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.ReLU(),
                                  nn.Upsample(scale_factor=2, mode="bilinear"), nn.Conv2d(2, 2, 3),
                                  nn.ReLU(), nn.Flatten(), nn.Linear(2 * 6 * 6, 2)), seed=4)
    x = torch.randn(2, 1, 4, 4, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    native = xaibench.explain(model, x, "lrp.epsilon", stabilizer=1e-12)
    reference = xaibench.explain(model, x, "lrp.epsilon", backend="zennit", stabilizer=1e-12)
    assert relative_difference(native.relevance, reference.relevance) > 1e-3
    assert_ledger_closes(native, 1e-10)


@pytest.mark.parametrize("method", ["lrp.z", "lrp.flat", "lrp.wsquare"])
def test_nearest_upsample_copies_relevance_back_like_the_gradient(method):
    """Nearest upsampling: every output copies one input, so both route the copies' relevance
    back whole (native: the transpose; zennit: the gradient), at any stabilizer and also
    where a ReLU output is 0, which flat and w^2 give relevance (the Norm rule used to drop
    it there: 0.6-0.9 of the relevance on encoder-decoders)."""
    model = _seeded(nn.Sequential(nn.Conv1d(1, 2, 3, padding=1), nn.ReLU(),
                                  nn.Upsample(scale_factor=2), nn.Flatten(), nn.Linear(2 * 16, 2)), seed=9)
    x = torch.randn(2, 1, 8, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    with torch.no_grad():
        assert bool((model[1](model[0](x)) == 0).any())   # dead units reach the upsampling
    results = [xaibench.explain(model, x, method, backend=b, stabilizer=1e-3) for b in ("native", "zennit")]
    assert relative_difference(results[0].relevance, results[1].relevance) <= AGREEMENT
    assert_ledger_closes(results[0], 1e-10)


def test_difference_zennit_merged_batchnorm_keeps_eps():
    """zennit's SequentialMergeBatchNorm sets running_var = 1 but keeps eps, leaving a layer
    that scales by 1/sqrt(1 + eps): with eps = 1e-5 the two backends differ by ~5e-6 per
    BatchNorm; with eps = 0 they agree to rounding."""
    def build():
        return _seeded(nn.Sequential(nn.Linear(4, 6), nn.BatchNorm1d(6), nn.ReLU(), nn.Linear(6, 2)), seed=2)
    x = torch.randn(3, 4, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    differences = {}
    for eps in (0.0, 1e-5):
        model = build()
        model[1].eps = eps
        native = xaibench.explain(model, x, "lrp.epsilon", stabilizer=1e-12)
        reference = xaibench.explain(model, x, "lrp.epsilon", backend="zennit", stabilizer=1e-12)
        differences[eps] = relative_difference(native.relevance, reference.relevance)
    assert differences[0.0] <= AGREEMENT
    assert 1e-7 < differences[1e-5] < 1e-4, differences


def test_zennit_merges_batchnorm_into_transposed_conv():
    """BatchNorm after a transposed convolution: both merge it (zennit indexes the output
    channels of ConvTranspose weights on dim 1, as the native engine does)."""
    model = _seeded(nn.Sequential(nn.ConvTranspose2d(2, 3, 2, stride=2), nn.BatchNorm2d(3), nn.ReLU(),
                                  nn.Flatten(), nn.Linear(3 * 6 * 6, 2)), seed=8)
    model[1].eps = 0.0
    x = torch.randn(2, 2, 3, 3, generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    for method in ("lrp.epsilon", "lrp.zplus"):
        native = xaibench.explain(model, x, method, stabilizer=1e-12)
        reference = xaibench.explain(model, x, method, backend="zennit", stabilizer=1e-12)
        assert relative_difference(native.relevance, reference.relevance) <= AGREEMENT, method


# --- where zennit falls back to the plain gradient (explanation.gradient_fallback) ------------
class _SiluLayerNorm(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(6, 8)
        self.act = nn.SiLU()
        self.norm = nn.LayerNorm(8)
        self.fc2 = nn.Linear(8, 3)

    def forward(self, x):
        return self.fc2(self.norm(self.act(self.fc1(x))))


def _epsilon_rule(a, linear, relevance, epsilon):
    """zennit's Epsilon rule on one Linear: a * W^T (R / (z + eps sign z)), sign(0) = +1."""
    z = linear(a)
    denominator = z + epsilon * torch.where(z >= 0, 1.0, -1.0)
    return a * ((relevance / denominator) @ linear.weight)


def test_zennit_leaves_layernorm_to_the_gradient_and_passes_silu_and_says_so():
    """zennit 0.5.1 maps SiLU (zennit.types.Activation) to Pass and has no rule for LayerNorm:
    the Explanation lists exactly the LayerNorm, and the relevance is what that means: the
    Epsilon rule on both Linear layers, the plain gradient (vector-Jacobian product) through the
    LayerNorm, SiLU passed unchanged."""
    torch.manual_seed(0)
    model = _SiluLayerNorm().double().eval()
    x = torch.randn(3, 6, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    epsilon = 0.1
    explanation = xaibench.explain(model, x, "lrp.epsilon", backend="zennit", epsilon=epsilon)
    assert explanation.gradient_fallback == ["norm (LayerNorm)"]
    with torch.no_grad():
        a1 = model.act(model.fc1(x))
        output = model(x)
    target = output.argmax(1)
    seed = torch.zeros_like(output).scatter_(1, target[:, None], output.gather(1, target[:, None]))
    a2 = a1.clone().requires_grad_(True)
    normed = model.norm(a2)
    relevance_norm_out = _epsilon_rule(normed.detach(), model.fc2, seed, epsilon)
    (relevance_norm_in,) = torch.autograd.grad(normed, a2, relevance_norm_out)   # the plain gradient
    with torch.no_grad():
        expected = _epsilon_rule(x, model.fc1, relevance_norm_in, epsilon)         # SiLU: Pass
    # measured: 6e-8 relative (zennit's hooks route the same float64 numbers differently; not traced
    # further); the alternatives differ at order 1: SiLU by its gradient 1.6, LayerNorm as Pass more
    torch.testing.assert_close(explanation.relevance, expected, rtol=1e-6, atol=1e-7)
    # the gradient methods are the gradient: nothing to report
    assert xaibench.explain(model, x, "gradient", backend="zennit").gradient_fallback == []


def test_zennit_gradient_fallback_lists_functional_steps_and_unmapped_modules_only():
    from xaibench.backends import zennit_backend

    mapped = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.GELU(), nn.Hardswish(), nn.MaxPool2d(2),
                           nn.Dropout(0.1), nn.Upsample(scale_factor=2), nn.Flatten(), nn.Linear(2 * 4 * 4, 2))
    unmapped = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.GroupNorm(1, 2), nn.Upsample(scale_factor=2,
                             mode="bilinear"), nn.Flatten(), nn.Linear(2 * 8 * 8, 2))
    x = torch.randn(2, 1, 4, 4, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    assert xaibench.explain(mapped.double().eval(), x, "lrp.epsilon", backend="zennit").gradient_fallback == []
    assert xaibench.explain(unmapped.double().eval(), x, "lrp.z",
                            backend="zennit").gradient_fallback == ["1 (GroupNorm)", "2 (Upsample)"]
    # functional steps zennit's module hooks cannot see: the residual add and a product
    residual = _seeded(_Residual(2))
    assert zennit_backend.gradient_fallback(residual, zennit.composites.EpsilonPlus()) == ["(model): operator.add"]

    class Gated(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(4, 4)

        def forward(self, x):
            batch, width = x.size()
            return self.fc(x).view(batch, width) * torch.sigmoid(x[:, : width // 2].repeat(1, 2))

    listed = zennit_backend.gradient_fallback(Gated(), zennit.composites.EpsilonPlus())
    assert "(model): operator.mul" in listed and "(model): torch.sigmoid" in listed
    assert not any("floordiv" in entry or "size" in entry for entry in listed), listed   # shape arithmetic


def test_zennit_gradient_fallback_follows_a_model_edited_between_calls():
    model = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2)).double().eval()
    x = torch.randn(2, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    assert xaibench.explain(model, x, "lrp.epsilon", backend="zennit").gradient_fallback == []
    model[1] = nn.LayerNorm(4).double()
    assert xaibench.explain(model, x, "lrp.epsilon", backend="zennit").gradient_fallback == ["1 (LayerNorm)"]


class _BatchNormAfterConcat(nn.Module):
    """DenseNet's shape: a BatchNorm after a concatenation, not after the conv registered before it."""

    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(2, 3, 3, padding=1)
        self.b = nn.Conv2d(2, 4, 3, padding=1)
        self.norm = nn.BatchNorm2d(7)
        self.head = nn.Linear(7 * 4 * 4, 2)

    def forward(self, x):
        h = self.norm(torch.cat([self.a(x), self.b(x)], 1))
        return self.head(torch.relu(h).flatten(1))


def test_zennit_batchnorm_merge_into_the_wrong_layer_is_a_named_error_and_leaves_the_model_intact():
    from xaibench.errors import ExportError

    model = _BatchNormAfterConcat().double().eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.randn(2, 2, 4, 4, dtype=torch.float64)
    with pytest.raises(ExportError, match="SequentialMergeBatchNorm"):
        xaibench.explain(model, x, "lrp.epsilon", backend="zennit")
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert not any(m._forward_hooks or m._forward_pre_hooks or m._backward_hooks for m in model.modules())
    e = xaibench.explain(model, x, "lrp.epsilon")  # the native engine explains it
    assert float(e.relative_conservation_error.max()) < 1e-12


def test_functional_relu_is_a_fallback_only_under_the_rules_that_reach_dead_units():
    """Under flat and w^2 relevance reaches a ReLU's zero outputs: zennit's Pass (an nn.ReLU) passes
    it, the plain gradient of a functional torch.relu drops it (2-3e-2 on the census U-Net)."""
    from xaibench.studies.networks import SkipUNet

    torch.manual_seed(0)
    model = SkipUNet().double().eval()
    x = torch.randn(2, 2, 8, 8, dtype=torch.float64)
    flat = xaibench.explain(model, x, "lrp.flat", backend="zennit", target=36)
    assert any("relu" in entry for entry in flat.gradient_fallback), flat.gradient_fallback
    native = xaibench.explain(model, x, "lrp.flat", target=36)
    assert float((flat.relevance - native.relevance).abs().sum() / native.relevance.abs().sum()) > 1e-3
    epsilon = xaibench.explain(model, x, "lrp.epsilon", backend="zennit", target=36)
    assert not any("relu" in entry for entry in epsilon.gradient_fallback), epsilon.gradient_fallback


def test_densenet_batchnorm_merge_is_refused_before_zennit_touches_the_model():
    """DenseNet's norm1 follows the previous layer's conv2 in the module tree but reads the
    concatenation: zennit's merge fails halfway and used to leave a corrupted model behind
    (the next native explanation failed at a conv with a bias of size 1)."""
    torchvision = pytest.importorskip("torchvision")
    model = torchvision.models.densenet121(weights=None).double().eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    biases = {name: m.bias is None for name, m in model.named_modules() if isinstance(m, nn.Conv2d)}
    x = torch.randn(1, 3, 64, 64, dtype=torch.float64)
    from xaibench.errors import ExportError

    with pytest.raises(ExportError, match="denselayer2.norm1.*does not feed it alone"):
        xaibench.explain(model, x, "lrp.epsilon", backend="zennit")
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert biases == {name: m.bias is None for name, m in model.named_modules() if isinstance(m, nn.Conv2d)}
    xaibench.explain(model, x, "lrp.epsilon")  # the native engine still explains it
    # the gradient needs no merge: zennit still runs it
    xaibench.explain(model, x, "gradient", backend="zennit")
