"""The native engine against LXT 2.1 (the lxt backend) on a torchvision VisionTransformer, in float64.

Agreement is xaibench.metrics.agreement_per_sample (max |R_lxt - R_native| per sample over that
sample's sum |R_native|), max and median over the samples, as in the census. Where the same rules
apply it is below AGREEMENT = 1e-6; measured on small_vit (2 layers, 2 heads, width 16, patch 8,
every parameter random), stabilizer 1e-12, with attention='cp' and 'attnlrp':

    native on the copy that the controls of LXT_DIFFERENCES build (table.control), against lxt,
    4 samples, target 2:
        lrp.z        max 1.8e-10, median 1.8e-11 (cp);  3.1e-10, 1.1e-11 (attnlrp)
        lrp.epsilon  max 1.5e-11, median 9.6e-12 (cp);  1.4e-11, 6.6e-12 (attnlrp)
        lrp.gamma    max 1.9e-11, median 7.1e-12 (cp);  1.8e-11, 6.6e-12 (attnlrp)
    what remains is LXT's own stabilizer, 1e-10 in its identity rule and its zennit patch.

Where LXT computes something else, the test pins it by the native engine recomputing what LXT
computes (xaibench/backends/table.py, LXT_DIFFERENCES, each with its control):
- LayerNorm: LXT's layer_norm_forward holds the standard deviation constant and leaves the rest to
  gradient x input, the z rule, whatever the method; native gives the normalization the method's
  rule (epsilon, gamma). Alone: lrp.epsilon max 9.3e-3 (median 4.3e-3), lrp.gamma 1.3e-2 (4.4e-3).
- nn.MultiheadAttention's in- and out-projections: the module computes them by F.linear with its
  own weights (out_proj's forward never runs), so LXT's zennit rule never reaches them: the z rule.
  Alone: lrp.epsilon max 1.4e-2 (median 4.1e-3), lrp.gamma 3.0e-2 (8.1e-3). Both together:
  lrp.epsilon max 3.0e-2 (median 9.9e-3), lrp.gamma 4.9e-2 (1.9e-2), with each projection as an
  nn.Linear module (what the native engine's support of nn.MultiheadAttention is expected to give).
- Nothing else: GELU passes relevance unchanged on both sides (LXT divides by input + 1e-10),
  CP-LRP holds the attention weights constant on both, AttnLRP's softmax rule is the softmax's own
  gradient x input in LXT, and the class token, the positional embedding and the biases take
  the same shares (the relevance LXT's map lacks is what the native ledger books for them).

The control writes LayerNorm and the attention out in operations that the native engine
explains by the z rule. The direct comparison on the model as built (nn.MultiheadAttention
written out by the engine, xaibench/lrp/decompose.py), measured the same way:
    lrp.z        max 1.8e-10, median 1.8e-11 (cp);  3.1e-10, 1.1e-11 (attnlrp)
    lrp.epsilon  max 3.0e-2, median 9.9e-3 (cp);   2.7e-2, 9.0e-3 (attnlrp)   the two differences
    lrp.gamma    max 4.9e-2, median 1.9e-2 (cp);   3.2e-2, 1.5e-2 (attnlrp)
"""

from __future__ import annotations

import copy

import pytest
import torch
from strategies import full_snapshot, unchanged
from torch import nn

import xaibench
from xaibench.backends import table
from xaibench.metrics import agreement_per_sample

pytest.importorskip("lxt.efficient")
from test_lxt_backend import images, small_vit  # noqa: E402

AGREEMENT = 1e-6
STABILIZER = 1e-12
METHODS = {"lrp.z": {}, "lrp.epsilon": {"epsilon": 0.1}, "lrp.gamma": {"gamma": 0.25}}
#: a documented difference alone moves the map by more than this (measured: 9e-3 and above)
DIFFERS = 1e-3


def _figures(relevance, reference):
    per_sample = agreement_per_sample(relevance, reference)
    return float(per_sample.max()), float(per_sample.median())


def _pair(method, attention, differences=tuple(table.LXT_DIFFERENCES), model=None, x=None):
    """(lxt's map, native's map on the copy the controls of `differences` build), same options.
    By default both controls, for every method (under lrp.z they change no rule: the z rule
    either way; they spare the native engine nn.MultiheadAttention)."""
    model = small_vit() if model is None else model
    x = images(4) if x is None else x
    options = {"stabilizer": STABILIZER, "attention": attention, **METHODS[method]}
    lxt = xaibench.explain(model, x, method, target=2, backend="lxt", **options)
    native_side, other = table.control(list(differences), method, options, model, x)
    assert other is None   # every LXT control is native_only: lxt's map is used as measured
    native = xaibench.explain(native_side.model, x, native_side.method, target=2, **native_side.options)
    return lxt, native


@pytest.mark.parametrize("attention", ["cp", "attnlrp"])
@pytest.mark.parametrize("method", list(METHODS))
def test_native_recomputing_what_lxt_computes_agrees(method, attention):
    lxt, native = _pair(method, attention)
    largest, median = _figures(lxt.relevance, native.relevance)
    assert largest < AGREEMENT and median < AGREEMENT, (largest, median)
    assert torch.allclose(lxt.output, native.output, rtol=1e-12, atol=0)


class LinearProjections(table.WrittenOutAttention):
    """The control's written-out attention with its projections as nn.Linear modules again, to
    which the native engine gives the method's rule: the attention difference put back."""

    def __init__(self, attention):
        super().__init__(attention)
        width = attention.embed_dim
        self.linear_in = nn.Linear(width, 3 * width).to(attention.in_proj_weight.dtype)
        self.linear_out = nn.Linear(width, width).to(attention.in_proj_weight.dtype)
        with torch.no_grad():
            self.linear_in.weight.copy_(attention.in_proj_weight)
            self.linear_in.bias.copy_(attention.in_proj_bias)
            self.linear_out.weight.copy_(attention.out_proj.weight)
            self.linear_out.bias.copy_(attention.out_proj.bias)

    def project(self, x, weight, bias):
        return self.linear_in(x) if weight is self.in_weight else self.linear_out(x)


def _native_variant(method, written_norms, attention_class, model, x):
    copy_ = copy.deepcopy(model)
    for layer in copy_.encoder.layers:
        layer.self_attention = attention_class(layer.self_attention)
    if written_norms:
        table._write_out_layer_norms(table.Comparison(method, {}, copy_, x))
    options = {"stabilizer": STABILIZER, **METHODS[method]}
    return xaibench.explain(copy_, x, method, target=2, **options)


def test_each_documented_difference_is_needed_and_together_they_are_all():
    """lrp.epsilon and lrp.gamma: either difference alone (native on a copy with the other one's
    cause written out) leaves a difference of 1e-3 or more; both written out, rounding. lrp.z: no
    difference applies (both give every layer the z rule)."""
    model, x = small_vit(), images(4)
    for method in ("lrp.epsilon", "lrp.gamma"):
        assert table.documented_differences("lxt", method, {}, model) == table.LXT_DIFFERENCES
        lxt = xaibench.explain(model, x, method, target=2, backend="lxt", stabilizer=STABILIZER, **METHODS[method])
        layer_norm_alone = _native_variant(method, False, table.WrittenOutAttention, model, x)
        projections_alone = _native_variant(method, True, LinearProjections, model, x)
        both = _native_variant(method, False, LinearProjections, model, x)
        neither = _native_variant(method, True, table.WrittenOutAttention, model, x)
        for native in (layer_norm_alone, projections_alone, both):
            assert _figures(lxt.relevance, native.relevance)[0] > DIFFERS, method
        assert _figures(lxt.relevance, neither.relevance)[0] < AGREEMENT
    assert table.documented_differences("lxt", "lrp.z", {}, model) == []
    assert table.known_differences("zennit", "lrp.epsilon", {}, model) == []   # lxt's alone


def test_the_relevance_the_map_lacks_is_what_native_books_for_the_constants():
    """The class token, the positional embedding and the biases are constants: their shares are
    not in either map. The native ledger books them (the class token at the concatenation,
    the positional embedding and the biases at their additions and linear layers), and
    output - sum R_lxt is that total."""
    lxt, native = _pair("lrp.z", "cp")
    lacking = lxt.output - lxt.relevance.sum((1, 2, 3))
    # up to LXT's own 1e-10 stabilizers (measured: 6e-9 of an output of 0.28)
    assert ((lacking - native.ledger.absorbed()).abs() <= 1e-7 * lxt.output.abs()).all()
    class_token = [row for row in native.ledger if row.layer.startswith("cat")]
    assert len(class_token) == 1 and float(class_token[0].absorbed_constant.abs().min()) > 1e-4


@pytest.mark.parametrize("attention", ["cp", "attnlrp"])
def test_lxt_agrees_with_native_on_the_vit_as_built_where_the_rules_are_the_same(attention):
    """lrp.z: every layer has the z rule on both sides; no control needed."""
    model, x = small_vit(), images(4)
    options = {"stabilizer": STABILIZER, "attention": attention}
    native = xaibench.explain(model, x, "lrp.z", target=2, **options)
    lxt = xaibench.explain(model, x, "lrp.z", target=2, backend="lxt", **options)
    largest, median = _figures(lxt.relevance, native.relevance)
    assert largest < AGREEMENT and median < AGREEMENT, (largest, median)


@pytest.mark.parametrize("method", ["lrp.epsilon", "lrp.gamma"])
def test_on_the_vit_as_built_epsilon_and_gamma_differ_by_the_documented_causes(method):
    """Against native on the model as built, lxt differs; native recomputing what LXT computes
    (the controls, test above) agrees, so the documented causes are the whole difference. If
    this fails at the first assertion, the native engine gives the attention projections and
    LayerNorm the z rule as well: LXT_DIFFERENCES no longer apply and must go."""
    model, x = small_vit(), images(4)
    options = {"stabilizer": STABILIZER, **METHODS[method]}
    native = xaibench.explain(model, x, method, target=2, **options)
    lxt = xaibench.explain(model, x, method, target=2, backend="lxt", **options)
    assert _figures(lxt.relevance, native.relevance)[0] > DIFFERS
    _, recomputed = _pair(method, "cp", model=model, x=x)
    assert _figures(lxt.relevance, recomputed.relevance)[0] < AGREEMENT


def test_the_lxt_differences_have_controls_that_leave_the_model_alone():
    """What tests/test_table.py checks for DIFFERENCES, for LXT_DIFFERENCES (its example input,
    1x8x8, fits no torchvision ViT): each applies where it says, its control recomputes on a copy
    (native_only), computes the same function and leaves the model handed in untouched."""
    model, x = small_vit(), images(2)
    for difference in table.LXT_DIFFERENCES:
        assert difference in table.documented_differences("lxt", "lrp.epsilon", {}, model)
        assert difference.reason in table.known_differences("lxt", "lrp.gamma", {}, model)
        assert difference.reason in table.markdown()
        snapshot = full_snapshot(model)
        native, other = table.control([difference], "lrp.epsilon", {}, model, x)
        assert other is None and difference.control.native_only
        assert unchanged(model, snapshot) and native.model is not model
        with torch.no_grad():
            assert torch.allclose(native.model(x), model(x), rtol=1e-12, atol=1e-14)
