"""The linear ocean model, its exact adjoint, and the relevance-vs-sensitivity experiment.

Exact identities run in float64 at 1e-12 relative. The model here is the experiment's own (the
4-degree Natural Earth grid), built once per module.
"""

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from scipy import ndimage

from xaibench.errors import InputError
from xaibench.studies.adjoint import experiment as adjoint_experiment
from xaibench.studies.adjoint import ocean

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def grid():
    return ocean.make_grid(4.0)


@pytest.fixture(scope="module")
def model(grid):
    return ocean.OceanModel(grid)


@pytest.fixture(scope="module")
def qoi(grid):
    return ocean.quantity_of_interest(grid)


@pytest.fixture(scope="module")
def forcing(grid):
    return ocean.CorrelatedForcing(grid, std=0.1, correlation_length_km=1500.0, seed=3)


def _relative(a, b):
    return abs(a - b) / max(abs(a), abs(b))


# --- the grid and the operator ------------------------------------------------------------------


def test_pacific_and_atlantic_are_separate_basins(grid):
    labels, _ = ndimage.label(grid.ocean)

    def basin(lat, lon):
        return labels[np.argmin(abs(grid.lat - lat)), np.argmin(abs(grid.lon - lon))]

    pacific, atlantic = basin(0.0, 200.0), basin(20.0, 320.0)
    assert pacific > 0 and atlantic > 0 and pacific != atlantic


def test_operator_is_stable_positive_and_not_symmetric(model):
    matrix = model.matrix.toarray()
    off_diagonal = matrix - np.diag(np.diag(matrix))
    assert off_diagonal.min() >= 0 and np.diag(matrix).min() >= 0
    np.testing.assert_allclose(matrix.sum(axis=1), 1 - 1 / model.parameters.damping_days, rtol=0, atol=1e-13)
    # Not symmetric: the dot-product test below could catch an adjoint that forgot to transpose.
    assert np.abs(matrix - matrix.T).max() > 1e-3


def test_waveguides_link_the_equator_to_the_qoi_box(model, grid, qoi):
    pathways = model.pathways
    assert pathways["equatorial"].sum() > 50 and pathways["coastal"].sum() > 10
    assert (pathways["coastal"] & (qoi > 0)).any()   # the coastal waveguide runs through the box
    # At a long lag the adjoint reaches the equatorial waveguide; at a short lag it does not.
    short, long = model.sensitivity(qoi, [5, 150], window=1)
    assert short[pathways["equatorial"]].max() < 1e-6 * short.max()
    assert long[pathways["equatorial"]].max() > 1e-2 * long.max()


# --- the adjoint ----------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_dot_product_one_step(model, grid, seed):
    generator = np.random.default_rng(seed)
    x, y = generator.standard_normal(grid.n_ocean), generator.standard_normal(grid.n_ocean)
    forward = model.step(x) @ y
    backward = x @ model.adjoint_step(y)
    assert _relative(forward, backward) < 1e-12


@pytest.mark.parametrize("seed", [0, 1])
def test_dot_product_many_steps_and_fields(model, grid, seed):
    """<A^n x, y> = <x, (A^T)^n y> through the field <-> state mapping (land values ignored)."""
    generator = np.random.default_rng(seed)
    x_field = generator.standard_normal(grid.shape)
    y_field = generator.standard_normal(grid.shape)
    forward = grid.to_field(model.propagate(grid.to_vector(x_field), 40), fill=0.0)
    adjoint = grid.to_vector(y_field)
    for _ in range(40):
        adjoint = model.adjoint_step(adjoint)
    backward = grid.to_field(adjoint, fill=0.0)
    assert _relative(float((forward * y_field).sum()), float((x_field * backward).sum())) < 1e-12


@pytest.mark.parametrize("lag, window", [(0, 1), (7, 1), (5, 11), (40, 11)])
def test_sensitivity_equals_autograd_vjp(model, grid, qoi, lag, window):
    """dQ(t)/dT(t - lag) from the adjoint sweep = torch autograd through the forward model."""
    matrix = torch.as_tensor(model.matrix.toarray())
    weights = torch.as_tensor(qoi)
    start = torch.tensor(np.random.default_rng(lag).standard_normal(grid.n_ocean), requires_grad=True)
    half = (window - 1) // 2
    # Q(t) = mean_j q . T(t + j): T(s) for s < t - lag does not depend on the start state.
    terms, state = [], start
    for k in range(lag + half + 1):   # state = T(t - lag + k)
        if k >= lag - half:
            terms.append(weights @ state)
        state = matrix @ state
    quantity = torch.stack(terms).sum() / window
    (gradient,) = torch.autograd.grad(quantity, start)
    sensitivity = model.sensitivity(qoi, [lag], window)[0]
    np.testing.assert_allclose(sensitivity, gradient.numpy(), rtol=1e-12, atol=1e-12 * np.abs(sensitivity).max())


def test_adjoint_predicts_the_response_of_a_perturbation_run(model, grid, qoi, forcing):
    """A perturbation of T at one day changes the running-mean Q by sensitivity . perturbation."""
    perturbation = 0.5 * np.random.default_rng(7).standard_normal(grid.n_ocean)
    day, lags, window = 300, [0, 10, 60], 31
    base = model.simulate(forcing, 600, spinup_days=30, qoi=qoi)
    perturbed = model.simulate(forcing, 600, spinup_days=30, qoi=qoi, perturbation=(day, perturbation))
    response = ocean.running_mean(perturbed.qoi, window) - ocean.running_mean(base.qoi, window)
    predicted = model.sensitivity(qoi, lags, window) @ perturbation
    for lag, expected in zip(lags, predicted):
        assert abs(expected) > 1e-6
        assert _relative(response[day + lag], expected) < 1e-9   # float64 sums over 600 days
    assert np.all(response[window // 2:day - window // 2] == 0)   # nothing before the perturbation


def test_bridge_is_outside_the_ocean_operator(grid, qoi, forcing):
    """Switching the bridge on changes the runs but neither A nor the adjoint; a perturbation in
    the bridge's source region reaches Q only with the bridge on, i.e. not through A."""
    model = ocean.OceanModel(grid)
    matrix_before = model.matrix.copy()
    bridge = ocean.Bridge.over(grid, gain_per_day=0.05, lag_days=5)
    source = bridge.source.astype(float)
    day, window, n_days = 200, 1, 400
    runs = {}
    for name, active in (("off", None), ("on", bridge)):
        base = model.simulate(forcing, n_days, spinup_days=30, qoi=qoi, bridge=active)
        kicked = model.simulate(forcing, n_days, spinup_days=30, qoi=qoi, bridge=active, perturbation=(day, source))
        runs[name] = (base, kicked.qoi - base.qoi)
    assert (model.matrix != matrix_before).nnz == 0
    assert not np.allclose(runs["on"][0].qoi, runs["off"][0].qoi)   # the bridge does force Q
    lag = 60
    predicted = model.sensitivity(qoi, [lag], window)[0] @ source
    assert abs(predicted) < 1e-15   # the ocean-only adjoint: the Atlantic cannot reach the NE Pacific
    assert abs(runs["off"][1][day + lag]) < 1e-15
    assert runs["on"][1][day + lag] > 1e-3   # ... but the bridge carries the anomaly there


def test_forcing_statistics_and_seed(grid, forcing):
    draws = forcing.draw(4000)
    np.testing.assert_allclose(draws.std(axis=0), 0.1, rtol=0.06)
    # Two cells about 900 km apart along the equator: correlation near exp(-900/1500).
    i = np.flatnonzero((grid.cell_lat == 0.0) & (grid.cell_lon == 200.0))[0]
    j = np.flatnonzero((grid.cell_lat == 0.0) & (grid.cell_lon == 208.0))[0]
    distance = ocean._great_circle_km(0.0, 200.0, 0.0, 208.0)
    correlation = np.corrcoef(draws[:, i], draws[:, j])[0, 1]
    assert abs(correlation - math.exp(-distance / 1500.0)) < 0.05
    np.testing.assert_array_equal(draws[:10], forcing.draw(10))   # every stream restarts from the seed
    coarse = ocean.make_grid(8.0)
    first, second = (ocean.CorrelatedForcing(coarse, 0.1, 1500.0, seed=seed).draw(10) for seed in (3, 4))
    np.testing.assert_array_equal(first, ocean.CorrelatedForcing(coarse, 0.1, 1500.0, seed=3).draw(10))
    assert not np.array_equal(first, second)


# --- bad input ----------------------------------------------------------------------------------


def test_bad_input_raises_clear_errors(model, grid, qoi):
    with pytest.raises(InputError, match="resolution"):
        ocean.make_grid(0.0)
    with pytest.raises(InputError, match="no ocean cell"):
        ocean.quantity_of_interest(grid, region=(38.0, 44.0, 255.0, 262.0))   # the Rocky Mountains
    with pytest.raises(InputError, match="lags"):
        model.sensitivity(qoi, [-3])
    with pytest.raises(InputError, match="odd"):
        model.sensitivity(qoi, [3], window=4)
    with pytest.raises(InputError, match="ocean values"):
        model.step(np.zeros(grid.n_ocean + 1))
    with pytest.raises(InputError, match="NaN"):
        model.adjoint_step(np.full(grid.n_ocean, np.nan))
    with pytest.raises(InputError, match="time step"):
        ocean.OceanModel(grid, ocean.OceanParameters(equatorial_speed_m_s=20.0))
    with pytest.raises(InputError, match="damping_days"):
        ocean.OceanParameters(damping_days=0.0)
    with pytest.raises(InputError, match="source region"):
        ocean.Bridge.over(grid, source_box=(38.0, 44.0, 255.0, 262.0))
    with pytest.raises(InputError, match="unknown adjoint setting 'lag'"):
        adjoint_experiment.resolve_config({"lag": [3]})
    with pytest.raises(InputError, match="unknown adjoint.training"):
        adjoint_experiment.resolve_config({"training": {"epoch": 3}})
    with pytest.raises(InputError, match="too short"):
        adjoint_experiment.resolve_config({"days": 500})
    with pytest.raises(InputError, match="window_days must be odd"):
        adjoint_experiment.resolve_config({"window_days": 60})


def test_cli_reports_bad_config_with_status_2(tmp_path, capsys):
    from xaibench.cli import main

    assert main(["adjoint", "--config", '{"bogus": 1}', "--out", str(tmp_path)]) == 2
    assert "unknown adjoint setting 'bogus'" in capsys.readouterr().err
    assert main(["adjoint", "--config", "{not json", "--out", str(tmp_path)]) == 2
    assert "not JSON" in capsys.readouterr().err
    assert main(["adjoint-figure", "--maps", str(tmp_path / "missing.nc"), "--lag", "3",
                 "--out", str(tmp_path / "x.png")]) == 2
    assert "not found" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())   # nothing written


def test_both_configurations_spell_out_every_setting_of_the_library():
    """The schema holds no defaults: each configuration names every key of DEFAULTS (no more, no
    fewer), so what a run uses is what its file says; the library's DEFAULTS serve direct calls."""
    def keys(node, prefix=""):
        if isinstance(node, dict):
            return set().union(*(keys(value, f"{prefix}{key}.") for key, value in node.items())) | {prefix}
        return {prefix}

    for config in ("quick", "default"):
        settings = yaml.safe_load((ROOT / f"workflows/config/{config}.yaml").read_text())["adjoint"]
        assert keys(settings) == keys(adjoint_experiment.DEFAULTS), config
        adjoint_experiment.resolve_config(settings)   # the shipped configurations are valid


# --- the experiment end to end ------------------------------------------------------------------

TINY = {"resolution_deg": 8.0, "days": 3000, "spinup_days": 100, "sample_every_days": 2, "lags_days": [5, 30],
        "window_days": 11, "max_explained": 200, "networks": 2, "training": {"epochs": 4}}


def test_tiny_experiment_end_to_end(tmp_path):
    result = adjoint_experiment.run_experiment(TINY, tmp_path / "a", log=lambda line: None)
    comparison = pd.read_csv(tmp_path / "a" / "comparison.csv")
    for column in ("lag_days", "bridge", "method", "pattern_correlation", "remote_fraction", "accuracy",
                   "pattern_correlation_scaled", "bridge_region_fraction", "n_samples"):
        assert column in comparison
    assert len(comparison) == 2 * 2 * len(adjoint_experiment.METHODS)
    assert set(comparison["bridge"]) == {"on", "off"}
    assert comparison["accuracy"].between(0, 1).all() and comparison["remote_fraction"].between(0, 1).all()
    assert comparison["pattern_correlation"].between(-1, 1).all() and (comparison["n_samples"] > 0).all()
    assert (comparison["bridge_variance_share"] > 0).all() and (comparison["n_networks"] == 2).all()
    per_network = pd.read_csv(tmp_path / "a" / "comparison_networks.csv")
    assert len(per_network) == 2 * len(comparison)
    means = per_network.groupby(["lag_days", "bridge", "method"], sort=False)["remote_fraction"].agg(["mean", "std"])
    np.testing.assert_allclose(comparison["remote_fraction"], means["mean"].to_numpy(), rtol=1e-12)
    np.testing.assert_allclose(comparison["remote_fraction_std"], means["std"].to_numpy(), rtol=1e-12)
    attribution = pd.read_csv(tmp_path / "a" / "remote_attribution.csv")
    np.testing.assert_allclose(attribution["bridge_attributable"],
                               attribution["remote_fraction_bridge_on"] - attribution["remote_fraction_bridge_off"],
                               atol=1e-12)
    # Seeded: a second run gives the same table, bit for bit.
    lines = []
    again = adjoint_experiment.run_experiment(TINY, None, log=lines.append)
    pd.testing.assert_frame_equal(result["comparison"], again["comparison"], check_exact=True)
    # Each trained network's log line says how far the run is (2 bridges x 2 lags x 2 networks).
    counted = [line.split("]")[0] for line in lines if line.startswith("[")]
    assert counted[0].startswith("[1/8  12 %, about ") and counted[-1] == "[8/8 100 %" and len(counted) == 8

    from xaibench.studies.adjoint.figures import read_maps, sensitivity_relevance_maps

    maps = read_maps(tmp_path / "a" / "maps.nc")
    assert maps["relevance"].sizes == {"lag_days": 2, "bridge": 2, "method": 2, "lat": 11, "lon": 30}
    assert json.loads(maps.attrs["config"])["days"] == 3000
    drawn = sensitivity_relevance_maps(tmp_path / "a" / "maps.nc", 30, tmp_path / "adjoint_lag30.png", dpi=40)
    assert (tmp_path / "adjoint_lag30.png").stat().st_size > 1000
    # The figure's numbers are those of the maps averaged over the networks.
    composites = result["maps"]["relevance"].sel({"lag_days": 30, "bridge": "on", "method": "lrp.epsilon"}).values
    absolute = result["maps"]["relevance_absolute"].sel({"lag_days": 30, "bridge": "on", "method": "lrp.epsilon"})
    reached = result["maps"]["reached"].sel(lag_days=30).values > 0.5
    ocean_cells = np.isfinite(composites)
    expected = np.nansum(absolute.values[ocean_cells & ~reached]) / np.nansum(absolute.values)
    assert drawn["lrp.epsilon, bridge on"]["remote_fraction"] == pytest.approx(expected, rel=1e-9)
    with pytest.raises(InputError, match="no lag 7"):
        sensitivity_relevance_maps(tmp_path / "a" / "maps.nc", 7, tmp_path / "x.png")


def test_alpha1beta0_zbox_ignores_the_bias_and_bounds_the_first_layer():
    """The study's rule on a tiny net, against a hand computation in float64."""
    torch.manual_seed(0)
    network = adjoint_experiment.xairt_network(5, hidden=3).double()
    for layer in network:
        if isinstance(layer, torch.nn.Linear):
            torch.nn.init.normal_(layer.bias)
    x = torch.randn(4, 5, dtype=torch.float64)
    low, high = x.min(0).values - 0.5, x.max(0).values + 0.5   # per-input bounds
    target = torch.tensor([0, 1, 1, 0])
    relevance = adjoint_experiment.explain_composite(network, x, target, "lrp.alpha1beta0_zbox", low, high)
    # z^B's terms (x - low) w+ + (high - x) |w-| are never negative, and alpha1-beta0 passes on
    # only positive shares: every input's relevance has the sign of the explained output.
    with torch.no_grad():
        explained = network(x)[torch.arange(4), target].numpy()
    assert (relevance * np.sign(explained)[:, None]).min() >= 0
    first, second, third = (layer for layer in network if isinstance(layer, torch.nn.Linear))
    for n in range(4):
        a1 = torch.relu(first(x[n]))
        a2 = torch.relu(second(a1))
        output = third(a2)[target[n]]
        r3 = output * torch.eye(2, dtype=torch.float64)[target[n]]

        def alpha_one(activation, layer, upper):  # z+ without bias
            z = activation[None, :] * layer.weight
            positive = z.clamp(min=0)
            total = positive.sum(1, keepdim=True)
            share = torch.where(total > 0, positive / total.clamp(min=1e-300), 0.0)
            return (share * upper[:, None]).sum(0)

        r2 = alpha_one(a2, third, r3)
        r1 = alpha_one(a1, second, r2)
        w = first.weight
        z = x[n][None, :] * w - low[None, :] * w.clamp(min=0) - high[None, :] * w.clamp(max=0)
        r0 = (z / z.sum(1, keepdim=True) * r1[:, None]).sum(0)
        np.testing.assert_allclose(relevance[n], r0.detach().numpy(), rtol=1e-5, atol=1e-9)
