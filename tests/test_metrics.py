"""xaibench.metrics on tiny cases whose answers are known exactly."""

import math

import numpy as np
import pytest
import torch
import xarray as xr
from torch import nn

import xaibench
from xaibench import metrics as M


# --- conservation ------------------------------------------------------------------------------
def test_residual_is_the_relative_gap_between_sum_and_output():
    relevance = np.array([[1.0, 2.0], [3.0, -1.0]])
    assert M.residual(relevance, [3.0, 4.0]).tolist() == [0.0, 0.5]
    assert M.residual(relevance[:1], [0.0]).tolist() == [math.inf]   # a map of a zero output
    assert M.residual(np.zeros((1, 2)), [0.0]).tolist() == [0.0]


def test_ledger_closure_divides_by_the_larger_of_output_and_sum_abs():
    relevance = np.array([[1.0, -3.0]])   # sum |R| = 4
    assert M.ledger_closure(relevance, [2.0], [1.0]).tolist() == [0.25]
    assert M.ledger_closure(relevance, [-8.0], [1.0]).tolist() == [0.125]


def test_conservation_of_a_native_lrp_explanation_matches_the_engine():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 3)).double()
    x = torch.randn(4, 6, dtype=torch.float64)
    explanation = xaibench.explain(model, x, "lrp.epsilon")
    result = M.conservation_residual(explanation)
    # recomputed here from the relevance and the ledger rows, not taken from the explanation
    absorbed = sum(row.absorbed_bias + row.absorbed_stabilizer + row.absorbed_dropped + row.absorbed_constant
                   for row in explanation.ledger.rows)
    closure = (explanation.relevance.sum(1) + absorbed - explanation.output).abs() / torch.maximum(
        explanation.output.abs(), explanation.relevance.abs().sum(1))
    np.testing.assert_allclose(result.ledger_closure, closure.numpy(), rtol=1e-9, atol=1e-18)
    assert result.ledger_closure.max() < 1e-12
    expected = (explanation.relevance.sum(1) - explanation.output).abs() / explanation.output.abs()
    np.testing.assert_allclose(result.residual, expected.numpy(), rtol=1e-12)
    # a gradient has no ledger
    assert M.conservation_residual(xaibench.explain(model, x, "gradient")).ledger_closure is None


def test_ledger_closure_of_an_explanation_divides_its_error_by_the_larger_of_output_and_sum_abs():
    """On a real explanation the closure is 0 exactly, which any formula reproduces: here a
    known non-zero error, so a wrong scale (e.g. |output| alone) shows."""
    from xaibench.explanation import Explanation
    from xaibench.lrp.ledger import Ledger

    explanation = Explanation(relevance=torch.tensor([[1.0, -3.0], [1.0, -3.0]], dtype=torch.float64),
                              output=torch.tensor([2.0, -8.0], dtype=torch.float64), method="lrp.epsilon",
                              backend="native", target=torch.tensor([0, 0]), ledger=Ledger([]),
                              conservation_error=torch.tensor([1.0, 1.0], dtype=torch.float64))
    # sum |R| = 4: 1 / max(2, 4) and 1 / max(8, 4)
    assert M.conservation_residual(explanation).ledger_closure.tolist() == [0.25, 0.125]


def test_conservation_of_an_explanation_file_reports_the_ledger_for_native_lrp_only():
    ds = xr.Dataset({"relevance": (("sample", "x"), [[1.0, 1.0]]), "output": ("sample", [4.0]),
                     "conservation_error": ("sample", [2.0])}, attrs={"backend": "native", "lrp": True})
    result = M.conservation_residual(ds)
    assert result.residual.tolist() == [0.5] and result.ledger_closure.tolist() == [0.5]
    ds.attrs["backend"] = "zennit"
    assert M.conservation_residual(ds).ledger_closure is None
    ds.attrs.update(backend="native", lrp=False)   # integrated gradients' completeness residual: not a ledger
    assert M.conservation_residual(ds).ledger_closure is None


# --- agreement ---------------------------------------------------------------------------------
def test_agreement_scale_is_the_larger_of_sum_abs_reference_and_output():
    relevance = np.array([[1.0, 0.0]])
    reference = np.array([[0.5, 0.5]])   # max difference 0.5, sum |ref| = 1
    assert M.agreement(relevance, reference).tolist() == [0.5]
    assert M.agreement(relevance, reference, output=[4.0]).tolist() == [0.125]
    assert M.agreement(relevance, reference, output=[0.1]).tolist() == [0.5]
    assert M.agreement(reference, reference).tolist() == [0.0]
    assert M.agreement(np.zeros((1, 2)), np.zeros((1, 2))).tolist() == [0.0]
    assert M.agreement(relevance, np.zeros((1, 2)), output=[0.0]).tolist() == [math.inf]
    with pytest.raises(ValueError):
        M.agreement(np.zeros((1, 2)), np.zeros((1, 3)))


def test_agreement_takes_tensors_and_data_arrays():
    a = torch.tensor([[1.0, 2.0], [0.0, 1.0]])
    b = xr.DataArray(np.array([[1.0, 1.0], [0.0, 1.0]]), dims=("sample", "x"))
    assert M.agreement(a, b).tolist() == [0.5, 0.0]



def test_agreement_per_sample_takes_tensors_with_sample_and_target_rows():
    reference = torch.tensor([[[0.5, 0.5], [1.0, 1.0]], [[0.0, 0.0], [0.0, 2.0]]], dtype=torch.float32)
    relevance = reference.clone()
    relevance[0, 0, 0] = 1.0        # sample 0, target 0: 0.5 / 1
    relevance[1, 0, 1] = 1.0        # a map against a zero reference: inf
    per_row = M.agreement_per_sample(relevance, reference, 2)
    assert per_row.dtype == torch.float64 and per_row.shape == (2, 2)
    assert per_row.tolist() == [[0.5, 0.0], [math.inf, 0.0]]
    per_sample = M.agreement_per_sample(relevance, reference)   # one row per sample: scale is the whole map
    assert per_sample.tolist() == [pytest.approx(0.5 / 3), 0.5]

# --- region mass -------------------------------------------------------------------------------
def test_region_mass_of_relevance_inside_the_region_is_one():
    mask = np.zeros((3, 4), dtype=bool)
    mask[1, 1:3] = True
    relevance = np.where(mask, np.array([[2.0, -1.0, 0.5, 3.0]] * 3), 0.0)[None].repeat(2, 0)
    result = M.region_mass(relevance, mask)
    assert result.absolute.tolist() == [1.0, 1.0]
    assert result.positive.tolist() == [1.0, 1.0]


def test_region_mass_shares_exactly():
    relevance = np.array([[[1.0, -1.0], [2.0, 0.0]]])
    mask = np.array([[True, False], [False, False]])
    result = M.region_mass(relevance, mask)
    assert result.absolute.tolist() == [0.25]        # |1| of 1 + 1 + 2
    assert result.positive.tolist() == [1.0 / 3.0]   # 1 of 1 + 2
    empty = M.region_mass(relevance, np.zeros((2, 2), dtype=bool))
    assert np.isnan(empty.absolute).all() and np.isnan(empty.positive).all()
    assert np.isnan(M.region_mass(-np.abs(relevance), mask).positive).all()   # no positive relevance


def test_region_mass_broadcasts_data_arrays_by_dimension_name():
    relevance = np.zeros((2, 2, 3, 4, 4))   # sample, channel, time, y, x
    relevance[0, :, :, 0, 0] = 1.0
    relevance[0, 1, 0, 3, 3] = 3.0
    relevance[1, 0, 2, 2, 2] = 5.0
    core = np.zeros((2, 4, 4), dtype=bool)
    core[:, 0, 0] = True
    result = M.region_mass(xr.DataArray(relevance, dims=("sample", "channel", "time", "y", "x")),
                           xr.DataArray(core, dims=("sample", "y", "x")))
    assert result.absolute.tolist() == [6.0 / 9.0, 0.0]
    with pytest.raises(ValueError, match="broadcast"):
        M.region_mass(relevance, core)


# --- correlations ------------------------------------------------------------------------------
def test_pattern_correlation_is_cos_lat_weighted():
    lat = [0.0, 60.0]          # weights 1 and 1/2
    a = np.array([[1.0], [0.0]])
    b = np.array([[1.0], [1.0]])
    # uncentred: sum w a b / sqrt(sum w a^2 sum w b^2), w = (2/3, 1/3): (2/3) / sqrt(2/3) = sqrt(2/3)
    assert M.pattern_correlation(a, b, lat, centered=False) == pytest.approx(math.sqrt(2.0 / 3.0), rel=1e-14)
    maps = np.random.default_rng(0).normal(size=(3, 4, 5))
    lat = np.linspace(-60, 60, 4)
    np.testing.assert_allclose(M.pattern_correlation(maps, 2 * maps + 1, lat), 1.0, rtol=1e-12)
    np.testing.assert_allclose(M.pattern_correlation(maps, -maps, lat), -1.0, rtol=1e-12)
    assert np.isnan(M.pattern_correlation(np.ones((1, 2, 2)), maps[:1, :2, :2], [0, 10])).all()


def test_spearman_per_sample():
    a = np.array([[1.0, 2.0, 3.0, 4.0], [1.0, 2.0, 3.0, 4.0], [1.0, 1.0, 1.0, 1.0]])
    b = np.array([[1.0, 8.0, 27.0, 64.0], [4.0, 3.0, 2.0, 1.0], [1.0, 2.0, 3.0, 4.0]])
    np.testing.assert_allclose(M.spearman(a, b), [1.0, -1.0, 0.0], rtol=1e-14)
    np.testing.assert_allclose(M.spearman(-a[:1], a[:1], absolute=True), [1.0], rtol=1e-14)
    assert M.spearman(a[2:], a[2:]).tolist() == [1.0]



def test_spearman_per_sample_ranks_magnitudes_per_row():
    a = torch.tensor([[[0.0, 1.0, 2.0], [1.0, 1.0, 1.0]]])   # [sample, target, cells]
    b = torch.tensor([[[0.0, -2.0, 5.0], [0.0, 1.0, 2.0]]])
    values = M.spearman_per_sample(a, b, 2)
    assert values.shape == (2,)
    np.testing.assert_allclose(values, [1.0, 0.0], rtol=1e-14)   # |R| ranks kept; a constant map lost them


# --- channels and time -------------------------------------------------------------------------
def test_channel_shares():
    relevance = np.zeros((1, 2, 3))
    relevance[0, 0] = [1.0, -1.0, 0.0]
    relevance[0, 1] = [0.0, 0.0, 6.0]
    assert M.channel_shares(relevance).tolist() == [[0.25, 0.75]]
    named = xr.DataArray(relevance.transpose(0, 2, 1), dims=("sample", "x", "channel"))
    assert M.channel_shares(named, "channel").tolist() == [[0.25, 0.75]]


def test_temporal_shares_split_the_squares_exactly():
    constant = np.ones((1, 2, 5, 3, 3))   # sample, channel, time, y, x
    assert [v.tolist() for v in M.temporal_shares(constant)] == [[1.0], [0.0]]
    alternating = np.ones((1, 1, 4, 1, 1)) * np.array([1.0, -1.0, 1.0, -1.0])[None, None, :, None, None]
    assert [v.tolist() for v in M.temporal_shares(alternating)] == [[0.0], [1.0]]
    two_frames = np.array([1.0, 3.0]).reshape(1, 1, 2, 1, 1)   # mean 2: static 2 * 4 = 8 of 10
    static, temporal = M.temporal_shares(two_frames)
    assert static.tolist() == [0.8] and temporal == pytest.approx([0.2], rel=1e-15)
    named = xr.DataArray(two_frames, dims=("sample", "channel", "time", "y", "x"))
    assert M.temporal_shares(named, "time")[0].tolist() == [0.8]
    assert np.isnan(M.temporal_shares(np.zeros((1, 1, 2, 1, 1)))[0]).all()


def test_summary_ignores_nan():
    assert M.summary([1.0, np.nan, 3.0]) == {"max": 3.0, "median": 2.0, "mean": 2.0, "n": 2}
    assert M.summary([np.nan])["n"] == 0 and np.isnan(M.summary([np.nan])["max"])
