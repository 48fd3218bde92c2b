"""The ground-truth attribution benchmark: the data's exact attribution, the true function as a
network, the scores, and a tiny end-to-end run (xaibench.studies.data.groundtruth, xaibench.studies.groundtruth)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

import xaibench
from xaibench import metrics
from xaibench.cli import main as cli_main
from xaibench.errors import InputError
from xaibench.studies.data import make_groundtruth, write_dataset
from xaibench.studies.data.groundtruth import (
    attribution,
    correlation_matrix,
    ledoit_wolf_shrinkage,
    piecewise_linear,
    to_map,
)
from xaibench.studies.groundtruth.benchmark import (
    CORRELATION_COLUMNS,
    explain_benchmark,
    score_benchmark,
    true_response_network,
)


@pytest.fixture(scope="module")
def small():
    """Every 3rd latitude and longitude of the HadISST grid: about 50 ocean cells."""
    return make_groundtruth(n_samples=400, stride=3, seed=1)


# --- the ground truth ------------------------------------------------------------------------------
def test_linear_response_ground_truth_is_input_times_gradient_of_the_true_function():
    ds = make_groundtruth(n_samples=64, stride=3, n_breakpoints=0, seed=2)
    x = torch.from_numpy(ds["sst_anomaly"].values.astype(np.float64))
    truth = attribution(ds)
    # by hand: F = (1/D) sum_i s_i x_i, so dF/dx_i = s_i / D
    by_hand = x.numpy() * ds["slopes"].values[0] / ds.sizes["cell"]
    np.testing.assert_allclose(truth, by_hand, rtol=0, atol=1e-15)
    explained = xaibench.explain(true_response_network(ds), x, "input_x_gradient", target=0, dtype=torch.float64)
    np.testing.assert_allclose(explained.relevance.numpy(), truth, rtol=0, atol=1e-15)


def test_attribution_sums_to_the_response_and_passes_through_zero(small):
    truth = attribution(small)
    np.testing.assert_allclose(truth.sum(1), small["response"].values, rtol=1e-5, atol=1e-7)  # response is float32
    zero = piecewise_linear(np.zeros((1, small.sizes["cell"])), small["breakpoints"].values, small["slopes"].values)
    assert np.all(zero == 0)


def test_piecewise_linear_has_the_drawn_slopes_and_is_continuous(small):
    breakpoints, slopes = small["breakpoints"].values, small["slopes"].values
    assert np.all(np.diff(breakpoints, axis=0) > 0) and np.any(breakpoints == 0)
    cells = breakpoints.shape[1]
    edges = np.concatenate([breakpoints[:1] - 1.0, breakpoints, breakpoints[-1:] + 1.0])
    for k in range(slopes.shape[0]):   # a point inside each piece: the finite difference is that slope
        middle = 0.5 * (edges[k] + edges[k + 1])
        step = 1e-4 * np.minimum(1.0, edges[k + 1] - edges[k])
        slope = (piecewise_linear((middle + step)[None], breakpoints, slopes)
                 - piecewise_linear((middle - step)[None], breakpoints, slopes))[0] / (2 * step)
        np.testing.assert_allclose(slope, slopes[k], rtol=1e-6, atol=1e-9)
    for k in range(breakpoints.shape[0]):   # no jump at a breakpoint
        left = piecewise_linear((breakpoints[k] - 1e-9)[None], breakpoints, slopes)
        right = piecewise_linear((breakpoints[k] + 1e-9)[None], breakpoints, slopes)
        np.testing.assert_allclose(left, right, atol=1e-8)
    assert cells == small.sizes["cell"]


def test_true_response_network_reproduces_the_response(small):
    network = true_response_network(small)
    x = torch.from_numpy(small["sst_anomaly"].values.astype(np.float64))
    with torch.no_grad():
        output = network(x).reshape(-1).numpy()
    np.testing.assert_allclose(output, attribution(small).sum(1), rtol=0, atol=1e-13)


def test_integrated_gradients_and_occlusion_of_the_true_function_are_exact(small):
    """F is additive with C_i(0) = 0: IG from 0 and occlusion with fill 0 give C_i(X_i)/D."""
    network = true_response_network(small)
    x = torch.from_numpy(small["sst_anomaly"].values[:16].astype(np.float64))
    truth = attribution(small, slice(0, 16))
    occlusion = xaibench.explain(network, x, "occlusion", target=0, dtype=torch.float64, patch=1, fill=0.0)
    np.testing.assert_allclose(occlusion.relevance.numpy(), truth, rtol=0, atol=1e-13)
    coarse, fine = (xaibench.explain(network, x, "integrated_gradients", target=0, dtype=torch.float64,
                                     steps=steps).relevance.numpy() for steps in (8, 512))
    error_coarse, error_fine = np.abs(coarse - truth).max(), np.abs(fine - truth).max()
    # the slope jumps at breakpoints: a Riemann sum errs by O(1/steps) per jump crossed
    assert error_fine < error_coarse / 10 and error_fine < 1e-2 * np.abs(truth).max()


# --- the input correlation -------------------------------------------------------------------------
def test_correlation_matrix_is_a_positive_definite_correlation():
    correlation, shrinkage, grid = correlation_matrix(stride=2)
    assert 0 < shrinkage < 1
    np.testing.assert_allclose(np.diag(correlation), 1.0, atol=1e-12)
    assert np.linalg.eigvalsh(correlation).min() >= shrinkage - 1e-12   # (1 - l) R + l I, R >= 0
    assert correlation.shape == (grid["lat"].size,) * 2


def test_ledoit_wolf_matches_its_definition():
    generator = np.random.default_rng(0)
    data = generator.standard_normal((20, 6)) @ generator.standard_normal((6, 6))
    data -= data.mean(0)
    n, p = data.shape
    sample = data.T @ data / n
    mu = np.trace(sample) / p
    d2 = np.sum((sample - mu * np.eye(p)) ** 2) / p
    b2 = sum(np.sum((np.outer(row, row) - sample) ** 2) / p for row in data) / n**2
    assert ledoit_wolf_shrinkage(data) == pytest.approx(min(b2, d2) / d2, rel=1e-12)


def test_samples_do_not_depend_on_how_many_are_drawn():
    short, long = make_groundtruth(n_samples=50, stride=3), make_groundtruth(n_samples=5000, stride=3)
    np.testing.assert_array_equal(short["sst_anomaly"].values, long["sst_anomaly"].values[:50])
    np.testing.assert_array_equal(short["slopes"].values, long["slopes"].values)


def test_empirical_correlation_of_the_inputs_is_the_target():
    ds = make_groundtruth(n_samples=20000, stride=3, shrinkage=0.2)
    correlation, _, _ = correlation_matrix(stride=3, shrinkage=0.2)
    empirical = np.corrcoef(ds["sst_anomaly"].values.T.astype(np.float64))
    assert np.abs(empirical - correlation).max() < 0.05   # ~4 standard errors of 1/sqrt(20000)


def test_to_map_puts_cells_back_on_the_grid(small):
    maps = to_map(np.arange(small.sizes["cell"], dtype=float), small)
    assert np.isfinite(maps).sum() == small.sizes["cell"]
    row = np.searchsorted(small["lat_grid"].values, small["lat"].values[5])
    column = np.searchsorted(small["lon_grid"].values, small["lon"].values[5])
    assert maps[row, column] == 5


@pytest.mark.parametrize("settings, message", [
    ({"n_samples": 0}, "n_samples"), ({"stride": 0}, "stride"), ({"shrinkage": 1.5}, "shrinkage"),
    ({"n_breakpoints": -1}, "n_breakpoints"), ({"shrinkage": "oas"}, "shrinkage"),
])
def test_bad_settings_name_the_problem(settings, message):
    with pytest.raises(ValueError, match=message):
        make_groundtruth(**{"n_samples": 10, **settings})


# --- the scores ------------------------------------------------------------------------------------
def test_pearson_matches_numpy():
    generator = np.random.default_rng(3)
    a, b = generator.standard_normal((5, 30)), generator.standard_normal((5, 30))
    expected = [np.corrcoef(a[i], b[i])[0, 1] for i in range(5)]
    np.testing.assert_allclose(metrics.pearson(a, b), expected, rtol=1e-12)
    assert np.isnan(metrics.pearson(np.ones((1, 4)), b[:1, :4])[0])


def test_deletion_curve_on_a_linear_model():
    """f(x) = w . x: deleting in the order of w * x lowers f fastest; the reverse order slowest."""
    generator = np.random.default_rng(4)
    w, x = generator.standard_normal(12), generator.standard_normal((3, 12))
    predict = lambda inputs: inputs @ w  # noqa: E731
    contributions = w * x
    best = metrics.deletion_curve(predict, x, contributions)
    worst = metrics.deletion_curve(predict, x, -contributions)
    np.testing.assert_allclose(best[:, 0], predict(x))
    np.testing.assert_allclose(best[:, -1], 0.0, atol=1e-12)          # everything deleted: f(0) = 0
    assert np.all(metrics.deletion_score(best) > metrics.deletion_score(worst))
    order = np.argsort(-contributions[0])
    np.testing.assert_allclose(best[0, 1:], [predict(np.where(np.isin(np.arange(12), order[:k]), 0, x[0]))
                                             for k in np.rint(np.linspace(0, 1, 21)[1:] * 12).astype(int)])
    with pytest.raises(ValueError, match="relevance"):
        metrics.deletion_curve(predict, x, contributions[:, :5])


# --- training and the end-to-end benchmark ---------------------------------------------------------
def test_the_network_trains_with_plain_mse(small):
    from xaibench.studies.models.training import evaluate, train

    result = train("groundtruth", small, {"epochs": 2, "optimizer": "adam"})
    test = result.metadata["skill"]["test"]
    from xaibench.studies.data import split

    part = split(small)["test"]
    with torch.no_grad():
        prediction = result.model(torch.from_numpy(part["sst_anomaly"].values)).reshape(-1).double().numpy()
    target = part["response"].values.astype(np.float64)
    assert test["loss"] == pytest.approx(np.mean((prediction - target) ** 2), rel=1e-5)
    assert "rmsd_dbz" not in test and evaluate(result.model, part)["skill_name"] == "r2"
    assert [layer.out_features for layer in result.model if isinstance(layer, torch.nn.Linear)] == \
        [512, 256, 128, 64, 32, 16, 1]


@pytest.fixture(scope="module")
def benchmark_run(tmp_path_factory, small):
    from xaibench.studies.models.training import train

    folder = tmp_path_factory.mktemp("groundtruth")
    write_dataset(small, folder / "data.nc")
    train("groundtruth", folder / "data.nc", {"epochs": 2, "optimizer": "adam"}, out=folder / "model")
    explain_benchmark(folder / "model", folder / "data.nc", folder / "relevance.nc", n_samples=12,
                      methods=["gradient", "input_x_gradient", "integrated_gradients", "occlusion", "lrp.epsilon",
                               "lrp.alpha1beta0"], backends=["native", "zennit"])
    table = score_benchmark(folder / "relevance.nc", folder / "model", folder / "data.nc", folder / "scores")
    return folder, table


def test_benchmark_table(benchmark_run):
    folder, table = benchmark_run
    written = pd.read_csv(folder / "scores" / "correlations.csv")
    assert list(written.columns) == CORRELATION_COLUMNS
    assert set(written["backend"]) == {"native", "zennit"}
    true_rows = written[written["model"] == "true_function"].set_index("method")
    # exact on the true function (see test_integrated_gradients_and_occlusion_of_the_true_function_are_exact)
    assert true_rows.loc["occlusion", "mean_pearson"] > 0.999999
    assert true_rows.loc["integrated_gradients", "mean_pearson"] > 0.999
    assert true_rows.loc["occlusion", "faithfulness_relative"] == pytest.approx(1.0, abs=1e-9)
    positive = written[(written["method"] == "lrp.alpha1beta0") & (written["reference"] == "positive_part")]
    assert len(positive) == 3   # native, zennit, true function
    assert (written["n_samples"] == 12).all()
    # zennit and native compute the same maps for these methods: the same scores
    trained = written[(written["model"] == "trained")].set_index(["method", "reference", "backend"])["mean_pearson"]
    for method in ("gradient", "input_x_gradient", "lrp.epsilon"):
        assert trained[(method, "ground_truth", "native")] == pytest.approx(
            trained[(method, "ground_truth", "zennit")], abs=1e-9)
    markdown = (folder / "scores" / "correlations.md").read_text()
    assert "the paper" in markdown and "true function" in markdown


def test_benchmark_figures(benchmark_run):
    folder, _ = benchmark_run
    for kind in ("histograms", "maps", "faithfulness"):
        out = folder / f"{kind}.png"
        status = cli_main(["groundtruth", "figure", kind, "--relevance", str(folder / "relevance.nc"),
                           "--scores", str(folder / "scores"), "--out", str(out)])
        assert status == 0 and out.stat().st_size > 10_000


def test_explaining_other_data_is_refused(benchmark_run, tmp_path):
    folder, _ = benchmark_run
    other = make_groundtruth(n_samples=400, stride=3, seed=2)
    write_dataset(other, tmp_path / "other.nc")
    with pytest.raises(InputError, match="trained on other data"):
        explain_benchmark(folder / "model", tmp_path / "other.nc", tmp_path / "relevance.nc", n_samples=4,
                          methods=["gradient"], backends=["native"])
    with pytest.raises(InputError, match="other data"):
        score_benchmark(folder / "relevance.nc", folder / "model", tmp_path / "other.nc", tmp_path / "scores")
    options = json.loads(str(pd.read_csv(folder / "scores" / "correlations.csv")
                             .query("method == 'integrated_gradients'")["options"].iloc[0]))
    assert options["rule"] == "riemann_left" and options["steps"] == 64
