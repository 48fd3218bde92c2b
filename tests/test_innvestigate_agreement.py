"""The native engine against innvestigate 2.1.2, method by method, in float64.

Agreement is measured as in the zennit tests: max |R_native - R_innvestigate| per sample over
that sample's sum |R_native|. Settings that make a like-for-like comparison:
- stabilizer=STABILIZER: innvestigate's z, alpha-beta, w^2 and flat rules divide by z as is and
  only add 1e-7 where z == 0 exactly (its safe_divide); epsilon uses eps * sign(z) like ours.
- integrated gradients with rule="riemann_left": innvestigate's path points are k/steps,
  k = 0..steps-1 (its MultiplyWithLinspace divides by n, not n - 1), a left Riemann sum.
- 1-D and 2-D networks: TensorFlow has no float64 3-D pooling kernel on CPU (3-D nets are
  compared in float32 below).

Where innvestigate computes something else, the test pins what it computes and why, by an
independent re-implementation of its formula (numpy, float64) or by the control that removes
the cause; a future innvestigate release that fixes it shows up here as a failing test:
- alpha-beta with biases (innvestigate issue 116): both streams divide by the full bias b,
  not b+ (activators) and b- (inhibitors);
- deep Taylor (issue 161): z+ without biases on every layer and the output clipped at 0: a
  target without positive contributions loses all its relevance, a negative output gets none;
- w^2 ignores biases (its bias option is fixed): equal to native bias=False;
- the bounded (z^B) first-layer rule is skipped when the first conv is preceded by zero
  padding (its is_input_layer check does not look through ZeroPadding);
- BatchNorm: every LRP analyzer with a BatchNorm rule linearizes the layer with the variance
  squared and the mean not scaled by gamma (control: running mean 0, variance 1 agrees);
- deep Taylor gives each operand of an addition the whole relevance (a residual skip doubles it).
Residual nets and U-Nets (the Keras twin is then a functional graph with Add and Concatenate)
agree like chains: an Add splits relevance by each operand's share on both sides, a
concatenation splits it back along the axis.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from strategies import conv_networks, dense_networks
from test_keras_export import dag_model
from torch import nn

import xaibench
from xaibench.backends import keras_export
from xaibench.metrics import agreement_per_sample

pytestmark = pytest.mark.tf

AGREEMENT = 1e-8
STABILIZER = 1e-30   # not 1e-12: the Norm rule of upsampling/pooling would differ by eps/|x| on tiny activations
F64 = torch.float64


def _nets(bias=True):
    return st.one_of(
        dense_networks(activations=("relu",), batchnorm=False, bias=bias),
        conv_networks(dims=(1, 2), activations=("relu",), resamples=("maxpool", "avgpool", "nearest"),
                      transposed=False, batchnorm=False, pool_padding=False, bias=bias),
    )


def relative_difference(reference, other, output=None):
    """max |difference| per sample over that sample's sum |reference| (or |output| where that
    is larger: alpha2beta1 can cancel to a relevance sum|R| of 1e-12 on a 1e-4 output, and
    rounding is then measured against the wrong scale)."""
    dims = tuple(range(1, reference.dim()))
    scale = reference.abs().sum(dims)
    if output is not None:
        scale = torch.maximum(scale, output.abs())
    return float(((reference - other).abs().amax(dims) / scale.clamp(min=1e-300)).max())


def compare(model, x, method, **options):
    native = xaibench.explain(model, x, method, **options)
    other = xaibench.explain(model, x, method, backend="innvestigate", **options)
    return native, other, relative_difference(native.relevance, other.relevance, native.output)


# methods whose innvestigate analyzer computes the native formula on networks with biases
AGREEING = [
    ("gradient", {}),
    ("input_x_gradient", {}),
    ("integrated_gradients", {"rule": "riemann_left", "steps": 8}),
    ("lrp.z", {"stabilizer": STABILIZER}),
    ("lrp.z", {"stabilizer": STABILIZER, "bias": False}),
    ("lrp.epsilon", {"stabilizer": STABILIZER}),
    ("lrp.epsilon", {"epsilon": 1e-3, "stabilizer": STABILIZER, "bias": False}),
    ("lrp.flat", {"stabilizer": STABILIZER}),
    ("lrp.wsquare", {"stabilizer": STABILIZER, "bias": False}),
    ("lrp.zplus", {"stabilizer": STABILIZER, "bias": False}),
    ("lrp.alpha1beta0", {"stabilizer": STABILIZER, "bias": False}),
    ("lrp.alpha2beta1", {"stabilizer": STABILIZER, "bias": False}),
    ("lrp.alpha_beta", {"alpha": 3.0, "beta": 2.0, "stabilizer": STABILIZER, "bias": False}),
]

# methods that agree once the network has no biases
AGREEING_WITHOUT_BIASES = [
    ("lrp.alpha1beta0", {"stabilizer": STABILIZER}),
    ("lrp.alpha2beta1", {"stabilizer": STABILIZER}),
    ("lrp.zplus", {"stabilizer": STABILIZER}),
    ("lrp.wsquare", {"stabilizer": STABILIZER}),
    ("lrp.preset_a", {"stabilizer": STABILIZER}),
    ("lrp.preset_b", {"stabilizer": STABILIZER}),
]


def _skip_known_layer_differences(method, model, x):
    """flat and w^2 see every input position, so innvestigate puts relevance on explicit zero
    padding (pinned below)."""
    if method in ("lrp.flat", "lrp.wsquare"):
        kinds = {layer["kind"] for layer in keras_export.export(model, x).layers}
        assume("zero_pad" not in kinds)


@pytest.mark.parametrize("method, options", AGREEING, ids=[f"{m}-{o}" for m, o in AGREEING])
@settings(max_examples=5)
@given(case=_nets())
def test_innvestigate_agrees_with_the_native_engine(innvestigate_worker, method, options, case):
    model, x = case.model.double().eval(), case.x.double()
    _skip_known_layer_differences(method, model, x)
    _, _, difference = compare(model, x, method, **options)
    assert difference <= AGREEMENT, f"{method} {options}: {difference:.3e} on {case}"


@pytest.mark.parametrize("method, options", AGREEING_WITHOUT_BIASES,
                         ids=[f"{m}-{o}" for m, o in AGREEING_WITHOUT_BIASES])
@settings(max_examples=5)
@given(case=_nets(bias=False))
def test_innvestigate_agrees_on_networks_without_biases(innvestigate_worker, method, options, case):
    model, x = case.model.double().eval(), case.x.double()
    _skip_known_layer_differences(method, model, x)
    _, _, difference = compare(model, x, method, **options)
    assert difference <= AGREEMENT, f"{method} {options}: {difference:.3e} on {case}"


@pytest.mark.parametrize("method", ["lrp.epsilon", "lrp.alpha1beta0", "gradient"])
def test_3d_networks_agree_in_float32(innvestigate_worker, method):
    from xaibench.studies.models.convection import ConvectionCNN

    torch.manual_seed(3)
    model = ConvectionCNN(height=16, width=16).eval()
    x = torch.rand(model.input_shape(2))
    options = {"bias": False} if method == "lrp.alpha1beta0" else {}
    _, _, difference = compare(model, x, method, **options)
    assert difference <= 1e-5, difference   # float32 rounding through 3-D convolutions; measured ~1e-7


# --- what innvestigate computes instead, pinned --------------------------------------------------
def _dense_stack(model):
    """(weight, bias) per Linear of a Linear/ReLU stack, float64 numpy."""
    return [(m.weight.detach().double().numpy(), m.bias.detach().double().numpy())
            for m in model if isinstance(m, nn.Linear)]


def _innvestigate_alpha_beta(model, x, target, alpha, beta):
    """innvestigate's AlphaBetaRule (bias=True) re-implemented: both the activating and the
    inhibiting stream's denominator include the FULL bias b (its positive and negative
    weight copies keep b+ and b- respectively, and each stream adds one of each)."""
    layers = _dense_stack(model)
    activations = [x]
    for i, (w, b) in enumerate(layers):
        z = activations[-1] @ w.T + b
        activations.append(np.maximum(z, 0) if i < len(layers) - 1 else z)
    relevance = np.zeros_like(activations[-1])
    relevance[np.arange(len(x)), target] = activations[-1][np.arange(len(x)), target]
    for (w, b), a in zip(reversed(layers), reversed(activations[:-1])):
        pos, neg = np.maximum(w, 0), np.minimum(w, 0)
        ap, an = np.maximum(a, 0), np.minimum(a, 0)
        activating = _alpha_beta_stream(ap, an, pos, neg, b, relevance)
        inhibiting = _alpha_beta_stream(ap, an, neg, pos, b, relevance) if beta else 0
        relevance = alpha * activating - beta * inhibiting
    return relevance


def _alpha_beta_stream(ap, an, w1, w2, b, relevance):
    """One innvestigate stream: x+ w1 + x- w2 + (full) b in the denominator."""
    z = ap @ w1.T + an @ w2.T + b
    s = relevance / np.where(z == 0, 1e-7, z)
    return ap * (s @ w1) + an * (s @ w2)


def _fixed_dense(seed=4, bias_scale=1.0):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(5, 6), nn.ReLU(), nn.Linear(6, 4), nn.ReLU(), nn.Linear(4, 3)).double()
    with torch.no_grad():
        for m in model:
            if isinstance(m, nn.Linear):
                m.bias.normal_(0, bias_scale)
    return model.eval(), torch.randn(6, 5, dtype=F64)


@pytest.mark.parametrize("method, alpha, beta", [("lrp.alpha1beta0", 1, 0), ("lrp.alpha2beta1", 2, 1)])
def test_alpha_beta_with_biases_divides_both_streams_by_the_full_bias(innvestigate_worker, method, alpha, beta):
    """innvestigate issue 116, pinned by its cause."""
    model, x = _fixed_dense()
    native, other, difference = compare(model, x, method, stabilizer=STABILIZER)
    target = native.target.numpy()
    expected = _innvestigate_alpha_beta(model, x.numpy(), target, alpha, beta)
    np.testing.assert_allclose(other.relevance.numpy(), expected, rtol=1e-9, atol=1e-12)
    assert difference > 1e-3, difference          # and it is far from the alpha-beta rule
    print(f"{method} with biases: innvestigate vs native max relative difference {difference:.3f}")


def test_deep_taylor_is_z_plus_without_biases_on_the_clipped_output(innvestigate_worker):
    """innvestigate issue 161. Its DeepTaylor maps every Keras kernel layer that has an
    `activation` attribute (Dense and Conv always do, even when linear) to z+ ignoring biases,
    and appends a ReLU to the output: so it equals native lrp.zplus(bias=False) where the
    explained output is positive and is zero where it is not. Relevance then sums to the
    output only where every layer has a positive contribution; a target with none loses all."""
    model, x = _fixed_dense(seed=7)
    other = xaibench.explain(model, x, "deep_taylor", backend="innvestigate")
    zplus = xaibench.explain(model, x, "lrp.zplus", bias=False, stabilizer=STABILIZER)
    expected = zplus.relevance * (zplus.output > 0).unsqueeze(1)
    assert relative_difference(expected, other.relevance) <= AGREEMENT
    residual = (other.relevance.sum(1) - other.output).abs() / other.output.abs()
    print(f"deep_taylor conservation residual per sample: {residual.numpy().round(3)}")
    assert float(residual.max()) == pytest.approx(1.0)     # a sample whose relevance is all lost
    negative = xaibench.explain(model, x, "deep_taylor", backend="innvestigate", target=2)
    clipped = negative.output <= 0
    assert bool(clipped.any()) and float(negative.relevance[clipped].abs().max()) == 0.0


def test_wsquare_ignores_biases_whatever_the_option(innvestigate_worker):
    model, x = _fixed_dense(seed=5, bias_scale=2.0)
    other = xaibench.explain(model, x, "lrp.wsquare", backend="innvestigate", stabilizer=STABILIZER)
    without = xaibench.explain(model, x, "lrp.wsquare", stabilizer=STABILIZER, bias=False)
    with_bias = xaibench.explain(model, x, "lrp.wsquare", stabilizer=STABILIZER, bias=True)
    assert relative_difference(without.relevance, other.relevance) <= AGREEMENT
    assert relative_difference(with_bias.relevance, other.relevance) > 1e-3


def test_bounded_first_layer_rule_is_skipped_after_zero_padding(innvestigate_worker):
    """A strided padded first conv is exported as ZeroPadding + conv; innvestigate's
    is_input_layer does not look through ZeroPadding, so the first conv gets z+."""
    torch.manual_seed(2)
    model = nn.Sequential(nn.Conv2d(1, 3, 3, stride=2, padding=1, bias=False), nn.ReLU(), nn.Flatten(),
                          nn.Linear(3 * 4 * 4, 2, bias=False)).double().eval()
    x = torch.rand(3, 1, 8, 8, dtype=F64) * 4 - 2     # inside the bounds [-3, 3]
    other = xaibench.explain(model, x, "lrp.zbox", backend="innvestigate", low=-3.0, high=3.0, stabilizer=STABILIZER)
    zbox = xaibench.explain(model, x, "lrp.zbox", low=-3.0, high=3.0, stabilizer=STABILIZER)
    zplus = xaibench.explain(model, x, "lrp.zplus", stabilizer=STABILIZER)
    assert relative_difference(zplus.relevance, other.relevance) <= AGREEMENT
    assert relative_difference(zbox.relevance, other.relevance) > 1e-2
    # control: without padding the conv is the input layer and z^B is applied
    unpadded = nn.Sequential(nn.Conv2d(1, 3, 3, bias=False), nn.ReLU(), nn.Flatten(),
                             nn.Linear(3 * 6 * 6, 2, bias=False)).double().eval()
    _, _, difference = compare(unpadded, x, "lrp.zbox", low=-3.0, high=3.0, stabilizer=STABILIZER)
    assert difference <= AGREEMENT


@pytest.mark.parametrize("method", ["lrp.flat", "lrp.wsquare"])
def test_flat_and_wsquare_put_relevance_on_explicit_zero_padding(innvestigate_worker, method):
    """A conv whose padding Keras cannot express as 'same' is exported as ZeroPadding + a
    'valid' conv. innvestigate's flat/w^2 rule then counts the padded positions as inputs
    and the padding's reverse (cropping) drops their share; the native rule, like a 'same'
    conv, never gives relevance to padding. Control: 'same' padding agrees."""
    torch.manual_seed(8)
    x = torch.randn(3, 1, 8, 8, dtype=F64)
    padded = nn.Sequential(nn.Conv2d(1, 2, 2, padding=1, bias=False), nn.ReLU(), nn.Flatten(),
                           nn.Linear(2 * 9 * 9, 2, bias=False)).double().eval()
    native, other, difference = compare(padded, x, method, stabilizer=STABILIZER)
    lost = (native.relevance.sum((1, 2, 3)) - other.relevance.sum((1, 2, 3))) / native.output
    print(f"{method}, explicit padding: difference {difference:.3f}, share lost on the padding {lost.numpy().round(3)}")
    assert difference > 1e-3 and bool((lost > 1e-3).all())
    same = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1, bias=False), nn.ReLU(), nn.Flatten(),
                         nn.Linear(2 * 8 * 8, 2, bias=False)).double().eval()
    assert compare(same, x, method, stabilizer=STABILIZER)[2] <= AGREEMENT


@pytest.mark.parametrize("method", ["lrp.flat", "lrp.wsquare"])
def test_upsampling_copies_relevance_back_like_innvestigate(innvestigate_worker, method):
    """Nearest upsampling has one source per output: native routes the copies' relevance back
    whole (the transpose), innvestigate by the gradient: the same, also on dead ReLUs."""
    torch.manual_seed(9)
    model = nn.Sequential(nn.Conv1d(1, 2, 1, bias=False), nn.ReLU(), nn.Upsample(scale_factor=2),
                          nn.Flatten(), nn.Linear(2 * 12, 1, bias=False)).double().eval()
    x = torch.randn(2, 1, 6, dtype=F64)
    assert compare(model, x, method, stabilizer=STABILIZER)[2] <= AGREEMENT


def _batchnorm_net(seed, unit_statistics):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(4, 5, bias=False), nn.BatchNorm1d(5), nn.ReLU(),
                          nn.Linear(5, 2, bias=False)).double()
    with torch.no_grad():
        bn = model[1]
        if unit_statistics:          # running mean 0, variance 1: the two slips below cancel
            bn.running_mean.zero_()
            bn.running_var.fill_(1.0)
        else:
            bn.running_mean.normal_(0, 0.5)
            bn.running_var.uniform_(0.3, 3.0)
        bn.weight.uniform_(0.5, 1.5)
        bn.bias.normal_(0, 1.0)
        bn.eps = 1e-3
    return model.eval(), torch.randn(6, 4, dtype=F64)


def _innvestigate_batchnorm_epsilon(model, x, target, epsilon):
    """innvestigate's epsilon rule through Linear -> BatchNorm -> ReLU -> Linear, re-implemented.
    Its fused BatchNorm mapping (backend/graph.py, apply_mapping_to_fused_bn_layer) linearizes
    the layer as k = gamma / sqrt(var**2 + eps), b = beta - mean / sqrt(var**2 + eps): the
    variance is squared and the mean lacks gamma. The rule then divides by h k + b, which is
    not the layer's output."""
    def stabilize(z):
        return z + np.where(z >= 0, epsilon, -epsilon)

    w1 = model[0].weight.detach().numpy()
    w2 = model[3].weight.detach().numpy()
    bn = model[1]
    gamma, beta = bn.weight.detach().numpy(), bn.bias.detach().numpy()
    mean, var = bn.running_mean.numpy(), bn.running_var.numpy()
    h = x @ w1.T
    a = np.maximum(model[1](torch.from_numpy(h)).detach().numpy(), 0)
    out = a @ w2.T
    rows = np.arange(len(x))
    relevance = np.zeros_like(out)
    relevance[rows, target] = out[rows, target]
    relevance = a * ((relevance / stabilize(out)) @ w2)              # Linear 2
    k = gamma / np.sqrt(var**2 + bn.eps)
    b = beta - mean / np.sqrt(var**2 + bn.eps)
    relevance = h * k * relevance / stabilize(h * k + b)             # the surrogate BatchNorm
    return x * ((relevance / stabilize(h)) @ w1)                      # Linear 1


@pytest.mark.parametrize("unit_statistics", [True, False])
def test_batchnorm_is_linearized_with_a_squared_variance(innvestigate_worker, unit_statistics):
    model, x = _batchnorm_net(6, unit_statistics)
    native, other, difference = compare(model, x, "lrp.epsilon", epsilon=1e-6)
    expected = _innvestigate_batchnorm_epsilon(model, x.numpy(), native.target.numpy(), 1e-6)
    np.testing.assert_allclose(other.relevance.numpy(), expected, rtol=1e-8, atol=1e-12)
    print(f"BatchNorm (unit statistics: {unit_statistics}): innvestigate vs native {difference:.2e}")
    if unit_statistics:
        assert difference <= 1e-4    # the control: with mean 0 and variance 1 the slips vanish (epsilon
        # still sits in one more denominator than after native merging: measured 1e-5)
    else:
        assert difference > 1e-2


# --- the two-input toy: who gets the relevance when the bias is large --------------------------------
def _toy():
    """y = relu(1.0 x1 - 0.5 x2 + 10); output = y. At x = (1, 2): pre-activation 10."""
    model = nn.Sequential(nn.Linear(2, 1), nn.ReLU(), nn.Linear(1, 1, bias=False)).double()
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor([[1.0, -0.5]]))
        model[0].bias.fill_(10.0)
        model[2].weight.fill_(1.0)
    return model.eval(), torch.tensor([[1.0, 2.0]], dtype=F64)


# hand-derived relevance of (x1, x2), output 10 (what the bias absorbs is 10 - R1 - R2):
#   z / epsilon: R_i = x_i w_i / z * 10 -> (1, -1); the bias keeps 10
#   alpha1beta0: positive stream z+ = x1 w1 + b = 11 -> (10/11, 0); the bias keeps 100/11
#   alpha2beta1: the output layer (one positive input) already doubles R to 20, then
#     native, zennit: 2 * 20 (1/11, 0) - 20 (0, x2 w2 / x2 w2) = (40/11, -20)
#     innvestigate: the inhibitor stream divides by x2 w2 + b = 9 (the full bias), so
#                   2 * 20 (1/11, 0) - 20 (0, -1/9) = (40/11, 20/9): the sign of x2 flips
TOY = {}
for _backend in ("native", "zennit", "innvestigate"):
    TOY[(_backend, "lrp.z")] = (1.0, -1.0)
    TOY[(_backend, "lrp.alpha1beta0")] = (10 / 11, 0.0)
    TOY[(_backend, "lrp.alpha2beta1")] = (40 / 11, 20 / 9 if _backend == "innvestigate" else -20.0)


@pytest.mark.parametrize("backend, method", sorted(TOY))
def test_two_input_toy_with_a_large_positive_bias(innvestigate_worker, backend, method):
    import zennit  # noqa: F401  pinned in the main environment: missing is a failure, not a skip
    model, x = _toy()
    e = xaibench.explain(model, x, method, backend=backend, stabilizer=STABILIZER)
    expected = torch.tensor([TOY[(backend, method)]], dtype=F64)
    torch.testing.assert_close(e.relevance, expected, rtol=1e-9, atol=1e-9)
    absorbed = float(e.output[0] - e.relevance.sum())
    print(f"{backend:12s} {method:16s} inputs {e.relevance[0].numpy().round(4)} bias/other absorbs {absorbed:.4f}")


# --- residual nets and U-Nets (Keras functional twins: Add, Concatenate) -----------------------------
# innvestigate's LRP analyzers map Add to AddReverseLayer: R_k = x_k R / (sum x) with its safe_divide
# (1e-7 only where the sum is exactly 0), the native SumStep's Norm rule; Concatenate gets the
# gradient mapping, which splits R back along the axis like the native ConcatStep. So every method
# that agrees on chains agrees on these graphs. deep_taylor instead maps Add to the plain gradient
# ("Ignore scaling with 0.5" in its source): each operand gets the whole R (pinned below).
DAG_AGREEING = [
    ("gradient", {}),
    ("integrated_gradients", {"rule": "riemann_left", "steps": 8}),
    ("lrp.z", {"stabilizer": STABILIZER}),
    ("lrp.epsilon", {"epsilon": 1e-3, "stabilizer": STABILIZER, "bias": False}),
    ("lrp.flat", {"stabilizer": STABILIZER}),
    ("lrp.wsquare", {"stabilizer": STABILIZER, "bias": False}),
    ("lrp.alpha2beta1", {"stabilizer": STABILIZER, "bias": False}),
]


@pytest.mark.parametrize("method, options", DAG_AGREEING, ids=[f"{m}-{o}" for m, o in DAG_AGREEING])
@pytest.mark.parametrize("name", ["resnet", "unet"])
def test_innvestigate_agrees_on_a_residual_net_and_a_unet(innvestigate_worker, name, method, options):
    model, x = dag_model(name)
    native = xaibench.explain(model, x, method, **options)
    other = xaibench.explain(model, x, method, backend="innvestigate", **options)
    difference = float(agreement_per_sample(other.relevance, native.relevance).max())
    print(f"{name} {method} {options}: innvestigate vs native {difference:.1e}")
    assert difference <= AGREEMENT, difference


def test_the_presets_agree_on_bias_free_residual_nets_and_unets(innvestigate_worker):
    for name in ("resnet", "unet"):
        model, x = dag_model(name, bias=False)
        for method in ("lrp.preset_a", "lrp.preset_b"):
            native = xaibench.explain(model, x, method, stabilizer=STABILIZER)
            other = xaibench.explain(model, x, method, backend="innvestigate", stabilizer=STABILIZER)
            assert float(agreement_per_sample(other.relevance, native.relevance).max()) <= AGREEMENT, (name, method)


class _AddToy(nn.Module):
    """y = relu(a . x) + b . x with a = (1, 1), b = (1, -1); at x = (1, 2): y = 3 + (-1) = 2."""

    def __init__(self):
        super().__init__()
        self.a = nn.Linear(2, 1, bias=False)
        self.b = nn.Linear(2, 1, bias=False)
        with torch.no_grad():
            self.a.weight.copy_(torch.tensor([[1.0, 1.0]]))
            self.b.weight.copy_(torch.tensor([[1.0, -1.0]]))

    def forward(self, x):
        return torch.relu(self.a(x)) + self.b(x)


# hand-derived relevance of (x1, x2) for the output 2:
#   lrp.z, both backends: the Add gives each operand its share z_k / sum z: 3/2 * 2 = 3 and -1/2 * 2 = -1;
#     branch a: (1, 2) / 3 * 3 = (1, 2); branch b: (1, -2) / -1 * -1 = (1, -2); total (2, 0), sum 2
#   deep_taylor (innvestigate): the Add passes the whole R = 2 to each operand, then z+ without biases:
#     branch a: (1, 2) / 3 * 2 = (2/3, 4/3); branch b: only x1 b1 = 1 > 0: (2, 0); total (8/3, 4/3), sum 4
ADD_TOY = {("native", "lrp.z"): (2.0, 0.0), ("innvestigate", "lrp.z"): (2.0, 0.0),
           ("innvestigate", "deep_taylor"): (8 / 3, 4 / 3)}


@pytest.mark.parametrize("backend, method", sorted(ADD_TOY))
def test_an_addition_splits_relevance_by_each_operands_share(innvestigate_worker, backend, method):
    """innvestigate issue 192 (how LRP passes a skip connection): its LRP analyzers give each
    operand of an Add its share z_k / sum z, as the native engine does, so relevance is
    conserved through the skip; deep_taylor gives each operand all of it, and the input
    relevance of one skip sums to twice the output."""
    model = _AddToy().double().eval()
    x = torch.tensor([[1.0, 2.0]], dtype=F64)
    options = {"stabilizer": STABILIZER} if method != "deep_taylor" else {}
    e = xaibench.explain(model, x, method, backend=backend, **options)
    torch.testing.assert_close(e.relevance, torch.tensor([ADD_TOY[(backend, method)]], dtype=F64),
                               rtol=1e-12, atol=1e-12)
    print(f"{backend} {method}: relevance {e.relevance[0].numpy().round(4)}, sum over output "
          f"{float(e.relevance.sum() / e.output[0]):.3f}")


def test_innvestigate_on_residual_nets_and_unets_is_reproducible_and_conservative(innvestigate_worker):
    """innvestigate issue 118 (U-Net maps that differ between runs and do not sum to the output),
    measured on bias-free nets (biases absorb relevance on both backends alike): two runs, the
    second in a fresh worker with a new analyzer graph, are bit-identical; lrp.z conserves the
    output on both backends through Add and Concatenate; deep_taylor conserves it through the
    U-Net's concatenations but multiplies it at the residual net's two additions."""
    first, residual = {}, {}
    for name in ("resnet", "unet"):
        model, x = dag_model(name, bias=False)
        for method in ("lrp.z", "deep_taylor"):
            options = {"stabilizer": STABILIZER} if method == "lrp.z" else {}
            e = xaibench.explain(model, x, method, backend="innvestigate", **options)
            first[name, method] = e.relevance
            residual[name, method] = (e.relevance.sum((1, 2, 3)) - e.output).abs() / e.output.abs()
        native = xaibench.explain(model, x, "lrp.z", stabilizer=STABILIZER)
        residual[name, "native lrp.z"] = (native.relevance.sum((1, 2, 3)) - native.output).abs() / native.output.abs()
    innvestigate_worker.shutdown()   # the second run: a new worker process, model and analyzers
    for (name, method), relevance in first.items():
        model, x = dag_model(name, bias=False)
        options = {"stabilizer": STABILIZER} if method == "lrp.z" else {}
        again = xaibench.explain(model, x, method, backend="innvestigate", **options)
        assert torch.equal(again.relevance, relevance), (name, method)
    print({key: [f"{v:.1e}" for v in value.tolist()] for key, value in residual.items()})
    for name in ("resnet", "unet"):
        assert float(residual[name, "lrp.z"].max()) <= 1e-12
        assert float(residual[name, "native lrp.z"].max()) <= 1e-12
    assert float(residual["unet", "deep_taylor"].max()) <= 1e-12
    assert float(residual["resnet", "deep_taylor"].min()) > 1.0   # sum R > 2 x output (measured 3.8 x)
