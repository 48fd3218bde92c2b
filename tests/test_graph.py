"""The graph walk (xaibench/lrp/graph.py): conservation and identities of the native LRP engine on
hypothesis-generated networks.

Conservation is checked through the ledger: sum(relevance at the input) + everything the
layers absorbed (biases, stabilizers, dropped, constants) = the explained output, per sample,
and for every layer relevance_out = relevance_in + absorbed (the row residual).

Tolerances. The ledger sums are computed from the rules' own terms, so they close up to
rounding. Rounding grows with the size of the terms being summed, not with the (possibly
small) output, so the float64 bound is 1e-10 times the ledger's scale: the largest of
|output|, sum|relevance| at the input and the per-layer |relevance_in|, |relevance_out| and
|absorbed| sums (with large biases or near-zero denominators these can be far larger than the
output). float32 uses the same scale with 1e-5.
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import assume, given
from hypothesis import strategies as st
from strategies import (
    BOX_METHODS,
    LRP_METHODS,
    assert_ledger_closes,
    conv_networks,
    dense_networks,
    functional_networks,
    ledger_scale,
    method_options,
    networks,
    residual_networks,
    unet_networks,
)
from torch import nn

import xaibench


@pytest.mark.parametrize("method", LRP_METHODS)
@given(case=networks())
def test_ledger_closes_float64(method, case):
    e = xaibench.explain(case.model, case.x, method, dtype=torch.float64, **method_options(method, case.x))
    assert e.relevance.shape == case.x.shape
    assert e.relevance.dtype == torch.float64
    assert e.output.shape == (case.x.shape[0],)
    assert_ledger_closes(e, 1e-10)


@pytest.mark.parametrize("method", ["lrp.epsilon", "lrp.flat", "lrp.zbox", "lrp.alpha2beta1",
                                    "lrp.epsilon_plus_flat"])
@given(case=functional_networks(cat_constant=True))
def test_ledger_closes_through_functional_steps(method, case):
    """Padding, slicing, scaling, constants (added, or concatenated with torch.cat), permutes,
    means, sums and F.interpolate between (and before) the layers: the ledger closes, and z^B
    reaches the stem through the steps before it."""
    e = xaibench.explain(case.model, case.x, method, dtype=torch.float64, **method_options(method, case.x))
    assert_ledger_closes(e, 1e-10)
    if method == "lrp.zbox":
        assert any("ZBox" in row.rule for row in e.ledger.rows)


@pytest.mark.parametrize("method", LRP_METHODS)
@given(case=networks())
def test_ledger_closes_float32(method, case):
    options = method_options(method, case.x, dtype=torch.float32)
    e = xaibench.explain(case.model, case.x, method, **options)
    assert e.relevance.dtype == torch.float32
    # Where a denominator lies within float32 rounding of zero, float32 cannot represent the
    # explanation at all (it differs from the float64 one by more than 1%) and its ledger closes
    # only to that rounding times a huge 1/z: such examples test float32, not the engine.
    exact = xaibench.explain(case.model, case.x, method, dtype=torch.float64,
                             **method_options(method, case.x, dtype=torch.float64))
    spread = (e.relevance.double() - exact.relevance).abs().flatten(1).amax(1)
    assume(bool((spread <= 1e-2 * exact.relevance.abs().flatten(1).sum(1)).all()))
    assert_ledger_closes(e, 1e-5)
    # the scale-free error the library reports; where nothing was absorbed in bulk (the scale
    # is the output or the input relevance) it is the same bound
    if torch.equal(ledger_scale(e), torch.maximum(e.output.abs(), e.relevance.abs().flatten(1).sum(1))):
        assert float(e.relative_conservation_error.max()) <= 1e-5


# --- identities ----------------------------------------------------------------------------------
bias_free_nets = st.one_of(
    dense_networks(bias=False, batchnorm=False, zeros=False, away_from_zero=True),
    conv_networks(bias=False, batchnorm=False, zeros=False, away_from_zero=True),
    residual_networks(bias=False, zeros=False, away_from_zero=True),
    unet_networks(bias=False, zeros=False, away_from_zero=True),
)


@given(case=bias_free_nets)
def test_lrp0_equals_gradient_times_input_on_bias_free_nets(case):
    """LRP-0 on a bias-free piecewise-linear net is gradient x input (Montavon et al. 2019).

    The stabilizer 1e-12 changes each layer's factor 1/z by a relative 1e-12/|z|; the inputs
    are bounded away from zero, so the difference stays far below 1e-6 of the relevance scale.
    """
    lrp = xaibench.explain(case.model, case.x, "lrp.z", dtype=torch.float64, stabilizer=1e-12)
    reference = xaibench.explain(case.model, case.x, "input_x_gradient", dtype=torch.float64)
    assert torch.equal(lrp.target, reference.target)
    torch.testing.assert_close(lrp.output, reference.output, rtol=1e-12, atol=1e-12)
    scale = reference.relevance.abs().flatten(1).sum(1).clamp(min=1e-30)
    difference = (lrp.relevance - reference.relevance).abs().flatten(1).amax(1)
    assert float((difference / scale).max()) <= 1e-6, (difference / scale).tolist()
    # and epsilon -> 0 is the same rule
    small = xaibench.explain(case.model, case.x, "lrp.epsilon", dtype=torch.float64, epsilon=1e-12,
                             stabilizer=1e-12)
    torch.testing.assert_close(small.relevance, lrp.relevance, rtol=1e-9, atol=1e-12 * float(scale.max()))


relu_nets_nonnegative = st.one_of(
    dense_networks(activations=("relu",), nonnegative=True),
    conv_networks(activations=("relu",), nonnegative=True),
    residual_networks(activations=("relu",), final_relu=True, nonnegative=True),
    unet_networks(activations=("relu",), nonnegative=True),
)


@given(case=relu_nets_nonnegative)
def test_zplus_relevance_has_the_sign_of_the_output_for_nonnegative_inputs(case):
    """z+ keeps only positive contributions, so for non-negative inputs (and ReLU activations,
    so every layer input is non-negative) every input relevance has the sign of the explained
    output: non-negative when the output is positive."""
    e = xaibench.explain(case.model, case.x, "lrp.zplus", dtype=torch.float64)
    signed = e.relevance * torch.sign(e.output).view((-1,) + (1,) * (e.relevance.dim() - 1))
    assert float(signed.min()) >= 0.0, float(signed.min())
    positive = e.output > 0
    assert bool((e.relevance[positive] >= 0).all())


def _zplus_by_hand(layers, x):
    """z+ through a chain of Linear/ReLU layers for a nonnegative input, written from the
    formula R_i = sum_j x_i w+_ij / (sum_i x_i w+_ij + b+_j) R_j (stabilizer 1e-6): independent of
    the engine's streams and groups."""
    activations, a = [], x
    for layer in layers:
        activations.append(a)
        a = layer(a)
    relevance = torch.zeros_like(a).scatter(1, a.argmax(1, keepdim=True), a.max(1, keepdim=True).values)
    for layer, a in zip(reversed(layers), reversed(activations)):
        if isinstance(layer, nn.Linear):
            weight, bias = layer.weight.clamp(min=0), layer.bias.clamp(min=0)
            z = a @ weight.T + bias
            relevance = a * ((relevance / (z + 1e-6)) @ weight)
    return relevance


@given(widths=st.lists(st.integers(1, 6), min_size=1, max_size=4), seed=st.integers(0, 2 ** 16))
def test_alpha1beta0_and_zplus_match_the_formula_for_nonnegative_inputs(widths, seed):
    generator = torch.Generator().manual_seed(seed)
    sizes = [5] + widths + [3]
    layers = []
    for n_in, n_out in zip(sizes[:-1], sizes[1:]):
        layer = nn.Linear(n_in, n_out).double()
        with torch.no_grad():
            layer.weight.copy_(torch.randn(layer.weight.shape, generator=generator, dtype=torch.float64))
            layer.bias.copy_(torch.randn(layer.bias.shape, generator=generator, dtype=torch.float64))
        layers += [layer, nn.ReLU()]
    model = nn.Sequential(*layers[:-1]).eval()
    x = torch.rand(4, 5, generator=generator, dtype=torch.float64)
    expected = _zplus_by_hand(list(model), x)
    for method, options in (("lrp.zplus", {}), ("lrp.alpha1beta0", {}),
                            ("lrp.alpha_beta", {"alpha": 1.0, "beta": 0.0})):
        e = xaibench.explain(model, x, method, **options)
        torch.testing.assert_close(e.relevance, expected, rtol=1e-10, atol=1e-12)


def test_box_methods_are_listed():
    """The z^B options helper covers every box method the engine has."""
    assert set(BOX_METHODS) <= set(LRP_METHODS)


# --- explanations are per sample -----------------------------------------------------------------
@pytest.mark.parametrize("method", LRP_METHODS)
@given(case=networks(), data=st.data())
def test_relevance_of_a_sample_does_not_depend_on_the_rest_of_the_batch(method, case, data):
    """Explaining each sample alone gives what the batched call gives. (A rule that decides per
    batch, e.g. skipping a stream whose input is zero for the whole batch, breaks this.)"""
    options = method_options(method, case.x)
    batched = xaibench.explain(case.model, case.x, method, dtype=torch.float64, **options)
    for i in range(case.x.shape[0]):
        alone_options = {k: (v[i:i + 1] if torch.is_tensor(v) and v.dim() > 0 else v) for k, v in options.items()}
        alone = xaibench.explain(case.model, case.x[i:i + 1], method, target=batched.target[i:i + 1],
                                 dtype=torch.float64, **alone_options)
        scale = float(alone.relevance.abs().sum()) + 1e-300
        assert float((batched.relevance[i] - alone.relevance[0]).abs().max()) <= 1e-9 * scale, i


def test_zplus_bias_joins_the_denominator_when_every_input_is_negative():
    """z+ with all inputs of a layer negative: the positive bias must still join the
    denominator (z+ = b+ + sum x- w-), so it absorbs its share."""
    model = torch.nn.Linear(2, 1).double()
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[1.0, -1.0]]))
        model.bias.fill_(1.0)
    x = torch.tensor([[-1.0, -2.0]], dtype=torch.float64)  # z = -1 + 2 + 1 = 2
    e = xaibench.explain(model, x, "lrp.zplus", stabilizer=1e-12)
    torch.testing.assert_close(e.relevance, torch.tensor([[0.0, 2.0 * 2.0 / 3.0]], dtype=torch.float64))
    torch.testing.assert_close(e.ledger[0].absorbed_bias, torch.tensor([2.0 / 3.0], dtype=torch.float64))
