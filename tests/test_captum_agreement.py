"""The native engine against captum 0.9.0, method by method, in float64.

Agreement is xaibench.metrics.agreement_per_sample (max |R_captum - R_native| per sample over
that sample's sum |R_native|). Where the same rule applies it is below AGREEMENT = 1e-6
(measured: 1e-16 - 1e-11 for the LRP rules and the gradients, ~1e-8 where captum rounds
through float32: the integrated-gradients path points, occlusion's window counts). Settings
that make a like-for-like comparison: stabilizer=1e-12 (captum's EpsilonRule adds
eps * sign(z) with sign(0) = +1, as native), non-negative inputs and bias=False for the rules
that change the weights (below), integrated gradients with rule riemann_left or riemann_midpoint.

Where captum computes something else, the test pins what it computes, by a re-implementation or
by the control that removes the cause (xaibench/backends/table.py, DIFFERENCES); a captum release
that fixes one shows up here as a failing test:
- the exact-type layer whitelist (docs/papers.md section 7): still in 0.9.0 for Conv1d, Conv3d,
  ConvTranspose2d, Upsample, LeakyReLU, Flatten and any subclass of Conv2d; the backend refuses
  such a model with UnsupportedLayerError (a "skipped" row in a sweep) naming the layer;
- Alpha1_Beta0_Rule / GammaRule assume non-negative inputs: they replace w by w+ (w + gamma w+),
  so a negative input x_i contributes x_i w_ij^+ (not z_ij^+); refused by the backend;
- the weights are overwritten in place during attribution (and `activations` attributes are
  left on the modules after it): the backend runs on a deep copy, and the user's model stays
  bit-identical;
- with biases, both rules keep the full bias b in z_j (native: b+);
- GammaRule boosts w+ also where z_j < 0 (native: the negative contributions); refused;
- BatchNorm2d is a layer of its own with an EpsilonRule (native merges it);
- riemann_trapezoid weighs the points k/(n-1) by 1/n: (n-1)/n times the trapezoid rule;
- Occlusion returns float32 for a float64 input (its window counts are divided after .float()).
"""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import xaibench
from xaibench.backends import table
from xaibench.errors import UnsupportedLayerError
from xaibench.metrics import agreement_per_sample
from xaibench.studies import sweep

captum = pytest.importorskip("captum")
from captum.attr import LRP, IntegratedGradients, Occlusion  # noqa: E402
from captum.attr._utils.lrp_rules import Alpha1_Beta0_Rule  # noqa: E402

AGREEMENT = 1e-6
STABILIZER = 1e-12
F64 = torch.float64


def _seeded(model, seed):
    torch.manual_seed(seed)
    for module in model.modules():
        for parameter in module.parameters(recurse=False):
            nn.init.normal_(parameter, 0.0, 0.5)
    return model.double().eval()


def dense_net(seed=0, bias=True, last=None):
    layers = [nn.Linear(6, 8, bias=bias), nn.ReLU(), nn.Dropout(0.2), nn.Linear(8, 5, bias=bias), nn.Tanh(),
              nn.Linear(5, 3, bias=bias)]
    return _seeded(nn.Sequential(*layers, *([last] if last is not None else [])), seed)


def conv_net(seed=1, bias=True):
    return _seeded(nn.Sequential(nn.Conv2d(2, 3, 3, padding=1, bias=bias), nn.ReLU(), nn.MaxPool2d(2),
                                 nn.Conv2d(3, 4, 3, bias=bias), nn.ReLU(), nn.AvgPool2d(2), nn.Flatten(),
                                 nn.Linear(4, 3, bias=bias)), seed)


def relu_dense_net(seed=2, bias=True):
    return _seeded(nn.Sequential(nn.Linear(6, 8, bias=bias), nn.ReLU(), nn.Linear(8, 5, bias=bias), nn.ReLU(),
                                 nn.Linear(5, 3, bias=bias)), seed)


def inputs(shape, seed=3, nonnegative=False):
    x = torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=F64)
    return x.abs() if nonnegative else x


def compare(model, x, method, target=None, **options):
    native = xaibench.explain(model, x, method, target=target, **options)
    other = xaibench.explain(model, x, method, target=target, backend="captum", **options)
    assert other.relevance.shape == native.relevance.shape and other.relevance.dtype == F64
    torch.testing.assert_close(other.output, native.output, rtol=1e-12, atol=1e-12)
    difference = agreement_per_sample(other.relevance, native.relevance, sample_dims=native.output.dim())
    return native, other, difference


def positive_targets(model, x):
    """Per sample, an output index whose logit is positive (captum's gamma is refused elsewhere)."""
    with torch.no_grad():
        output = model(x)
    assert bool((output.max(1).values > 0).all())
    return output.argmax(1)


# --- agreement: the same rule in both ------------------------------------------------------------
GRADIENTS = [
    ("gradient", {}),
    ("input_x_gradient", {}),
    ("integrated_gradients", {"steps": 10, "rule": "riemann_left"}),
    ("integrated_gradients", {"steps": 10, "rule": "riemann_midpoint", "baseline": 0.5}),
]
LRP_SIGNED = [  # rules that do not change the weights: any input sign, with or without biases
    ("lrp.z", {"stabilizer": STABILIZER}),
    ("lrp.epsilon", {"epsilon": 0.01, "stabilizer": STABILIZER}),
    ("lrp.epsilon", {"epsilon": 0.1, "stabilizer": STABILIZER, "bias": False}),
]
LRP_NONNEGATIVE = [  # rules that change the weights: non-negative inputs, biases left out
    ("lrp.alpha1beta0", {"stabilizer": STABILIZER, "bias": False}),
    ("lrp.zplus", {"stabilizer": STABILIZER, "bias": False}),
    ("lrp.gamma", {"gamma": 0.25, "stabilizer": STABILIZER, "bias": False}),
]
NETS = {"dense": (dense_net, (5, 6)), "conv": (conv_net, (4, 2, 8, 8))}


@pytest.mark.parametrize("net", NETS)
@pytest.mark.parametrize("method, options", GRADIENTS + LRP_SIGNED, ids=lambda v: str(v))
def test_captum_agrees_with_the_native_engine(net, method, options):
    build, shape = NETS[net]
    model, x = build(), inputs(shape)
    _, _, difference = compare(model, x, method, **options)
    assert float(difference.max()) < AGREEMENT, f"{method} {options} on {net}: {float(difference.max()):.3e}"


@pytest.mark.parametrize("net", ["relu_dense", "conv"])
@pytest.mark.parametrize("method, options", LRP_NONNEGATIVE, ids=lambda v: str(v))
def test_captum_weight_rules_agree_on_non_negative_inputs_without_biases(net, method, options):
    model = relu_dense_net() if net == "relu_dense" else conv_net()
    x = inputs((5, 6) if net == "relu_dense" else (4, 2, 8, 8), nonnegative=True)
    target = positive_targets(model, x)
    _, _, difference = compare(model, x, method, target=target, **options)
    assert float(difference.max()) < AGREEMENT, f"{method} on {net}: {float(difference.max()):.3e}"


def test_several_targets_and_a_mask_target_agree():
    model, x = dense_net(), inputs((3, 6))
    targets = torch.tensor([[0, 2], [1, 0], [2, 1]])
    native, other, difference = compare(model, x, "lrp.epsilon", target=targets, stabilizer=STABILIZER)
    assert other.relevance.shape == (3, 2, 6) and float(difference.max()) < AGREEMENT
    mask = torch.tensor([True, False, True])
    _, _, difference = compare(model, x, "gradient", target=mask)
    assert float(difference.max()) < AGREEMENT


def test_final_softmax_is_stripped_as_native():
    model, x = dense_net(last=nn.Softmax(dim=1)), inputs((4, 6))
    native, other, difference = compare(model, x, "lrp.epsilon", stabilizer=STABILIZER)
    assert other.stripped == native.stripped == ["6"] and float(difference.max()) < AGREEMENT
    with torch.no_grad():  # the explained output is the logit, not the probability
        torch.testing.assert_close(other.output, model[:-1](x).max(1).values)


def test_occlusion_agrees_in_native_convention_and_pins_captums_float32():
    model, x = conv_net(), inputs((3, 2, 8, 8))
    _, other, difference = compare(model, x, "occlusion", patch=2, stride=2)
    assert float(difference.max()) < AGREEMENT
    # captum itself: the whole drop on every element of the window, returned in float32
    wrapped = nn.Sequential(model)
    raw = Occlusion(wrapped).attribute(x, sliding_window_shapes=(2, 2, 2), strides=(2, 2, 2), target=0)
    assert raw.dtype == torch.float32
    native = xaibench.explain(model, x, "occlusion", target=0, patch=2, stride=2)
    assert float(agreement_per_sample(raw.double() / 8, native.relevance).max()) < AGREEMENT
    with pytest.raises(ValueError, match="hangs over the edge"):
        xaibench.explain(model, x, "occlusion", backend="captum", patch=3, stride=2)


def test_smoothgrad_of_a_linear_model_is_its_gradient_and_is_reproducible():
    """The noise cannot be compared (documented difference); on a linear model every noisy
    gradient is the weight row, so both must give it exactly."""
    model = _seeded(nn.Sequential(nn.Linear(6, 3)), 4)
    x = inputs((3, 6))
    _, other, difference = compare(model, x, "smoothgrad", samples=8)
    assert float(difference.max()) < 1e-12
    relu = dense_net()
    state = torch.random.get_rng_state()
    again = xaibench.explain(relu, x, "smoothgrad", backend="captum", samples=8)
    assert torch.equal(torch.random.get_rng_state(), state)  # the global RNG is left alone
    assert torch.equal(again.relevance, xaibench.explain(relu, x, "smoothgrad", backend="captum",
                                                         samples=8).relevance)


def test_methods_lists_what_captum_has_and_refuses_the_rest():
    assert xaibench.methods("captum") == table.available("captum")
    assert {"lrp.epsilon", "lrp.gamma", "lrp.alpha1beta0", "gradient", "smoothgrad", "occlusion"} <= set(
        xaibench.methods("captum"))
    with pytest.raises(xaibench.UnknownMethodError, match="it has: gradient"):
        xaibench.explain(dense_net(), inputs((2, 6)), "lrp.alpha2beta1", backend="captum")
    with pytest.raises(ValueError, match="no option"):
        xaibench.explain(dense_net(), inputs((2, 6)), "smoothgrad", backend="captum", noise_level=0.2)
    assert "captum" in sweep.backends()


# --- the user's model is never modified ----------------------------------------------------------
def _state(model):
    return ({k: v.clone() for k, v in model.state_dict().items()},
            [(name, type(m), m.training, dict(m._forward_hooks), dict(m._backward_hooks), sorted(vars(m)))
             for name, m in model.named_modules()],
            [p.requires_grad for p in model.parameters()])


@pytest.mark.parametrize("method", ["lrp.gamma", "lrp.alpha1beta0", "lrp.epsilon", "integrated_gradients"])
def test_the_users_model_is_bit_identical_after_captum(method):
    model = relu_dense_net()
    model[2].weight.requires_grad_(False)
    handle = model[0].register_forward_hook(lambda m, i, o: None)
    before = _state(model)
    x = inputs((4, 6), nonnegative=True)
    xaibench.explain(model, x, method, target=positive_targets(model, x), backend="captum", bias=False) \
        if method.startswith("lrp.") else xaibench.explain(model, x, method, backend="captum", steps=4)
    after = _state(model)
    assert before[0].keys() == after[0].keys() and all(torch.equal(before[0][k], after[0][k]) for k in before[0])
    assert before[1] == after[1] and before[2] == after[2]
    handle.remove()


def test_pinned_captum_overwrites_weights_during_attribution_and_leaves_attributes():
    """Why the backend works on a copy: captum's own LRP on the user's model."""
    model = relu_dense_net(bias=False)
    original = model[0].weight.detach().clone()
    seen = []
    model[0].register_forward_hook(lambda m, i, o: seen.append(float(m.weight.detach().min())))
    model[0].rule = Alpha1_Beta0_Rule()
    LRP(model).attribute(inputs((2, 6), nonnegative=True).requires_grad_(True), target=0)
    assert float(original.min()) < 0 and seen[0] < 0 and seen[-1] >= 0   # w+ in the second pass
    assert torch.equal(model[0].weight, original)                        # restored by load_state_dict
    assert hasattr(model[0], "activations")                              # left behind


# --- documented differences, pinned ----------------------------------------------------------------
@pytest.mark.parametrize("module", [nn.Conv1d(1, 2, 3), nn.Conv3d(1, 2, 3), nn.ConvTranspose2d(1, 2, 3),
                                    nn.Upsample(scale_factor=2), nn.LeakyReLU(), nn.Flatten(),
                                    type("MyConv", (nn.Conv2d,), {})(1, 2, 3)],
                         ids=lambda m: type(m).__name__)
def test_pinned_captum_exact_type_whitelist(module):
    """captum 0.9.0 itself raises a TypeError deep in LRP.attribute; the backend names the layer."""
    model = nn.Sequential(module).double().eval()
    with pytest.raises(TypeError, match="has no rule defined"):
        LRP(model).attribute(torch.rand(1, 1, 4, 4, 4, dtype=F64) if isinstance(module, nn.Conv3d)
                             else torch.rand(1, 1, 6, dtype=F64) if isinstance(module, nn.Conv1d)
                             else torch.rand(1, 1, 6, 6, dtype=F64), target=0)


@pytest.mark.parametrize("layer", [nn.Conv1d(1, 2, 3), nn.ConvTranspose1d(1, 2, 3), nn.LeakyReLU()],
                         ids=lambda m: type(m).__name__)
def test_backend_refuses_a_layer_captum_has_no_rule_for(layer):
    model = _seeded(nn.Sequential(layer, nn.Flatten()), 0)
    x = inputs((2, 1, 6))
    with pytest.raises(UnsupportedLayerError, match=f"layer '0' of type {type(layer).__name__}.*exact types"):
        xaibench.explain(model, x, "lrp.epsilon", backend="captum")
    outcome = sweep.Sweep().run("lrp.epsilon", "captum", lambda: xaibench.explain(model, x, "lrp.epsilon",
                                                                                  backend="captum"))
    assert outcome.status == sweep.SKIPPED and "exact types" in outcome.reason
    # the gradient methods do not care about layer types
    assert xaibench.explain(model, x, "gradient", backend="captum").relevance.shape == x.shape


def test_pinned_alpha1beta0_assumes_non_negative_inputs():
    """On a signed input captum's first layer gives x_i w_ij^+ / sum_i x_i w_ij^+ (w replaced by
    w+), not native's z_ij^+ / sum z_ij^+; the backend refuses instead of returning that map."""
    model = _seeded(nn.Sequential(nn.Linear(6, 3, bias=False)), 5)
    x = inputs((4, 6))
    target = torch.zeros(4, dtype=torch.long)
    with torch.no_grad():
        out = model(x)[:, 0]
    captum_map = LRP(_rule_everywhere(model)).attribute(x.clone().requires_grad_(True), target=0).detach()
    w_plus = model[0].weight[0].clamp(min=0)
    contributions = x * w_plus
    expected = contributions / contributions.sum(1, keepdim=True) * out[:, None]
    torch.testing.assert_close(captum_map, expected, rtol=1e-10, atol=1e-12)
    native = xaibench.explain(model, x, "lrp.alpha1beta0", target=target, bias=False, stabilizer=STABILIZER)
    assert float(agreement_per_sample(captum_map, native.relevance).max()) > 0.1
    with pytest.raises(UnsupportedLayerError, match="non-negative inputs"):
        xaibench.explain(model, x, "lrp.alpha1beta0", target=target, backend="captum", bias=False)
    # non-negative input: the same rule
    _, _, difference = compare(model, x.abs(), "lrp.alpha1beta0", target=target, bias=False,
                               stabilizer=STABILIZER)
    assert float(difference.max()) < AGREEMENT


def _rule_everywhere(model):
    working = copy.deepcopy(model)
    for module in working.modules():
        if isinstance(module, (nn.Linear, nn.Conv2d)):
            module.rule = Alpha1_Beta0_Rule()
            module.rule.STABILITY_FACTOR = STABILIZER
    return working


@pytest.mark.parametrize("method", ["lrp.alpha1beta0", "lrp.gamma"])
def test_pinned_weight_rules_keep_the_full_bias(method):
    """bias=True: captum divides by sum x w+ + b (gamma: + b, not b + gamma b+); the control
    (bias=False on both sides) agrees."""
    model, x = relu_dense_net(), inputs((5, 6), nonnegative=True)
    with torch.no_grad():
        model[4].bias.fill_(-0.3)
        model[0].bias.copy_(-model[0].bias.abs())
    target = positive_targets(model, x)
    [difference_entry] = [d for d in table.documented_differences("captum", method, {}, model)
                          if "full bias" in d.reason]
    _, _, difference = compare(model, x, method, target=target, stabilizer=STABILIZER)
    assert float(difference.max()) > 1e-3
    _, _, controlled = compare(model, x, method, target=target, stabilizer=STABILIZER, bias=False)
    assert float(controlled.max()) < AGREEMENT
    assert difference_entry.control.change is not None


def test_pinned_gamma_boosts_positive_weights_where_z_is_negative():
    model, x = relu_dense_net(bias=False), inputs((6, 6), nonnegative=True)
    with torch.no_grad():
        output = model(x)
    target = output.argmin(1)
    assert bool((output.gather(1, target[:, None]) < 0).any())
    with pytest.raises(UnsupportedLayerError, match="z_j < 0"):
        xaibench.explain(model, x, "lrp.gamma", target=target, backend="captum", bias=False)


def test_pinned_batchnorm_is_a_layer_of_its_own_in_captum():
    model = _seeded(nn.Sequential(nn.Conv2d(2, 3, 3), nn.BatchNorm2d(3), nn.ReLU(), nn.Flatten(),
                                  nn.Linear(3 * 4 * 4, 2)), 6)
    with torch.no_grad():
        model[1].running_mean.uniform_(-0.5, 0.5)
        model[1].running_var.uniform_(0.5, 2.0)
    x = inputs((3, 2, 6, 6))
    _, _, difference = compare(model, x, "lrp.epsilon", epsilon=0.01, stabilizer=STABILIZER)
    assert float(difference.max()) > 1e-3
    [entry] = [d for d in table.documented_differences("captum", "lrp.epsilon", {}, model) if "EpsilonRule" in d.reason]
    native_side, other_side = table.control([entry], "lrp.epsilon", {"epsilon": 0.01, "stabilizer": STABILIZER},
                                            model, x)
    _, _, controlled = compare(other_side.model, x, "lrp.epsilon", **other_side.options)
    assert float(controlled.max()) < AGREEMENT


def test_pinned_trapezoid_integrated_gradients_is_scaled_by_n_minus_1_over_n():
    model, x = dense_net(), inputs((4, 6))
    steps = 10
    native = xaibench.explain(model, x, "integrated_gradients", steps=steps)
    other = xaibench.explain(model, x, "integrated_gradients", backend="captum", steps=steps)
    scaled = native.relevance * (steps - 1) / steps
    assert float(agreement_per_sample(other.relevance, scaled).max()) < AGREEMENT
    assert float(agreement_per_sample(other.relevance, native.relevance).max()) > 0.5 / steps
    # captum's own convergence delta says so: about 1/n of f(x) - f(baseline) is missing
    raw, delta = IntegratedGradients(model).attribute(x, target=native.target, n_steps=steps,
                                                      method="riemann_trapezoid", return_convergence_delta=True)
    torch.testing.assert_close(other.conservation_error, delta.abs())
    torch.testing.assert_close(raw, other.relevance)


def test_a_module_called_twice_is_refused():
    class Twice(nn.Module):
        def __init__(self):
            super().__init__()
            self.layer = nn.Linear(4, 4)

        def forward(self, x):
            return self.layer(torch.relu(self.layer(x)))

    model = _seeded(Twice(), 7)
    with pytest.raises(UnsupportedLayerError, match="more than once"):
        xaibench.explain(model, inputs((2, 4)), "lrp.epsilon", backend="captum")



def test_functional_residual_sum_is_refused_for_captum_lrp_not_a_silent_double_count():
    from xaibench.studies.networks import SkipResNet

    torch.manual_seed(0)
    model = SkipResNet().double().eval()
    x = torch.rand(2, 2, 6, 6, dtype=torch.float64)
    with pytest.raises(xaibench.UnsupportedLayerError, match="functional sum"):
        xaibench.explain(model, x, "lrp.epsilon", backend="captum")
    # the gradient methods are unaffected (the gradient of a sum is the gradient)
    g = xaibench.explain(model, x, "gradient", backend="captum").relevance
    assert torch.allclose(g, xaibench.explain(model, x, "gradient").relevance)
