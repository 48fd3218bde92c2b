"""Transformers as torch and torchvision build them: nn.MultiheadAttention, F.scaled_dot_product_attention,
nn.TransformerEncoderLayer / nn.TransformerEncoder (norm first and last), torchvision's VisionTransformer and
SwinTransformer (V1 and V2), written out by the engine (xaibench/lrp/decompose.py).

The reference is gradient x input of an independent re-implementation (einsum per head, written
here from the layers' definitions, not from decompose.py) in which the rules are built in, as in
tests/test_attention.py: the z rule on every linear map is gradient x input once LayerNorm's
standard deviation is detached, GELU's identity rule is x * (GELU(x) / x) with the ratio detached,
CP-LRP detaches the attention weights and AttnLRP halves the gradient into each factor of a
product of two input-dependent tensors. lrp.z with a negligible stabilizer, float64, 1e-9.

Then the ledger closes on the transformer zoo (float64 1e-10, float32 1e-5 of the ledger's scale)
for the rules and both attention modes, the constants (class token, positional embedding,
relative position bias) book their shares, and what the engine cannot write out is refused by name.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from strategies import assert_ledger_closes, full_snapshot, unchanged
from test_attention import _Halve  # the gradient halved: AttnLRP's uniform rule in gradient x input
from torch import nn

import xaibench
from xaibench.errors import UnsupportedLayerError

TINY = 1e-30
D = torch.float64


def _randomized(model, seed):
    """Every parameter drawn (torch's init leaves biases and LayerNorm at 0 and 1, where a wrong
    share of them would not show)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            scale = 1 / math.sqrt(p.shape[-1]) if p.dim() > 1 else 0.3
            p.copy_(torch.randn(p.shape, generator=generator, dtype=p.dtype) * scale + (1.0 if "norm" in name
                                                                                        and name.endswith("weight")
                                                                                        else 0.0))
    return model.eval()


# --- the reference ---------------------------------------------------------------------------------
def reference_attention(mha: nn.MultiheadAttention, query, key, value, mode, blocked=None, added=None):
    embed, heads = mha.embed_dim, mha.num_heads
    d = embed // heads
    weight = mha.in_proj_weight.view(3, heads, d, embed)
    bias = mha.in_proj_bias.view(3, heads, d)
    q = torch.einsum("bte,hde->bhtd", query, weight[0]) + bias[0][None, :, None, :]
    k = torch.einsum("bte,hde->bhtd", key, weight[1]) + bias[1][None, :, None, :]
    v = torch.einsum("bte,hde->bhtd", value, weight[2]) + bias[2][None, :, None, :]
    if mode == "attnlrp":
        q, k = _Halve.apply(q), _Halve.apply(k)
    scores = torch.einsum("bhtd,bhsd->bhts", q, k) / math.sqrt(d)
    if added is not None:
        scores = scores + added
    if blocked is not None:
        scores = scores.masked_fill(blocked, float("-inf"))
    weights = torch.softmax(scores, dim=-1)
    if mode == "cp":
        weights = weights.detach()
    if mode == "attnlrp":
        weights, v = _Halve.apply(weights), _Halve.apply(v)
    heads_out = torch.einsum("bhts,bhsd->bthd", weights, v).reshape(query.shape)
    return heads_out @ mha.out_proj.weight.T + mha.out_proj.bias


def reference_layer_norm(x, norm: nn.LayerNorm):
    mean = x.mean(-1, keepdim=True)
    std = torch.sqrt(((x - mean) ** 2).mean(-1, keepdim=True) + norm.eps).detach()
    return (x - mean) / std * norm.weight + norm.bias


def identity_rule(activation, x):
    return x * (activation(x) / x).detach()


def reference_encoder_layer(layer: nn.TransformerEncoderLayer, x, mode, blocked=None):
    def attention(h):
        return reference_attention(layer.self_attn, h, h, h, mode, blocked)

    def feedforward(h):
        return layer.linear2(identity_rule(layer.activation, layer.linear1(h)))

    if layer.norm_first:
        x = x + attention(reference_layer_norm(x, layer.norm1))
        return x + feedforward(reference_layer_norm(x, layer.norm2))
    x = reference_layer_norm(x + attention(x), layer.norm1)
    return reference_layer_norm(x + feedforward(x), layer.norm2)


def gradient_x_input(function, x, target):
    x = x.clone().requires_grad_(True)
    function(x)[:, target].sum().backward()
    return (x * x.grad).detach()


# --- networks --------------------------------------------------------------------------------------
TOKENS, WIDTH, HEADS = 5, 8, 2


class AttentionNet(nn.Module):
    """nn.MultiheadAttention in a residual block with a dense head; masks as buffers."""

    def __init__(self, mask=None, key_padding_mask=None):
        super().__init__()
        self.attention = nn.MultiheadAttention(WIDTH, HEADS, batch_first=True)
        self.head = nn.Linear(TOKENS * WIDTH, 3)
        self.register_buffer("mask", mask)
        self.register_buffer("key_padding_mask", key_padding_mask)

    def forward(self, x):
        out, _ = self.attention(x, x, x, attn_mask=self.mask, key_padding_mask=self.key_padding_mask)
        return self.head((x + out).flatten(1))

    def reference(self, x, mode):
        blocked, added = None, None
        if self.mask is not None and self.mask.dtype == torch.bool:
            blocked = self.mask
        elif self.mask is not None:
            added = self.mask
        if self.key_padding_mask is not None:
            padding = self.key_padding_mask[:, None, None, :]
            blocked = padding if blocked is None else blocked | padding
        return self.head((x + reference_attention(self.attention, x, x, x, mode, blocked, added)).flatten(1))


def _causal():
    return torch.ones(TOKENS, TOKENS, dtype=torch.bool).triu(1)


MASKS = {
    "none": lambda: {},
    "causal_bool": lambda: {"mask": _causal()},
    "float": lambda: {"mask": torch.linspace(-1, 1, TOKENS * TOKENS, dtype=D).view(TOKENS, TOKENS)},
    "key_padding": lambda: {"key_padding_mask": torch.tensor([[False] * (TOKENS - 1) + [True]] * 3)},
}


def _tokens(batch=3, seed=0):
    return torch.randn(batch, TOKENS, WIDTH, generator=torch.Generator().manual_seed(seed), dtype=D)


@pytest.mark.parametrize("mask", sorted(MASKS))
@pytest.mark.parametrize("attention", ["cp", "attnlrp"])
def test_multihead_attention_matches_the_reference(attention, mask):
    model = _randomized(AttentionNet(**MASKS[mask]()).double(), seed=1)
    x = _tokens()
    e = xaibench.explain(model, x, "lrp.z", target=1, stabilizer=TINY, attention=attention)
    expected = gradient_x_input(lambda t: model.reference(t, attention), x, 1)
    assert torch.isfinite(e.relevance).all()
    assert torch.allclose(e.relevance, expected, rtol=1e-9, atol=1e-10 * float(expected.abs().max()))


def test_the_reference_sees_a_wrong_attention_rule():
    """Not vacuous: the other attention mode's reference is far from the engine's map."""
    model = _randomized(AttentionNet().double(), seed=1)
    x = _tokens()
    e = xaibench.explain(model, x, "lrp.z", target=1, stabilizer=TINY, attention="cp")
    other = gradient_x_input(lambda t: model.reference(t, "attnlrp"), x, 1)
    assert (e.relevance - other).abs().max() > 1e-3 * other.abs().max()


class EncoderNet(nn.Module):
    def __init__(self, depth=2, norm_first=False, activation="relu", final_norm=True, causal=False):
        super().__init__()
        layer = nn.TransformerEncoderLayer(WIDTH, HEADS, 16, dropout=0.1, activation=activation, batch_first=True,
                                           norm_first=norm_first)
        self.encoder = nn.TransformerEncoder(layer, depth, norm=nn.LayerNorm(WIDTH) if final_norm else None,
                                             enable_nested_tensor=False)
        self.head = nn.Linear(TOKENS * WIDTH, 3)
        self.register_buffer("mask", _causal() if causal else None)

    def forward(self, x):
        return self.head(self.encoder(x, mask=self.mask).flatten(1))

    def reference(self, x, mode):
        for layer in self.encoder.layers:
            x = reference_encoder_layer(layer, x, mode, self.mask)
        if self.encoder.norm is not None:
            x = reference_layer_norm(x, self.encoder.norm)
        return self.head(x.flatten(1))


@pytest.mark.parametrize("attention", ["cp", "attnlrp"])
@pytest.mark.parametrize("norm_first, activation, causal", [(False, "relu", False), (True, "gelu", True),
                                                            (True, "relu", False), (False, "gelu", True)])
def test_transformer_encoder_matches_the_reference(norm_first, activation, causal, attention):
    model = _randomized(EncoderNet(norm_first=norm_first, activation=activation, causal=causal).double(), seed=2)
    x = _tokens(seed=3)
    e = xaibench.explain(model, x, "lrp.z", target=0, stabilizer=TINY, attention=attention)
    expected = gradient_x_input(lambda t: model.reference(t, attention), x, 0)
    assert torch.allclose(e.relevance, expected, rtol=1e-9, atol=1e-10 * float(expected.abs().max()))


class SdpaNet(nn.Module):
    """A hand-written multi-head block calling F.scaled_dot_product_attention (as timm, diffusers do)."""

    def __init__(self, causal=False):
        super().__init__()
        self.qkv = nn.Linear(WIDTH, 3 * WIDTH)
        self.proj = nn.Linear(WIDTH, WIDTH)
        self.head = nn.Linear(TOKENS * WIDTH, 3)
        self.causal = causal

    def forward(self, x):
        qkv = self.qkv(x).unflatten(-1, (3, HEADS, WIDTH // HEADS))    # [batch, tokens, 3, heads, head_dim]
        q, k, v = (qkv[:, :, part].transpose(1, 2) for part in range(3))
        out = F.scaled_dot_product_attention(q, k, v, is_causal=self.causal)
        return self.head((x + self.proj(out.transpose(1, 2).flatten(2))).flatten(1))

    def reference(self, x, mode):
        attention = nn.MultiheadAttention(WIDTH, HEADS, batch_first=True).double()
        with torch.no_grad():   # the same rows: query, key, value, each heads x head_dim
            attention.in_proj_weight.copy_(self.qkv.weight)
            attention.in_proj_bias.copy_(self.qkv.bias)
            attention.out_proj.weight.copy_(self.proj.weight)
            attention.out_proj.bias.copy_(self.proj.bias)
        blocked = _causal() if self.causal else None
        return self.head((x + reference_attention(attention, x, x, x, mode, blocked)).flatten(1))


@pytest.mark.parametrize("attention", ["cp", "attnlrp"])
@pytest.mark.parametrize("causal", [False, True])
def test_scaled_dot_product_attention_matches_the_reference(causal, attention):
    model = _randomized(SdpaNet(causal=causal).double(), seed=4)
    x = _tokens(seed=5)
    e = xaibench.explain(model, x, "lrp.z", target=2, stabilizer=TINY, attention=attention)
    expected = gradient_x_input(lambda t: model.reference(t, attention), x, 2)
    assert torch.allclose(e.relevance, expected, rtol=1e-9, atol=1e-10 * float(expected.abs().max()))


@pytest.mark.parametrize("heads", [1, 2])
def test_a_per_head_mask_of_multihead_attention(heads):
    """nn.MultiheadAttention's 3-d mask is [batch * heads, queries, keys]: with one head it must
    not be broadcast as [heads, queries, keys] (it would mix the samples' masks)."""
    class PerHead(nn.Module):
        def __init__(self):
            super().__init__()
            self.attention = nn.MultiheadAttention(WIDTH, heads, batch_first=True)
            self.head = nn.Linear(TOKENS * WIDTH, 2)
            generator = torch.Generator().manual_seed(heads)
            self.register_buffer("mask", torch.rand(3 * heads, TOKENS, TOKENS, generator=generator) < 0.3)
            self.mask[:, :, 0] = False   # every query keeps a key

        def forward(self, x):
            return self.head(self.attention(x, x, x, attn_mask=self.mask, need_weights=False)[0].flatten(1))

    model = _randomized(PerHead().double(), seed=12)
    x = _tokens(seed=13)
    e = xaibench.explain(model, x, "lrp.z", target=1, stabilizer=TINY, attention="attnlrp")
    blocked = model.mask.view(3, heads, TOKENS, TOKENS)
    expected = gradient_x_input(lambda t: model.head(reference_attention(model.attention, t, t, t, "attnlrp",
                                                                         blocked).flatten(1)), x, 1)
    assert torch.allclose(e.relevance, expected, rtol=1e-9, atol=1e-10 * float(expected.abs().max()))


def test_scaled_dot_product_attention_on_three_dim_inputs_with_a_keep_mask():
    """F.scaled_dot_product_attention on [batch, tokens, features] (no heads dim), a boolean mask
    whose True entries are kept (the opposite of nn.MultiheadAttention's)."""
    keep = torch.ones(TOKENS, TOKENS, dtype=torch.bool).tril()

    class ThreeDim(nn.Module):
        def __init__(self):
            super().__init__()
            self.q, self.k, self.v = (nn.Linear(WIDTH, WIDTH) for _ in range(3))
            self.head = nn.Linear(TOKENS * WIDTH, 2)
            self.register_buffer("keep", keep)

        def forward(self, x):
            out = F.scaled_dot_product_attention(self.q(x), self.k(x), self.v(x), attn_mask=self.keep)
            return self.head(out.flatten(1))

        def reference(self, x):
            scores = self.q(x) @ self.k(x).transpose(-2, -1) / math.sqrt(WIDTH)
            weights = torch.softmax(scores.masked_fill(~self.keep, float("-inf")), dim=-1).detach()
            return self.head((weights @ self.v(x)).flatten(1))

    model = _randomized(ThreeDim().double(), seed=14)
    x = _tokens(seed=15)
    e = xaibench.explain(model, x, "lrp.z", target=0, stabilizer=TINY)
    expected = gradient_x_input(model.reference, x, 0)
    assert torch.allclose(e.relevance, expected, rtol=1e-9, atol=1e-10 * float(expected.abs().max()))


# --- the transformer zoo: the ledger closes ----------------------------------------------------------
def small_vit():
    from torchvision.models.vision_transformer import VisionTransformer

    model = VisionTransformer(image_size=32, patch_size=8, num_layers=2, num_heads=2, hidden_dim=16, mlp_dim=32,
                              num_classes=5)
    return _randomized(model, seed=6)


def small_swin(v2=False):
    from torchvision.models import swin_transformer as swin

    extra = {"block": swin.SwinTransformerBlockV2, "downsample_layer": swin.PatchMergingV2} if v2 else {}
    # 32x32 -> 8x8 tokens, windows of 4: the second block of each stage is shifted (torch.roll + mask)
    model = swin.SwinTransformer(patch_size=[4, 4], embed_dim=16, depths=[2, 2], num_heads=[2, 2], window_size=[4, 4],
                                 num_classes=5, **extra)
    return _randomized(model, seed=7)


ZOO = {
    "vit": (small_vit, (3, 32, 32)),
    "swin": (small_swin, (3, 32, 32)),
    "swin_v2": (lambda: small_swin(v2=True), (3, 32, 32)),
    "encoder_post_norm": (lambda: _randomized(EncoderNet(norm_first=False, activation="gelu"), 8), (TOKENS, WIDTH)),
    "encoder_pre_norm_causal": (lambda: _randomized(EncoderNet(norm_first=True, causal=True), 9), (TOKENS, WIDTH)),
    "sdpa": (lambda: _randomized(SdpaNet(causal=True), 10), (TOKENS, WIDTH)),
}
RULES = ["lrp.epsilon", "lrp.gamma", "lrp.alpha2beta1", "lrp.zplus", "lrp.epsilon_plus"]


def _input(shape, dtype, batch=2, seed=11):
    return torch.randn((batch,) + shape, generator=torch.Generator().manual_seed(seed)).to(dtype)


@pytest.mark.parametrize("attention", ["cp", "attnlrp"])
@pytest.mark.parametrize("name", sorted(ZOO))
def test_ledger_closes_on_the_transformer_zoo(name, attention):
    build, shape = ZOO[name]
    model = build()
    x = _input(shape, torch.float32)
    for method in RULES:
        assert_ledger_closes(xaibench.explain(model, x, method, attention=attention, dtype=D), 1e-10)
    for method in RULES:
        assert_ledger_closes(xaibench.explain(model, x, method, attention=attention), 1e-5)


@pytest.mark.parametrize("method", ["lrp.alpha2beta1", "lrp.zplus"])
def test_float32_positive_part_rules_through_a_post_norm_layer_norm(method):
    """A LayerNorm after a residual sum, where one element can dominate its row: the off-diagonal
    sums S_g(x) - x_k of the normalization's matrix cancel in float32. Computed so, they left
    ledger residuals of 6e-4 to 1e-3 of the ledger's scale here (7e-5 on the pre-norm encoder);
    computed in float64 (operators.NormalizationOperator._others_sum), 1e-7."""
    build, shape = ZOO["encoder_post_norm"]
    assert_ledger_closes(xaibench.explain(build(), _input(shape, torch.float32), method), 1e-5)


def test_the_vit_books_its_class_token_and_positional_embedding_and_stays_untouched():
    """The class token enters by a concatenation, the positional embedding by an addition: both
    constants, whose shares the ledger books (zennit issue 210: a ViT's relevance lost there)."""
    model = small_vit()
    snapshot = full_snapshot(model)
    x = _input((3, 32, 32), D)
    e = xaibench.explain(model, x, "lrp.epsilon", dtype=D)
    class_token = [row for row in e.ledger if row.layer.startswith("cat")]
    positional = [row for row in e.ledger if row.layer.startswith("add ")]
    assert len(class_token) == 1 and float(class_token[0].absorbed_constant.abs().min()) > 1e-6
    assert positional and float(positional[-1].absorbed_constant.abs().min()) > 1e-6
    assert unchanged(model, snapshot)


def test_swin_books_the_relative_position_bias_and_the_shift_mask():
    model = small_swin()
    e = xaibench.explain(model, _input((3, 32, 32), D), "lrp.epsilon", dtype=D, attention="attnlrp")
    bias_rows = [row for row in e.ledger if "shifted_window_attention_add" in row.layer]
    assert len(bias_rows) >= 4   # every block's position bias, the shifted blocks' masks
    assert all(float(row.absorbed_constant.abs().max()) > 0 for row in bias_rows)
    rolls = [row for row in e.ledger if "roll" in row.kind]
    assert rolls and all(float(row.residual.abs().max()) < 1e-10 for row in rolls)


# --- drawn transformer stacks ------------------------------------------------------------------------
@settings(max_examples=25, deadline=None)
@given(depth=st.integers(1, 3), heads=st.sampled_from([1, 2, 4]), norm_first=st.booleans(),
       activation=st.sampled_from(["relu", "gelu"]), final_norm=st.booleans(), causal=st.booleans(),
       method=st.sampled_from(["lrp.z", "lrp.epsilon", "lrp.gamma", "lrp.alpha2beta1"]),
       attention=st.sampled_from(["cp", "attnlrp"]), seed=st.integers(0, 2**16))
def test_ledger_closes_on_drawn_transformer_stacks(depth, heads, norm_first, activation, final_norm, causal, method,
                                                   attention, seed):
    layer = nn.TransformerEncoderLayer(WIDTH, heads, 12, activation=activation, batch_first=True, norm_first=norm_first)
    encoder = nn.TransformerEncoder(layer, depth, norm=nn.LayerNorm(WIDTH) if final_norm else None,
                                    enable_nested_tensor=False)
    model = _randomized(nn.Sequential(encoder, nn.Flatten(), nn.Linear(TOKENS * WIDTH, 2)), seed).double()
    x = _tokens(batch=2, seed=seed)
    mask = _causal() if causal else None
    if causal:
        class Masked(nn.Module):
            def __init__(self, inner):
                super().__init__()
                self.inner = inner
                self.register_buffer("mask", mask)

            def forward(self, t):
                return self.inner[2](self.inner[1](self.inner[0](t, mask=self.mask)))
        model = Masked(model).eval()
    e = xaibench.explain(model, x, method, attention=attention)
    assert_ledger_closes(e, 1e-10)


# --- what is refused, by name ------------------------------------------------------------------------
class _Wrap(nn.Module):
    def __init__(self, attention):
        super().__init__()
        self.attention = attention

    def forward(self, x):
        return self.attention(x, x, x, need_weights=False)[0].flatten(1)


class _Sdpa(nn.Module):
    def __init__(self, **options):
        super().__init__()
        self.options = options

    def forward(self, x):
        return F.scaled_dot_product_attention(x, x, x, **self.options).flatten(1)


@pytest.mark.parametrize("model, match", [
    (lambda: _Wrap(nn.MultiheadAttention(WIDTH, HEADS)), "batch_first=False"),
    (lambda: _Wrap(nn.MultiheadAttention(WIDTH, HEADS, batch_first=True, add_bias_kv=True)), "add_bias_kv"),
    (lambda: _Sdpa(dropout_p=0.1), "dropout_p=0.1"),
    (lambda: _Sdpa(enable_gqa=True), "enable_gqa"),
], ids=["sequence_first", "bias_kv", "sdpa_dropout", "gqa"])
def test_what_cannot_be_written_out_is_refused_by_name(model, match):
    with pytest.raises(UnsupportedLayerError, match=match):
        xaibench.explain(model().eval(), torch.randn(2, TOKENS, WIDTH), "lrp.epsilon", target=0)


def test_a_roll_over_the_batch_is_refused():
    class Rolled(nn.Module):
        def __init__(self):
            super().__init__()
            self.linear = nn.Linear(WIDTH, 2)

        def forward(self, x):
            return self.linear(torch.roll(x, 1, dims=0)).flatten(1)

    with pytest.raises(UnsupportedLayerError, match="roll over the batch"):
        xaibench.explain(Rolled(), torch.randn(2, TOKENS, WIDTH), "lrp.epsilon", target=0)
