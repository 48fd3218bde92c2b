"""Attention and transformer layers written out, while tracing, in the operations the engine explains.

torch's nn.MultiheadAttention, F.scaled_dot_product_attention, nn.TransformerEncoderLayer and
nn.TransformerEncoder each compute attention inside one call (a fused kernel, or a long function
with fast paths and checks that symbolic tracing cannot follow). The tracer (graph.py) does not
keep them as single nodes: it records, in their place, what they compute, step by step:

    q, k, v   = F.linear(query, W_q, b_q), F.linear(key, W_k, b_k), F.linear(value, W_v, b_v)
    scores    = (q @ k^T) * scale            per head; masks: blocked entries -inf, float masks added
    weights   = softmax(scores, dim=-1)
    output    = F.linear(concat_heads(weights @ v), W_out, b_out)

Each of these has a rule: the projections are linear layers (the composite's dense rule, their
biases booked in the ledger), the two matrix products the attention rule (CP-LRP holds the
weights constant, AttnLRP's uniform rule), the softmax CP-LRP's constant or AttnLRP's rule,
blocked entries constants (booked). The written-out forward is checked against the model's own
output on every new graph (engine._verify), so a layer computed otherwise is refused, not
explained as something else.

What is refused, by name: batch_first=False (the engine keeps the batch in dim 0), add_bias_kv
and add_zero_attn, attention dropout that is not zero, grouped-query attention (enable_gqa),
a custom activation module the encoder layer calls that the engine has no rule for (refused
where it is traced, as any other module).
"""

from __future__ import annotations

import math

import torch
import torch.fx
import torch.nn.functional as F
from torch import nn

from ..errors import UnsupportedLayerError


# --- masks: computed from constant masks and sizes, so they stay constants in the graph ---------
# Two conventions: nn.MultiheadAttention's (module_layout=True: a boolean True excludes the entry; a
# 3-d mask is [batch * heads, queries, keys]) and F.scaled_dot_product_attention's (a boolean True
# keeps the entry; a mask broadcasts to the scores from the right, whatever their rank).
def _blocked_entries(attn_mask, key_padding_mask, is_causal: bool, module_layout: bool, scores_shape, device):
    """Which attention scores are excluded (True = -inf), broadcasting to the scores."""
    queries, keys = scores_shape[-2], scores_shape[-1]
    blocked = torch.zeros((queries, keys), dtype=torch.bool, device=device)
    if attn_mask is not None:
        mask = _per_head(attn_mask, scores_shape) if module_layout else attn_mask
        if mask.dtype == torch.bool:
            blocked = blocked | (mask if module_layout else ~mask)
        else:
            blocked = blocked | torch.isneginf(mask)
    if key_padding_mask is not None:   # nn.MultiheadAttention only: [batch, keys]
        padding = key_padding_mask
        if padding.dtype != torch.bool:
            padding = torch.isneginf(padding)
        blocked = blocked | padding.reshape(scores_shape[0], 1, 1, keys)
    if is_causal:
        causal = torch.ones((queries, keys), dtype=torch.bool, device=device).tril().logical_not()
        blocked = blocked | causal
    return blocked


def _added_scores(attn_mask, key_padding_mask, module_layout: bool, scores_shape, dtype, device):
    """The finite part of float masks, added to the scores (a bias on them: a constant's share)."""
    added = torch.zeros(scores_shape[-2:], dtype=dtype, device=device)
    for mask, padding in ((attn_mask, False), (key_padding_mask, True)):
        if mask is None or mask.dtype == torch.bool:
            continue
        if padding:
            mask = mask.reshape(scores_shape[0], 1, 1, scores_shape[-1])
        elif module_layout:
            mask = _per_head(mask, scores_shape)
        added = added + torch.where(torch.isneginf(mask), torch.zeros_like(mask), mask).to(dtype)
    return added


def _per_head(mask, scores_shape):
    """nn.MultiheadAttention's [batch * heads, queries, keys] as [batch, heads, queries, keys]
    ([queries, keys] broadcasts as it is)."""
    if mask.dim() == 3:
        return mask.reshape(scores_shape[0], scores_shape[1], mask.shape[1], mask.shape[2])
    return mask


torch.fx.wrap("_blocked_entries")
torch.fx.wrap("_added_scores")


def _masked(scores, attn_mask, key_padding_mask, is_causal, module_layout):
    """Scores with the masks applied: float masks added, blocked entries filled with -inf (constants)."""
    if attn_mask is None and key_padding_mask is None and not is_causal:
        return scores
    # sizes, dtype and device are read off the scores when the graph runs (meta nodes, not relevance paths)
    shape, device = scores.shape, scores.device
    if _maybe_float(attn_mask) or _maybe_float(key_padding_mask):
        scores = scores + _added_scores(attn_mask, key_padding_mask, module_layout, shape, scores.dtype, device)
    return scores.masked_fill(_blocked_entries(attn_mask, key_padding_mask, is_causal, module_layout, shape, device),
                              float("-inf"))


def _maybe_float(mask) -> bool:
    """A traced mask's dtype is only known when the graph runs: assume it may be a float mask
    (a zero addition for a boolean one), unless it is a real boolean tensor."""
    return mask is not None and not (torch.is_tensor(mask) and mask.dtype == torch.bool)


# --- the written-out forwards ------------------------------------------------------------------
def scaled_dot_product_attention(path, query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False,
                                 scale=None, enable_gqa=False):
    """F.scaled_dot_product_attention as torch's documentation defines it (its math reference)."""
    kind = "scaled_dot_product_attention"
    if isinstance(dropout_p, torch.fx.Proxy) or dropout_p != 0:
        raise UnsupportedLayerError(path, kind, f"dropout_p={dropout_p}: the function drops attention weights at "
                                    "random whatever the model's mode; pass dropout_p=0.0 when not training")
    if enable_gqa:
        raise UnsupportedLayerError(path, kind, "enable_gqa=True (grouped-query attention) is not supported")
    if scale is None:
        scale = query.shape[-1] ** -0.5
    scores = torch.matmul(query, key.transpose(-2, -1)) * scale
    scores = _masked_sdpa(scores, attn_mask, is_causal)
    weights = torch.softmax(scores, dim=-1)
    return torch.matmul(weights, value)


def _masked_sdpa(scores, attn_mask, is_causal):
    if attn_mask is None and not is_causal:
        return scores
    # the scores' leading dims may be anything broadcasting (batch, heads): the masks broadcast over them
    return _masked(scores, attn_mask, None, is_causal, module_layout=False)


def multihead_attention(path, module: nn.MultiheadAttention, query, key, value, key_padding_mask=None,
                        need_weights=True, attn_mask=None, average_attn_weights=True, is_causal=False):
    """nn.MultiheadAttention (batch_first=True) as F.multi_head_attention_forward computes it in evaluation."""
    kind = "MultiheadAttention"
    if not module.batch_first:
        raise UnsupportedLayerError(path, kind, "batch_first=False (sequence first): the engine keeps the batch "
                                    "in dim 0; build the layer with batch_first=True and pass [batch, sequence, "
                                    "features]")
    if module.bias_k is not None or module.add_zero_attn:
        raise UnsupportedLayerError(path, kind, "add_bias_kv / add_zero_attn (constant keys and values appended) "
                                    "are not supported")
    if module.training and module.dropout > 0:
        raise UnsupportedLayerError(path, kind, f"attention dropout {module.dropout} in training mode")
    if is_causal and attn_mask is None:
        raise UnsupportedLayerError(path, kind, "is_causal=True without attn_mask (torch requires the mask)")
    embed, heads = module.embed_dim, module.num_heads
    if module._qkv_same_embed_dim:
        weights = (module.in_proj_weight[:embed], module.in_proj_weight[embed:2 * embed],
                   module.in_proj_weight[2 * embed:])
    else:
        weights = (module.q_proj_weight, module.k_proj_weight, module.v_proj_weight)
    biases = (None, None, None) if module.in_proj_bias is None else \
        (module.in_proj_bias[:embed], module.in_proj_bias[embed:2 * embed], module.in_proj_bias[2 * embed:])
    q, k, v = (F.linear(t, w, b) for t, w, b in zip((query, key, value), weights, biases))
    # [batch, tokens, embed] -> [batch, heads, tokens, head_dim]
    q, k, v = (t.unflatten(-1, (heads, module.head_dim)).transpose(1, 2) for t in (q, k, v))
    scores = torch.matmul(q, k.transpose(-2, -1)) * (module.head_dim ** -0.5)
    # torch ignores is_causal when attn_mask is given (the mask is the causal one)
    scores = _masked(scores, attn_mask, key_padding_mask, False, module_layout=True)
    attention = torch.softmax(scores, dim=-1)
    heads_out = torch.matmul(attention, v).transpose(1, 2).flatten(-2)
    out = F.linear(heads_out, module.out_proj.weight, module.out_proj.bias)
    if not need_weights:
        return out, None
    return out, attention.mean(dim=1) if average_attn_weights else attention


def transformer_encoder_layer(path, layer: nn.TransformerEncoderLayer, src, src_mask=None,
                              src_key_padding_mask=None, is_causal=False):
    """nn.TransformerEncoderLayer's forward without its fast path (the same arithmetic)."""
    if not layer.self_attn.batch_first:
        raise UnsupportedLayerError(path, "TransformerEncoderLayer", "batch_first=False (sequence first): the "
                                    "engine keeps the batch in dim 0; build the layer with batch_first=True")

    def attention_block(x):
        out = layer.self_attn(x, x, x, attn_mask=src_mask, key_padding_mask=src_key_padding_mask,
                              need_weights=False, is_causal=is_causal)[0]
        return layer.dropout1(out)

    def feedforward_block(x):
        return layer.dropout2(layer.linear2(layer.dropout(layer.activation(layer.linear1(x)))))

    x = src
    if layer.norm_first:
        x = x + attention_block(layer.norm1(x))
        x = x + feedforward_block(layer.norm2(x))
    else:
        x = layer.norm1(x + attention_block(x))
        x = layer.norm2(x + feedforward_block(x))
    return x


def transformer_encoder(path, encoder: nn.TransformerEncoder, src, mask=None, src_key_padding_mask=None,
                        is_causal=None):
    """nn.TransformerEncoder: its layers in turn, then its norm."""
    x = src
    for layer in encoder.layers:
        x = layer(x, src_mask=mask, src_key_padding_mask=src_key_padding_mask, is_causal=bool(is_causal))
    if encoder.norm is not None:
        x = encoder.norm(x)
    return x


# --- torchvision's Swin Transformer ---------------------------------------------------------------
def _shift_window_mask(pad_height, pad_width, window_size, shift_size, like):
    """The additive mask of shifted windows (0 within a region, -100 across regions, as torchvision
    builds it with in-place writes): [windows, 1, tokens, tokens], in `like`'s dtype and device
    (the relative position bias: a constant). A constant of the sizes."""
    mask = torch.zeros((pad_height, pad_width), dtype=like.dtype, device=like.device)
    rows = ((0, -window_size[0]), (-window_size[0], -shift_size[0]), (-shift_size[0], None))
    cols = ((0, -window_size[1]), (-window_size[1], -shift_size[1]), (-shift_size[1], None))
    count = 0
    for row in rows:
        for col in cols:
            mask[row[0]:row[1], col[0]:col[1]] = count
            count += 1
    windows = (pad_height // window_size[0]) * (pad_width // window_size[1])
    mask = mask.view(pad_height // window_size[0], window_size[0], pad_width // window_size[1], window_size[1])
    mask = mask.permute(0, 2, 1, 3).reshape(windows, window_size[0] * window_size[1])
    mask = mask.unsqueeze(1) - mask.unsqueeze(2)
    mask = mask.masked_fill(mask != 0, -100.0).masked_fill(mask == 0, 0.0)
    return mask.unsqueeze(1)


def _query_key_value_bias(qkv_bias, cosine: bool):
    """Swin V2 zeroes the key's bias (torchvision does it on a copy at every call)."""
    if qkv_bias is None or not cosine:
        return qkv_bias
    bias = qkv_bias.clone()
    length = bias.numel() // 3
    bias[length:2 * length] = 0
    return bias


torch.fx.wrap("_shift_window_mask")
torch.fx.wrap("_query_key_value_bias")


def shifted_window_attention(path, input, qkv_weight, proj_weight, relative_position_bias, window_size,
                             num_heads, shift_size, attention_dropout=0.0, dropout=0.0, qkv_bias=None,
                             proj_bias=None, logit_scale=None, training=True):
    """torchvision.models.swin_transformer.shifted_window_attention, the same arithmetic: padding to
    whole windows, the cyclic shift (torch.roll: a permutation, relevance rolled back), windows as
    a batch of token sets, attention with the relative position bias and the shift mask added
    (constants: their shares booked), heads merged, projection, windows and shift undone. Swin V2's
    cosine attention divides q and k by their norms, held constant (as LayerNorm's std)."""
    kind = "shifted_window_attention"
    if training and (attention_dropout > 0 or dropout > 0):
        raise UnsupportedLayerError(path, kind, "dropout in training mode")
    batch, height, width, channels = _static_shape(input, kind)
    pad_right = (window_size[1] - width % window_size[1]) % window_size[1]
    pad_bottom = (window_size[0] - height % window_size[0]) % window_size[0]
    x = F.pad(input, (0, 0, 0, pad_right, 0, pad_bottom))
    pad_height, pad_width = height + pad_bottom, width + pad_right
    shift = list(shift_size)
    if window_size[0] >= pad_height:   # a window as large as the map: no shift (torchvision's rule)
        shift[0] = 0
    if window_size[1] >= pad_width:
        shift[1] = 0
    if sum(shift) > 0:
        x = torch.roll(x, shifts=(-shift[0], -shift[1]), dims=(1, 2))
    # windows as a dim of their own beside the batch (torchvision merges them into the batch; the
    # engine keeps every sample's relevance apart, so the batch stays dim 0): [batch, windows, tokens, C]
    rows, cols = pad_height // window_size[0], pad_width // window_size[1]
    windows, tokens, head_dim = rows * cols, window_size[0] * window_size[1], channels // num_heads
    x = x.view(batch, rows, window_size[0], cols, window_size[1], channels)
    x = x.permute(0, 1, 3, 2, 4, 5).reshape(batch, windows, tokens, channels)
    qkv = F.linear(x, qkv_weight, _query_key_value_bias(qkv_bias, logit_scale is not None))
    qkv = qkv.reshape(batch, windows, tokens, 3, num_heads, head_dim)
    # [batch, windows, heads, tokens, head_dim] each
    q, k, v = (qkv[:, :, :, part].permute(0, 1, 3, 2, 4) for part in range(3))
    if logit_scale is not None:
        q = q / q.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        k = k / k.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        scores = torch.matmul(q, k.transpose(-2, -1)) * torch.clamp(logit_scale, max=math.log(100.0)).exp()
    else:
        scores = torch.matmul(q * head_dim ** -0.5, k.transpose(-2, -1))
    scores = scores + relative_position_bias          # [1, heads, tokens, tokens]: a constant
    if sum(shift) > 0:                                # [windows, 1, tokens, tokens]: a constant
        scores = scores + _shift_window_mask(pad_height, pad_width, window_size, shift, relative_position_bias)
    attention = torch.softmax(scores, dim=-1)
    x = torch.matmul(attention, v).permute(0, 1, 3, 2, 4).reshape(batch, windows, tokens, channels)
    x = F.linear(x, proj_weight, proj_bias)
    x = x.view(batch, rows, cols, window_size[0], window_size[1], channels)
    x = x.permute(0, 1, 3, 2, 4, 5).reshape(batch, pad_height, pad_width, channels)
    if sum(shift) > 0:
        x = torch.roll(x, shifts=(shift[0], shift[1]), dims=(1, 2))
    return x[:, :height, :width, :]


def _static_shape(t, what):
    """The sizes of a traced tensor where the trace knows them (the engine's trace specialized to
    the input's shapes, graph._shape_tracer). The symbolic trace does not: its TraceError makes the
    engine trace again with the input's shapes (as for any size-dependent Python branch)."""
    if torch.is_tensor(t):
        return tuple(t.shape)
    meta = getattr(t, "_tensor_meta", None)
    if meta is None:
        raise torch.fx.proxy.TraceError(f"{what} branches on the input's sizes")
    return tuple(meta.shape)


def patch_merging_pad(path, x):
    """torchvision's _patch_merging_pad: the four interleaved sub-grids side by side (selections)."""
    height, width = x.shape[-3], x.shape[-2]
    x = F.pad(x, (0, 0, 0, width % 2, 0, height % 2))
    parts = [x[..., 0::2, 0::2, :], x[..., 1::2, 0::2, :], x[..., 0::2, 1::2, :], x[..., 1::2, 1::2, :]]
    return torch.cat(parts, -1)


def _torchvision_functions():
    """torchvision's Swin functions (fx-wrapped there, so traced as single calls): written out."""
    try:
        from torchvision.models import swin_transformer
    except ImportError:   # torchvision is optional for the engine
        return {}
    return {swin_transformer.shifted_window_attention: shifted_window_attention,
            swin_transformer._patch_merging_pad: patch_merging_pad}


#: module type -> its written-out forward (exact types: a subclass may compute otherwise)
MODULES = {
    nn.MultiheadAttention: multihead_attention,
    nn.TransformerEncoderLayer: transformer_encoder_layer,
    nn.TransformerEncoder: transformer_encoder,
}

#: functions written out
FUNCTIONS = {F.scaled_dot_product_attention: scaled_dot_product_attention, **_torchvision_functions()}


def module_forward(module: nn.Module):
    """The written-out forward of a module, or None. A subclass that keeps the base forward is
    written out as its base; one with its own forward is traced as it is."""
    for base, forward in MODULES.items():
        if isinstance(module, base) and type(module).forward is base.forward:
            return forward
    return None


class DecomposingTracer:
    """Mixin for a torch.fx tracer: records the written-out forward of the modules and functions
    above instead of one opaque node, with the module's path in the names of the nodes."""

    def call_module(self, m, forward, args, kwargs):
        written_out = module_forward(m)
        if written_out is None:
            return super().call_module(m, forward, args, kwargs)
        path = self.path_of_module(m)
        outer, self._decomposing = getattr(self, "_decomposing", None), path
        try:
            return written_out(path, m, *args, **kwargs)
        finally:
            self._decomposing = outer

    def create_proxy(self, kind, target, args, kwargs, name=None, *rest, **extra):
        if kind == "call_function" and target in FUNCTIONS:
            # named after the module calling it (tracer.module_stack: path -> type) and the function
            stack = list(getattr(self, "module_stack", {}) or {})
            caller = getattr(self, "_decomposing", None) or (stack[-1] if stack and stack[-1] else "")
            path = f"{caller}.{target.__name__.strip('_')}" if caller else target.__name__.strip("_")
            outer, self._decomposing = getattr(self, "_decomposing", None), path
            try:
                return FUNCTIONS[target](path, *args, **kwargs)
            finally:
                self._decomposing = outer
        scope = getattr(self, "_decomposing", None)
        if scope is not None and kind != "get_attr":
            base = name or (target if isinstance(target, str) else getattr(target, "__name__", "op"))
            name = f"{scope.replace('.', '_')}_{base.strip('_')}"
        return super().create_proxy(kind, target, args, kwargs, name, *rest, **extra)
