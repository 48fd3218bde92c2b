"""Faithfulness metrics on cases with a known answer (linear models whose exact map is w * x, ramps
that linear imputation reproduces, constant and reversed maps), their edge cases and bad input."""

import math

import numpy as np
import pytest
import torch
from torch import nn

from xaibench.metrics import faithfulness as F
from xaibench.metrics.evaluation import Setting, metrics


def linear_model(n_features: int, n_outputs: int = 3, seed: int = 0, bias: bool = True):
    """(model over [B, *] inputs flattened, weight [outputs, n]) in float64."""
    torch.manual_seed(seed)
    layer = nn.Linear(n_features, n_outputs, bias=bias).double()
    return nn.Sequential(nn.Flatten(), layer).eval(), layer.weight.detach()


@pytest.fixture
def linear_case():
    model, weight = linear_model(2 * 4 * 6)
    x = torch.randn(3, 2, 4, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    target = torch.tensor([0, 2, 1])
    exact = weight[target].reshape(x.shape) * x
    return model, x, target, exact, weight


# --- faithfulness correlation -------------------------------------------------------------------------
def test_faithfulness_correlation_exact_map_is_one_and_reversed_minus_one(linear_case):
    model, x, target, exact, _ = linear_case
    ours = F.faithfulness_correlation(model, x, target, exact, runs=30, subset_size=5)
    assert torch.allclose(ours, torch.ones(3, dtype=torch.float64), atol=1e-12)
    reversed_map = F.faithfulness_correlation(model, x, target, -exact, runs=30, subset_size=5)
    assert torch.allclose(reversed_map, -torch.ones(3, dtype=torch.float64), atol=1e-12)


def test_faithfulness_correlation_with_a_baseline_tensor(linear_case):
    model, x, target, _, weight = linear_case
    baseline = torch.linspace(-1, 1, x[0].numel(), dtype=torch.float64).reshape(x.shape[1:])
    exact = weight[target].reshape(x.shape) * (x - baseline)
    ours = F.faithfulness_correlation(model, x, target, exact, baseline=baseline, runs=20, subset_size=3)
    assert torch.allclose(ours, torch.ones(3, dtype=torch.float64), atol=1e-12)


def test_faithfulness_correlation_constant_map_is_nan_and_seeded(linear_case):
    model, x, target, exact, _ = linear_case
    assert torch.isnan(F.faithfulness_correlation(model, x, target, torch.ones_like(x), runs=10)).all()
    noisy = exact + torch.randn_like(exact)
    first = F.faithfulness_correlation(model, x, target, noisy, runs=10, seed=3)
    assert torch.equal(first, F.faithfulness_correlation(model, x, target, noisy, runs=10, seed=3, batch_size=4))
    assert not torch.equal(first, F.faithfulness_correlation(model, x, target, noisy, runs=10, seed=4))


def test_faithfulness_correlation_default_subset_is_five_percent():
    assert F.default_subset_size(16384, 0.05) == 819
    assert F.default_subset_size(10, 0.05) == 1
    subsets = F.random_subsets(2, 40, 7, 5, seed=0)
    assert subsets.shape == (2, 7, 5)
    assert all(len(set(row.tolist())) == 5 for row in subsets.reshape(-1, 5))


# --- pixel flipping / region perturbation ---------------------------------------------------------------
def test_pixel_flipping_curve_and_aopc_of_a_linear_model(linear_case):
    model, x, target, exact, _ = linear_case
    curves = F.perturbation_curve(model, x, target, exact, features_in_step=1)
    original = model(x).gather(1, target[:, None]).squeeze(1).detach()
    removed = torch.sort(exact.reshape(3, -1), dim=1, descending=True).values.cumsum(1)
    assert torch.allclose(curves, original[:, None] - removed, atol=1e-12)
    aopc = F.pixel_flipping_aopc(model, x, target, exact, features_in_step=4)
    assert torch.allclose(aopc, removed[:, 3::4].mean(1), atol=1e-12)


def test_pixel_flipping_with_a_climatology_baseline(linear_case):
    model, x, target, _, weight = linear_case
    climatology = torch.randn(x.shape[1:], dtype=torch.float64)
    exact = weight[target].reshape(x.shape) * (x - climatology)
    curves = F.perturbation_curve(model, x, target, exact, features_in_step=6, baseline=climatology)
    original = model(x).gather(1, target[:, None]).squeeze(1).detach()
    removed = torch.sort(exact.reshape(3, -1), dim=1, descending=True).values.cumsum(1)[:, 5::6]
    assert torch.allclose(curves, original[:, None] - removed, atol=1e-12)
    assert torch.allclose(curves[:, -1], model(climatology.expand_as(x)).gather(1, target[:, None]).squeeze(1)
                          .detach(), atol=1e-12)


def test_region_perturbation_removes_patches_by_summed_relevance(linear_case):
    model, x, target, exact, _ = linear_case
    ids, n_patches = F.patch_ids((2, 4, 6), 2)
    assert n_patches == 6 and ids.reshape(2, 4, 6)[1, 3, 5] == 5 and ids.reshape(2, 4, 6)[0, 0, 2] == 1
    patch_sums = torch.zeros(3, n_patches, dtype=torch.float64).index_add_(1, ids, exact.reshape(3, -1))
    expected = torch.sort(patch_sums, dim=1, descending=True).values.cumsum(1).mean(1)
    assert torch.allclose(F.region_perturbation_aopc(model, x, target, exact, patch_size=2), expected, atol=1e-12)


def test_patches_are_centred_like_quantus_where_the_size_is_not_a_multiple():
    ids, n_patches = F.patch_ids((6, 8), 4)      # 6 rows: padding 2, shifted by 1 -> rows 0-2 and 3-5
    grid = ids.reshape(6, 8)
    assert n_patches == 4
    assert grid[:3, 0].tolist() == [0, 0, 0] and grid[3:, 0].tolist() == [2, 2, 2]
    segments, n_segments = F.patch_ids((10,), 4)  # 1-D: 10 -> padded to 12, shift 1
    assert n_segments == 3 and segments.tolist() == [0, 0, 0, 1, 1, 1, 1, 2, 2, 2]


def test_perturbation_curve_bad_input(linear_case):
    model, x, target, exact, _ = linear_case
    with pytest.raises(ValueError, match="features_in_step"):
        F.perturbation_curve(model, x, target, exact, features_in_step=0)
    with pytest.raises(ValueError, match="larger than the number of features"):
        F.perturbation_curve(model, x, target, exact, features_in_step=49)
    with pytest.raises(ValueError, match="differ in shape"):
        F.perturbation_curve(model, x, target, exact[:, :1], features_in_step=1)
    with pytest.raises(ValueError, match="target"):
        F.perturbation_curve(model, x, target[:2], exact)
    with pytest.raises(ValueError, match="baseline"):
        F.perturbation_curve(model, x, target, exact, baseline=torch.zeros(5))


def test_nothing_given_is_modified(linear_case):
    model, x, target, exact, _ = linear_case
    copies = x.clone(), exact.clone(), [p.clone() for p in model.parameters()]
    F.pixel_flipping_aopc(model, x, target, exact)
    F.road(model, x, target, exact, percentages=[50])
    F.faithfulness_correlation(model, x, target, exact, runs=5)
    F.monotonicity_correlation(model, x, target, exact, nr_samples=2)
    assert torch.equal(x, copies[0]) and torch.equal(exact, copies[1])
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), copies[2]))


# --- ROAD -----------------------------------------------------------------------------------------------
def test_linear_imputation_reproduces_a_ramp_inside_the_plane():
    rows, columns = np.meshgrid(np.arange(7.0), np.arange(9.0), indexing="ij")
    planes = np.stack([2 * rows - 3 * columns + 1, 0.5 * rows + columns])
    removed = np.zeros_like(planes, dtype=bool)
    removed[0, 2:5, 3:7] = True          # a 3x4 hole: every removed value has all 8 neighbours
    removed[1, 3, 1:8] = True
    imputed = F.noisy_linear_imputation(np.where(removed, 99.0, planes), removed)
    assert np.allclose(imputed, planes, atol=1e-12)


def test_linear_imputation_weights_and_edges():
    plane = np.zeros((1, 3, 3))
    plane[0, 0, 1], plane[0, 1, 0], plane[0, 0, 0] = 6.0, 12.0, 24.0  # direct 1/6, diagonal 1/12
    removed = np.zeros_like(plane, dtype=bool)
    removed[0, 1, 1] = True
    assert F.noisy_linear_imputation(plane, removed)[0, 1, 1] == pytest.approx(6 / 6 + 12 / 6 + 24 / 12)
    corner = np.zeros_like(removed)
    corner[0, 0, 0] = True                # corner: neighbours (0,1), (1,0) weight 1/6, (1,1) 1/12
    plane[0, 1, 1] = 4.0
    value = (6.0 / 6 + 12.0 / 6 + 4.0 / 12) / (1 / 6 + 1 / 6 + 1 / 12)
    assert F.noisy_linear_imputation(plane, corner)[0, 0, 0] == pytest.approx(value)
    everything = np.ones_like(removed)
    assert (F.noisy_linear_imputation(plane, everything) == 0).all()


def test_imputation_noise_is_seeded_and_has_the_given_size():
    planes = np.zeros((1, 30, 30))
    removed = np.zeros_like(planes, dtype=bool)
    removed[0, 5:25, 5:25] = True
    first = F.noisy_linear_imputation(planes, removed, 0.5, np.random.default_rng(0))
    again = F.noisy_linear_imputation(planes, removed, 0.5, np.random.default_rng(0))
    assert np.array_equal(first, again)
    assert first[removed].std() == pytest.approx(0.5, rel=0.1)
    assert np.array_equal(first[~removed], planes[~removed])


def test_road_of_a_one_dimensional_ramp_and_a_linear_model():
    n = 40
    x = torch.arange(n, dtype=torch.float64)[None, :] * 0.1
    model, weight = linear_model(n, n_outputs=1, bias=False)
    relevance = torch.zeros(1, n, dtype=torch.float64)
    relevance[0, 10:30] = torch.arange(20, 0, -1, dtype=torch.float64)  # only interior features removed
    curve = F.road_curve(model, x, torch.tensor([0]), relevance, percentages=[0, 25, 50], noise=0.0)
    # the ramp is linear along the axis: imputation gives back the same values, the output is unchanged
    assert torch.allclose(curve, model(x).detach().expand(1, 3), atol=1e-12)
    assert F.road(model, x, torch.tensor([0]), relevance, percentages=[25, 50], noise=0.0).abs().max() < 1e-12


def test_road_on_a_model_that_reads_one_pixel():
    """f = x[0, 2, 2]: removing that pixel replaces it by the mean of its neighbours (all zero)."""
    x = torch.zeros(1, 1, 5, 5, dtype=torch.float64)
    x[0, 0, 2, 2] = 3.0
    model = nn.Sequential(nn.Flatten(), nn.Linear(25, 1, bias=False)).double().eval()
    with torch.no_grad():
        model[1].weight.zero_()
        model[1].weight[0, 12] = 1.0
    relevance = torch.arange(25, dtype=torch.float64).reshape(1, 1, 5, 5)
    relevance[0, 0, 2, 2] = 100.0                     # the top 4 % (one pixel) is the read one
    assert F.road(model, x, torch.tensor([0]), relevance, percentages=[4], noise=0.0).item() == pytest.approx(3.0)
    accuracy = F.road_accuracy_curve(model, x, torch.tensor([0]), relevance, percentages=[4], noise=0.0)
    assert accuracy.tolist() == [[1.0]]               # one output: argmax is always the target


def test_road_bad_input(linear_case):
    model, x, target, exact, _ = linear_case
    with pytest.raises(ValueError, match="percentages"):
        F.road(model, x, target, exact, percentages=[120])
    with pytest.raises(ValueError, match="order"):
        F.road_curve(model, x, target, exact, order="random")


# --- monotonicity correlation ----------------------------------------------------------------------------
def test_monotonicity_correlation_of_a_linear_model_with_shared_draws():
    """x constant and the same draws for every group: the mean square change is w_g^2 * c exactly,
    so |R| = |w| ranks the groups like it (1) and 1 / |w| the other way round (-1)."""
    n = 12
    model, weight = linear_model(n, n_outputs=1)
    x = torch.full((1, n), 0.3, dtype=torch.float64)
    shared = np.random.default_rng(0).uniform(size=(1, 1, 6)).repeat(n, axis=1)
    gradient = weight.reshape(1, n)
    ours = F.monotonicity_correlation(model, x, torch.tensor([0]), gradient, features_in_step=1, draws=shared)
    assert ours.item() == pytest.approx(1.0)
    inverse = F.monotonicity_correlation(model, x, torch.tensor([0]), 1 / gradient, features_in_step=1, draws=shared)
    assert inverse.item() == pytest.approx(-1.0)


def test_monotonicity_correlation_nan_and_bad_input(linear_case):
    model, x, target, exact, _ = linear_case
    constant = nn.Sequential(nn.Flatten(), nn.Linear(48, 3)).double().eval()
    with torch.no_grad():
        constant[1].weight.zero_()
    assert torch.isnan(F.monotonicity_correlation(constant, x, target, exact, nr_samples=3)).all()
    with pytest.raises(ValueError, match="draws"):
        F.monotonicity_correlation(model, x, target, exact, features_in_step=1, draws=np.zeros((3, 2, 2)))
    with pytest.raises(ValueError, match="nr_samples"):
        F.monotonicity_correlation(model, x, target, exact, nr_samples=0)


# --- registry ---------------------------------------------------------------------------------------------
def test_metrics_are_registered_and_called_through_a_setting(linear_case):
    model, x, target, exact, _ = linear_case
    registry = metrics()
    names = ["faithfulness_correlation", "pixel_flipping_aopc", "region_perturbation_aopc", "road",
             "monotonicity_correlation"]
    setting = Setting(model, x, target, exact, options={"road": {"percentages": [20, 60]},
                                                        "monotonicity_correlation": {"nr_samples": 3}})
    for name in names:
        metric = registry[name]
        assert metric.category == "faithfulness" and metric.source
        values = metric(setting)
        assert values.dtype == torch.float64 and values.shape == (3,) and values.device.type == "cpu"
        assert torch.equal(values, metric(setting))          # seeded: the same Setting, the same values
    assert registry["faithfulness_correlation"](setting).min() > 0.999
    assert math.isnan(registry["road"].optimum) and registry["faithfulness_correlation"].optimum == 1.0


def test_road_removes_int_of_n_times_p_percent_features():
    assert F.removed_count(450, 1) == 4 and F.removed_count(25, 3) == 0 and F.removed_count(16384, 10) == 1638
