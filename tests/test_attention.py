"""Attention: the matrix-product rule (CP-LRP's attention weights held constant, or AttnLRP's
uniform rule) and AttnLRP's softmax rule, checked against an independent reference.

The reference is gradient x input by autograd (LXT's "efficient" formulation): with the
z-rule on linear layers and the identity rule on ReLU, LRP equals gradient x input of the
network in which (CP-LRP) the attention weights are detached, or (AttnLRP) the gradient into
each factor of a product of two input-dependent tensors is halved. The softmax's own
gradient x input is AttnLRP's softmax rule, so the reference needs nothing else.
"""

import pytest
import torch
from torch import nn

import xaibench
from xaibench.errors import UnsupportedLayerError

TINY = 1e-30  # stabilizer: the z-rule becomes exactly gradient x input up to rounding


class _Halve(torch.autograd.Function):
    @staticmethod
    def forward(ctx, t):
        return t.view_as(t)

    @staticmethod
    def backward(ctx, grad):
        return grad * 0.5


class Attention(nn.Module):
    """One head of self-attention written out, with a residual MLP after it; `mode` only
    changes the backward pass (for the reference): None, 'cp' or 'attnlrp'."""

    def __init__(self, dim=6, tokens=5, causal=False):
        super().__init__()
        self.q, self.k, self.v = nn.Linear(dim, dim), nn.Linear(dim, dim), nn.Linear(dim, dim)
        self.out = nn.Linear(dim, dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.ReLU(), nn.Linear(2 * dim, dim))
        self.head = nn.Linear(dim * tokens, 3)
        self.causal = causal
        self.mode = None

    def forward(self, x):
        q, k, v = self.q(x), self.k(x), self.v(x)
        if self.mode == "attnlrp":
            q, k = _Halve.apply(q), _Halve.apply(k)
        scores = q @ k.transpose(-2, -1) * (q.shape[-1] ** -0.5)
        if self.causal:
            n = x.shape[1]
            mask = torch.ones(n, n, dtype=torch.bool).triu(1)
            scores = scores.masked_fill(mask, float("-inf"))
        weights = torch.softmax(scores, dim=-1)
        if self.mode == "cp":
            weights = weights.detach()
        if self.mode == "attnlrp":
            weights, v = _Halve.apply(weights), _Halve.apply(v)
        h = x + self.out(weights @ v)
        h = h + self.mlp(h)
        return self.head(h.flatten(1))


def _reference(model, x, target, mode):
    model.mode = mode
    try:
        x = x.clone().requires_grad_(True)
        model(x)[:, target].sum().backward()
        return (x * x.grad).detach()
    finally:
        model.mode = None


def _network(seed=0, **kw):
    torch.manual_seed(seed)
    return Attention(**kw).double().eval()


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("attention", ["cp", "attnlrp"])
def test_attention_rules_match_gradient_x_input_reference(attention, causal):
    model = _network(causal=causal)
    x = torch.randn(4, 5, 6, dtype=torch.float64)
    e = xaibench.explain(model, x, method="lrp.z", target=1, stabilizer=TINY, attention=attention)
    expected = _reference(model, x, 1, attention)
    assert torch.isfinite(e.relevance).all()
    assert torch.allclose(e.relevance, expected, rtol=1e-9, atol=1e-10 * expected.abs().max())


def test_the_two_attention_rules_differ():
    model = _network()
    x = torch.randn(3, 5, 6, dtype=torch.float64)
    cp = xaibench.explain(model, x, method="lrp.z", target=0, stabilizer=TINY)
    attn = xaibench.explain(model, x, method="lrp.z", target=0, stabilizer=TINY, attention="attnlrp")
    assert (cp.relevance - attn.relevance).abs().max() > 1e-3 * cp.relevance.abs().max()


@pytest.mark.parametrize("attention", ["cp", "attnlrp"])
@pytest.mark.parametrize("method", ["lrp.epsilon", "lrp.gamma", "lrp.alpha2beta1"])
def test_ledger_closes_through_attention(attention, method):
    model = _network(seed=1, causal=True)
    x = torch.randn(3, 5, 6, dtype=torch.float64)
    e = xaibench.explain(model, x, method=method, target=2, attention=attention)
    assert float(e.conservation_error.max()) < 1e-10 * (1 + float(e.output.abs().max()))
    rules = {row.rule for row in e.ledger.rows}
    assert any("CP-LRP" in r for r in rules) == (attention == "cp")


def test_attnlrp_books_the_softmax_bias_in_the_ledger():
    model = _network(seed=2)
    x = torch.randn(2, 5, 6, dtype=torch.float64)
    e = xaibench.explain(model, x, method="lrp.z", target=0, attention="attnlrp")
    rows = [row for row in e.ledger.rows if "Softmax" in row.rule]
    assert len(rows) == 1
    assert float(rows[0].absorbed_bias.abs().max()) > 0  # the linearization's bias takes a share


class SoftmaxInside(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(4, 4), nn.Linear(4, 2)

    def forward(self, x):
        return self.b(torch.softmax(self.a(x), dim=-1))


def test_a_softmax_that_is_not_attention_weights_is_refused_under_cp_and_explained_under_attnlrp():
    torch.manual_seed(0)
    model = SoftmaxInside().double().eval()
    x = torch.randn(3, 4, dtype=torch.float64)
    with pytest.raises(UnsupportedLayerError, match="attention='attnlrp'"):
        xaibench.explain(model, x, method="lrp.epsilon", target=0)
    e = xaibench.explain(model, x, method="lrp.z", target=0, attention="attnlrp", stabilizer=TINY)
    xr = x.clone().requires_grad_(True)
    model(xr)[:, 0].sum().backward()
    assert torch.allclose(e.relevance, xr * xr.grad, rtol=1e-9, atol=1e-12)


def test_unknown_attention_mode_is_named():
    with pytest.raises(ValueError, match="attention must be one of"):
        xaibench.explain(_network(), torch.randn(1, 5, 6, dtype=torch.float64), method="lrp.epsilon",
                         target=0, attention="softmax")


class FilledFeatures(nn.Module):
    """masked_fill with a finite value on features: the filled entries are constants that
    take relevance from the layer after them."""

    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(6, 6), nn.Linear(6, 2)
        self.register_buffer("mask", torch.tensor([True, False, False, True, False, False]))

    def forward(self, x):
        return self.b(self.a(x).masked_fill(self.mask, 2.0))


def test_masked_fill_books_the_filled_entries_as_constants():
    torch.manual_seed(3)
    model = FilledFeatures().double().eval()
    x = torch.randn(4, 6, dtype=torch.float64)
    e = xaibench.explain(model, x, method="lrp.z", target=1, stabilizer=TINY)
    expected = _reference(model, x, 1, None)
    assert torch.allclose(e.relevance, expected, rtol=1e-9, atol=1e-12)
    row = next(r for r in e.ledger.rows if r.kind == "Tensor.masked_fill")
    assert float(row.absorbed_constant.abs().min()) > 0
    assert float(e.conservation_error.max()) < 1e-10 * (1 + float(e.output.abs().max()))
