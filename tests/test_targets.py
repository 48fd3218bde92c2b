"""Target selection (xaibench/targets.py): what the user's `target` selects in the model output.

The documented forms, each on a float64 linear model whose gradient and output are known
exactly (None = the argmax, an int, one index per sample [B], several per sample [B, T], a
boolean mask shaped like one sample's output or like the whole output); the bad forms, each
named in the error; and, on every method, that several targets at once equal separate calls
and that a mask over a dense output explains the sum of its pixels.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from strategies import (
    LRP_METHODS,
    NEW_METHODS,
    assert_ledger_closes,
    conv_networks,
    dense_networks,
    method_options,
    mlp,
    randn,
    randomize,
    relu_net,
    residual_networks,
    unet_networks,
)
from torch import nn

import xaibench
from xaibench.methods import optimal_input
from xaibench.targets import resolve

F64 = torch.float64
BACKENDS = ["native", "zennit"]

# A bias-free linear model with integer weights: its gradient for output k is W[k] exactly, and
# the three samples have three different argmaxes (outputs [1, 0, 2], [0, 1, -1], [1, 0, 0]).
W = torch.tensor([[1.0, -2.0, 0.0, 3.0], [0.0, 1.0, 1.0, -1.0], [2.0, 0.0, -1.0, 0.0]], dtype=F64)
X = torch.tensor([[1.0, 0.0, 0.0, 0.0], [0.0, 0.0, 1.0, 0.0], [0.0, 1.0, 0.0, 1.0]], dtype=F64)


def _linear(weight=W):
    model = nn.Linear(weight.shape[1], weight.shape[0], bias=False).double()
    with torch.no_grad():
        model.weight.copy_(weight)
    return model.eval()


def _gradient(target, model=None):
    return xaibench.explain(_linear() if model is None else model, X, "gradient", target=target, dtype=F64)


# --- the documented forms -------------------------------------------------------------------------
def test_none_explains_each_samples_argmax():
    e = _gradient(None)
    assert e.target.tolist() == [2, 1, 0]
    assert e.output.tolist() == [2.0, 1.0, 1.0]
    assert torch.equal(e.relevance, W[[2, 1, 0]])


def test_none_on_a_single_output_explains_that_output():
    e = _gradient(None, _linear(W[1:2]))
    assert e.target.tolist() == [0, 0, 0]
    assert e.output.tolist() == [0.0, 1.0, 0.0]
    assert torch.equal(e.relevance, W[[1, 1, 1]])


@pytest.mark.parametrize("target", [1, np.int64(1), torch.tensor(1)], ids=["int", "numpy", "0-d tensor"])
def test_an_int_explains_the_same_output_for_every_sample(target):
    e = _gradient(target)
    assert e.target.tolist() == [1, 1, 1]
    assert e.output.tolist() == [0.0, 1.0, 0.0]
    assert torch.equal(e.relevance, W[[1, 1, 1]])


@pytest.mark.parametrize("target", [torch.tensor([0, 2, 1]), [0, 2, 1], np.array([0, 2, 1])],
                         ids=["LongTensor", "list", "numpy"])
def test_one_index_per_sample(target):
    e = _gradient(target)
    assert e.target.tolist() == [0, 2, 1]
    assert e.output.tolist() == [1.0, -1.0, 0.0]
    assert torch.equal(e.relevance, W[[0, 2, 1]])


def test_several_indices_per_sample_are_a_target_dimension():
    indices = torch.tensor([[0, 1], [2, 2], [1, 0]])
    e = _gradient(indices)
    assert e.relevance.shape == (3, 2, 4) and e.output.shape == (3, 2)
    assert e.target.tolist() == indices.tolist()
    assert e.output.tolist() == [[1.0, 0.0], [-1.0, -1.0], [0.0, 1.0]]
    assert torch.equal(e.relevance, W[indices])


def test_the_selection_is_target_major():
    """[T*B, *output]: row t*B + b selects sample b's t-th target."""
    selection = resolve(torch.zeros(3, 3, dtype=F64), torch.tensor([[0, 1], [2, 2], [1, 0]]))
    assert (selection.count, selection.several) == (2, True)
    assert selection.selection.argmax(1).tolist() == [0, 2, 1, 1, 2, 0]
    assert torch.equal(selection.selection.sum(1), torch.ones(6, dtype=F64))


def test_a_mask_shaped_like_one_samples_output_explains_the_sum_for_every_sample():
    mask = torch.tensor([True, False, True])
    e = _gradient(mask)
    assert torch.equal(e.target, mask)
    assert e.output.tolist() == [3.0, -1.0, 1.0]
    assert torch.equal(e.relevance, (W[0] + W[2]).expand(3, 4))


def test_a_mask_shaped_like_the_whole_output_is_per_sample():
    mask = torch.tensor([[True, True, False], [False, False, True], [True, True, True]])
    e = _gradient(mask)
    assert e.output.tolist() == [1.0, -1.0, 1.0]
    assert torch.equal(e.relevance, torch.stack([W[0] + W[1], W[2], W.sum(0)]))


@pytest.mark.parametrize("target, match", [
    (torch.tensor([0.0, 1.0, 2.0]), "must be integers"),
    (torch.tensor([0, 1]), r"one index per sample \(3\), got 2"),
    (torch.tensor([[0, 1], [1, 0]]), "needs B = 3 rows, got 2"),
    (torch.zeros(3, 1, 1, dtype=torch.long), r"1-D \[B\] or 2-D \[B, T\]"),
    (torch.ones(2, dtype=torch.bool), r"shaped like one sample's output \(3,\)"),
    (torch.tensor([[True, False, False], [False, False, False], [True, True, True]]),
     r"no output for sample\(s\) \[1\]"),
    ("head", "cannot use a target of type str"),
], ids=["float", "short", "rows", "3-d", "mask shape", "empty mask", "type"])
def test_a_bad_target_is_named(target, match):
    with pytest.raises(xaibench.InputError, match=match):
        _gradient(target)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("target", [7, -1, torch.tensor([0, 5, 1]), torch.tensor([[0, 1], [2, 9], [1, 1]])],
                         ids=["int", "negative", "per-sample", "several"])
def test_target_out_of_range_names_the_value(backend, target):
    value = {7: "7", -1: "-1"}.get(target, None) if isinstance(target, int) else str(int(target.max()))
    with pytest.raises(ValueError, match=value):
        xaibench.explain(mlp(), randn(3, 4), "lrp.epsilon", target=target, backend=backend)


# --- several targets at once: LRP on hypothesis-generated networks --------------------------------
@st.composite
def _classifier_with_targets(draw):
    case = draw(st.one_of(dense_networks(), conv_networks(), residual_networks()))
    with torch.no_grad():
        n_out = case.model(case.x).shape[1]
    count = draw(st.integers(1, 4))
    indices = draw(st.lists(st.lists(st.integers(0, n_out - 1), min_size=count, max_size=count),
                            min_size=case.x.shape[0], max_size=case.x.shape[0]))
    return case, torch.tensor(indices, dtype=torch.long)


@pytest.mark.parametrize("method", ["lrp.epsilon", "lrp.zplus", "lrp.alpha2beta1", "lrp.gamma", "lrp.zbox",
                                    "lrp.epsilon_plus_flat", "lrp.wsquare", "input_x_gradient"])
@given(drawn=_classifier_with_targets())
def test_several_targets_equal_separate_calls(method, drawn):
    case, targets = drawn
    options = method_options(method, case.x)
    both = xaibench.explain(case.model, case.x, method, target=targets, dtype=torch.float64, **options)
    batch, count = targets.shape
    assert both.relevance.shape == (batch, count) + tuple(case.x.shape[1:])
    assert both.output.shape == (batch, count)
    if both.conservation_error is not None:
        assert both.conservation_error.shape == (batch, count)
        assert_ledger_closes(both, 1e-10)
    for t in range(count):
        one = xaibench.explain(case.model, case.x, method, target=targets[:, t], dtype=torch.float64, **options)
        torch.testing.assert_close(both.relevance[:, t], one.relevance, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(both.output[:, t], one.output, rtol=1e-12, atol=1e-12)
        if one.conservation_error is not None:
            for row_both, row_one in zip(both.ledger, one.ledger):
                torch.testing.assert_close(row_both.relevance_in[:, t], row_one.relevance_in,
                                           rtol=1e-10, atol=1e-10)


# --- several targets at once: the native methods other than LRP -----------------------------------
@pytest.mark.parametrize("method, options", [
    ("integrated_gradients", {"steps": 8}),
    ("integrated_gradients", {"baseline": "mean", "rule": "riemann_midpoint", "steps": 5}),
    ("smoothgrad", {"samples": 4, "noise_level": 0.2}),
    ("occlusion", {"patch": 2, "stride": 1}),
])
def test_several_targets_equal_separate_calls_for_the_other_methods(method, options):
    model, x = relu_net(), randn(4, 6)
    targets = torch.tensor([[0, 1], [2, 2], [1, 0], [0, 2]])
    together = xaibench.explain(model, x, method, target=targets, dtype=F64, **options)
    assert together.relevance.shape == (4, 2, 6) and together.output.shape == (4, 2)
    for t in range(2):
        alone = xaibench.explain(model, x, method, target=targets[:, t], dtype=F64, **options)
        torch.testing.assert_close(together.relevance[:, t], alone.relevance, rtol=1e-12, atol=1e-14)
        torch.testing.assert_close(together.output[:, t], alone.output, rtol=0, atol=0)
        if alone.conservation_error is not None:
            torch.testing.assert_close(together.conservation_error[:, t], alone.conservation_error,
                                       rtol=1e-9, atol=1e-14)
    result = optimal_input(model, x, target=targets, steps=3, dtype=F64)
    assert result.input.shape == (4, 2, 6) and result.objective.shape == (4, 2, 4)
    alone = optimal_input(model, x, target=targets[:, 1], steps=3, dtype=F64)
    torch.testing.assert_close(result.input[:, 1], alone.input, rtol=1e-12, atol=1e-14)


# --- a boolean mask over a dense output -----------------------------------------------------------
@pytest.mark.parametrize("method", LRP_METHODS)
@given(case=unet_networks(), data=st.data())
def test_mask_target_is_the_sum_of_the_pixel_explanations(method, case, data):
    """Every native rule is linear in the relevance it receives (the denominators come from the
    forward pass only), so explaining the sum of a region of a dense output equals summing the
    explanations of its pixels."""
    with torch.no_grad():
        out_shape = tuple(case.model(case.x).shape[1:])
    n = int(torch.tensor(out_shape).prod())
    chosen = data.draw(st.lists(st.integers(0, n - 1), min_size=1, max_size=5, unique=True), label="pixels")
    mask = torch.zeros(n, dtype=torch.bool)
    mask[chosen] = True
    mask = mask.view(out_shape)
    options = method_options(method, case.x)
    region = xaibench.explain(case.model, case.x, method, target=mask, dtype=torch.float64, **options)
    assert region.relevance.shape == case.x.shape
    total = torch.zeros_like(region.relevance)
    output = torch.zeros_like(region.output)
    for index in chosen:
        pixel = xaibench.explain(case.model, case.x, method, target=index, dtype=torch.float64, **options)
        total += pixel.relevance
        output += pixel.output
    torch.testing.assert_close(region.output, output, rtol=1e-12, atol=1e-12)
    scale = float(total.abs().max()) + float(region.relevance.abs().max()) + 1e-300
    assert float((region.relevance - total).abs().max()) <= 1e-9 * scale
    assert_ledger_closes(region, 1e-10)


# --- a boolean mask over a dense output: the native methods other than LRP ------------------------
def test_a_boolean_mask_target_on_a_dense_output():
    """Dense outputs (maps): the summed masked region is explained; IG stays complete."""
    model = randomize(nn.Conv1d(1, 1, 3, padding=1, bias=False), seed=2)
    x = randn(2, 1, 8)
    mask = torch.zeros(1, 8, dtype=torch.bool)
    mask[0, 2:5] = True
    for method in NEW_METHODS:
        e = xaibench.explain(model, x, method, target=mask, dtype=F64)
        assert e.relevance.shape == x.shape
        with torch.no_grad():
            torch.testing.assert_close(e.output, copy.deepcopy(model).double()(x.double())[:, 0, 2:5].sum(1))
    e = xaibench.explain(model, x, "integrated_gradients", target=mask, dtype=F64)
    assert float(e.conservation_error.max()) < 1e-12
    assert float(e.relevance[..., 7].abs().max()) == 0.0  # outside the receptive field of the mask


