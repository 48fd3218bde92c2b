"""The ledger is a real check everywhere (issue 14, items 13 and 15).

A rule that books what it loses as a difference of sums can never show an error; these tests
break a step on purpose and require the ledger to see it, and pin the default z^B bounds.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from strategies import randomize
from torch import nn

import xaibench
from xaibench.lrp import steps


class _PadSlice(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 3)
        self.head = nn.Linear(2 * 5 * 5, 2)

    def forward(self, x):
        h = F.pad(x, (1, 1, 1, 1))[:, :, 1:, :]
        return self.head(self.conv(h)[:, :, :5, :5].flatten(1))


def _pad_slice_case():
    return randomize(_PadSlice(), seed=1).double().eval(), torch.randn(
        3, 1, 6, 6, generator=torch.Generator().manual_seed(2), dtype=torch.float64)


@pytest.mark.parametrize("method", ["lrp.epsilon", "lrp.flat"])
def test_padding_and_slicing_close_the_ledger(method):
    model, x = _pad_slice_case()
    e = xaibench.explain(model, x, method)
    assert float(e.relative_conservation_error.max()) < 1e-12
    if method == "lrp.flat":  # flat sends relevance onto the padding: booked as constant there
        pad = [r for r in e.ledger.rows if r.layer.startswith("pad")]
        assert pad and float(pad[0].absorbed_constant.abs().sum()) > 0


def test_a_selection_that_passes_half_its_relevance_is_seen_by_the_ledger(monkeypatch):
    """Before, SelectStep booked total(R_out) - total(R_in) as absorbed, so this broken step read
    a conservation error of 1e-16."""
    model, x = _pad_slice_case()
    original = steps.SelectStep.adjoint
    monkeypatch.setattr(steps.SelectStep, "adjoint", lambda self, values, s: original(self, values, s) * 0.5)
    e = xaibench.explain(model, x, "lrp.epsilon")
    assert float(e.relative_conservation_error.min()) > 1e-3
    residuals = [float(r.residual.abs().max()) for r in e.ledger.rows if r.rule == "Select"]
    assert max(residuals) > 1e-3


def test_default_zbox_bounds_are_each_samples_own_min_and_max():
    """Two samples with very different ranges: the default bounds must be per sample (batch-wide
    bounds would give the first sample the second's range)."""
    model = randomize(nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.ReLU(), nn.Flatten(),
                                    nn.Linear(2 * 16, 2)), seed=3).double().eval()
    generator = torch.Generator().manual_seed(4)
    x = torch.randn(2, 1, 4, 4, generator=generator, dtype=torch.float64)
    x[1] = x[1] * 20.0 + 5.0
    default = xaibench.explain(model, x, "lrp.zbox", target=0)
    flat = x.reshape(2, -1)
    low = flat.min(1).values.view(2, 1, 1, 1).expand_as(x)
    high = flat.max(1).values.view(2, 1, 1, 1).expand_as(x)
    explicit = xaibench.explain(model, x, "lrp.zbox", target=0, low=low, high=high)
    torch.testing.assert_close(default.relevance, explicit.relevance, rtol=0, atol=1e-13)
    batch_wide = xaibench.explain(model, x, "lrp.zbox", target=0, low=float(flat.min()), high=float(flat.max()))
    assert float((batch_wide.relevance[0] - default.relevance[0]).abs().max()) > 1e-3
    # each sample on its own gets the same map as in the batch
    for i in range(2):
        alone = xaibench.explain(model, x[i:i + 1], "lrp.zbox", target=0)
        torch.testing.assert_close(alone.relevance[0], default.relevance[i], rtol=0, atol=1e-13)


def test_default_zbox_bounds_match_the_dense_reference_with_each_samples_range():
    """An independent computation of the default: the z^B formula of the dense-matrix reference
    on one linear layer, with each sample's own min and max as its bounds (samples of very
    different ranges, so batch-wide bounds would differ)."""
    from xaibench.lrp.reference import layer_matrix
    from xaibench.lrp.reference import relevance as reference_relevance

    layer = randomize(nn.Sequential(nn.Linear(6, 3)), seed=7).double().eval()
    x = torch.randn(3, 6, generator=torch.Generator().manual_seed(8), dtype=torch.float64)
    x[1] = x[1] * 10.0 + 4.0
    x[2] = x[2] * 0.1 - 2.0
    e = xaibench.explain(layer, x, "lrp.zbox", target=0)
    M, b = layer_matrix(layer, (6,))
    for i in range(3):
        r_out = torch.zeros(3, dtype=torch.float64)
        r_out[0] = e.output[i]
        low = torch.full((6,), float(x[i].min()), dtype=torch.float64)
        high = torch.full((6,), float(x[i].max()), dtype=torch.float64)
        expected = reference_relevance("zbox", M, b, x[i], r_out, low=low, high=high)
        torch.testing.assert_close(e.relevance[i], expected, rtol=0, atol=1e-10)


class _PlusBuffer(nn.Module):
    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(3, 3)
        self.register_buffer("offset", torch.tensor([2.0, -1.0, 0.5]))
        self.head = nn.Linear(3, 2)

    def forward(self, x):
        return self.head(torch.relu(self.linear(x) + self.offset))


def test_relevance_sent_to_a_constant_is_booked_as_absorbed():
    model = randomize(_PlusBuffer(), seed=5).double().eval()
    x = torch.randn(4, 3, generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    e = xaibench.explain(model, x, "lrp.epsilon")
    assert float(e.relative_conservation_error.max()) < 1e-12
    constant = sum(float(r.absorbed_constant.abs().sum()) for r in e.ledger.rows)
    assert constant > 1e-3  # the buffer's share of the sum


@pytest.mark.parametrize("stabilizer", [1e-6, 0.5])
def test_the_norm_rule_takes_the_stabilizer_option(stabilizer):
    model = nn.Sequential(nn.AvgPool1d(2), nn.Flatten(), nn.Linear(3, 1)).double().eval()
    with torch.no_grad():
        model[2].weight.fill_(1.0)
        model[2].bias.zero_()
    x = torch.tensor([[[1.0, 3.0, -2.0, 0.5, 4.0, 4.0]]], dtype=torch.float64)
    e = xaibench.explain(model, x, "lrp.z", stabilizer=stabilizer, bias=False)
    pooled = x.view(1, 1, 3, 2).mean(-1)
    # z-rule at the dense layer (stabilizer on z), then at the pool: R_i = x_i / 2 / (p + eps sign p) R_p
    z = pooled.sum()
    r_pooled = pooled / (z + stabilizer) * z
    expected = (x.view(1, 1, 3, 2) / 2 / (pooled + torch.where(pooled >= 0, stabilizer, -stabilizer))[..., None]
                * r_pooled[..., None]).view(1, 1, 6)
    torch.testing.assert_close(e.relevance, expected, rtol=1e-12, atol=1e-14)


def test_the_stabilizer_takes_sign_zero_as_plus():
    """zennit's convention, which the engine and the reference share: a zero denominator becomes
    +epsilon (innvestigate uses -epsilon in some rules, which flips relevance there)."""
    from xaibench.lrp.stabilizer import stabilize

    denominator = torch.tensor([-2.0, 0.0, 3.0], dtype=torch.float64)
    stabilized, shift = stabilize(denominator, 0.1)
    assert shift.tolist() == [-0.1, 0.1, 0.1]
    assert stabilized.tolist() == [-2.1, 0.1, 3.1]
