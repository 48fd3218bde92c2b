"""Our robustness, randomization, complexity and localization metrics against Quantus 0.6.0.

Every Quantus draw is reproduced (its global numpy noise and other-class choice, its MPRT reset under
torch.manual_seed(seed + 1)), so randomized metrics agree to rounding like deterministic ones:
1e-6 relative on a float64 dense network, 1e-5 on a float32 CNN (Quantus computes some norms in float32).
"""

import numpy as np
import pytest
import torch
from torch import nn

import xaibench
from xaibench.metrics import complexity, localization, randomization, robustness
from xaibench.metrics import evaluation as E

quantus = pytest.importorskip("quantus")
from xaibench.studies.evaluation import quantus_others as Q  # noqa: E402

REGISTRY = {metric.name: metric for module in (robustness, randomization, complexity, localization)
            for metric in module.METRICS}
FAST = {"average_sensitivity": {"samples": 6}, "max_sensitivity": {"samples": 6},
        "local_lipschitz_estimate": {"samples": 6}}


def input_x_gradient(model, x, target):
    return xaibench.explain(model, x, "input_x_gradient", target=target, backend="native").relevance


def dense_setting(seed=3):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(60, 16), nn.ReLU(), nn.Linear(16, 5)).double().eval()
    x = torch.randn(5, 3, 20, dtype=torch.float64)
    target = torch.tensor([0, 1, 2, 4, 3])
    mask = torch.zeros(3, 20, dtype=torch.bool)
    mask[0, :7] = True
    mask[2, 10:] = True
    return E.Setting(model, x, target, input_x_gradient(model, x, target), explain=input_x_gradient, mask=mask,
                     seed=seed)


def cnn_setting(seed=1):
    """A radar-like network: [B, 2, 8, 8] -> a dense [B, 1, 8, 8] output; the target is a pixel."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 1, 3, padding=1)).eval()
    x = torch.randn(3, 2, 8, 8)
    target = torch.tensor([0, 27, 63])
    return E.Setting(model, x, target, input_x_gradient(model, x, target), explain=input_x_gradient, seed=seed)


def relative_difference(ours, theirs):
    ours, theirs = np.asarray(ours, float), np.asarray(theirs, float)
    assert np.array_equal(np.isnan(ours), np.isnan(theirs))
    both = np.isfinite(ours)
    return float((np.abs(ours - theirs)[both] / np.maximum(np.maximum(np.abs(ours), np.abs(theirs)), 1e-12)[both])
                 .max())


@pytest.mark.parametrize("name", sorted(set(Q.QUANTUS) - {"sparseness"}))
def test_agreement_on_a_float64_dense_network(name):
    case = dense_setting()
    options = {**FAST.get(name, {}), **Q.QUANTUS_FORM.get(name, {})}
    ours = REGISTRY[name](case, **options).numpy()
    assert relative_difference(ours, Q.QUANTUS[name](case, **options)) < 1e-6


def test_sparseness_agrees_on_maps_of_unit_scale():
    """Quantus adds 1e-7 to |R|: relative difference n 1e-7 / sum |R| ~ 1.3e-7 for |R| ~ 0.8."""
    case = dense_setting()
    generator = torch.Generator().manual_seed(0)
    case = case.with_relevance(torch.randn(case.x.shape, dtype=torch.float64, generator=generator))
    assert relative_difference(complexity.sparseness(case), Q.quantus_sparseness(case)) < 1e-6


@pytest.mark.parametrize("name", ["average_sensitivity", "max_sensitivity", "local_lipschitz_estimate",
                                  "mprt_cascading", "mprt_independent", "random_logit"])
def test_agreement_on_a_float32_cnn_with_a_dense_output(name):
    case = cnn_setting()
    options = {**FAST.get(name, {}), **Q.QUANTUS_FORM.get(name, {})}
    assert relative_difference(REGISTRY[name](case, **options), Q.QUANTUS[name](case, **options)) < 1e-5


@pytest.mark.parametrize("order", ["cascading", "independent"])
@pytest.mark.parametrize("similarity", ["pearson", "ssim"])
def test_mprt_per_layer_and_other_similarities_agree(order, similarity):
    case = dense_setting(seed=11)
    names, ours = randomization.model_parameter_randomization(case, order=order, similarity=similarity,
                                                              support="all")
    theirs = Q.quantus_mprt_layers(case, order=order, similarity=similarity)
    assert set(theirs) == set(names)
    for name, row in zip(names, ours):
        assert relative_difference(row, theirs[name]) < 1e-6


def test_localization_options_agree():
    case = dense_setting()
    for relevance in ("raw", "absolute", "positive"):
        for name in ("top_k_intersection", "relevance_rank_accuracy", "relevance_mass_accuracy"):
            ours = REGISTRY[name](case, relevance=relevance)
            assert relative_difference(ours, Q.QUANTUS[name](case, relevance=relevance)) < 1e-6


def test_quantus_defect_sparseness_depends_on_the_maps_scale():
    """Gini is scale-free (ours: the same for R and 1e-6 R); Quantus's added 1e-7 is not."""
    case = dense_setting()
    small = case.with_relevance(case.relevance * 1e-6)
    assert relative_difference(complexity.sparseness(case), complexity.sparseness(small)) < 1e-12
    theirs, theirs_small = Q.quantus_sparseness(case), Q.quantus_sparseness(small)
    assert np.all(theirs_small < 0.5 * theirs)


def test_quantus_defect_mprt_average_includes_the_original_model():
    """MPRT(return_average_correlation=True) skips a layer named "orig" but stores "original", so it
    averages the map against the unrandomized model's map (similarity 1) into the mean over layers:
    (1 + sum of the L layers) / (L + 1) instead of the mean of the L layers."""
    case = dense_setting()
    names, per_layer = randomization.model_parameter_randomization(case)
    metric = quantus.MPRT(seed=case.seed, abs=True, normalise=False, return_average_correlation=True,
                          disable_warnings=True)
    theirs = np.asarray(Q._run(metric, case, with_explain=True))
    expected = (1 + per_layer.sum(0).numpy()) / (len(names) + 1)
    np.testing.assert_allclose(theirs, expected, rtol=1e-9)
    assert relative_difference(randomization.mprt_cascading(case), theirs) > 1e-3


def test_quantus_defect_mprt_fails_with_its_own_ssim():
    """quantus.similarity_func.ssim returns a list; MPRT calls .tolist() on it (AttributeError), so
    quantus_others wraps it in an array."""
    metric = quantus.MPRT(similarity_func=quantus.similarity_func.ssim, seed=0, normalise=False,
                          disable_warnings=True)
    with pytest.raises(AttributeError, match="tolist"):
        Q._run(metric, dense_setting(), with_explain=True)


def test_quantus_mass_accuracy_uses_raw_relevance():
    """Arras et al. (2022) count positive relevance; Quantus divides raw sums, which differs once the map
    has negative parts (input x gradient has)."""
    case = dense_setting()
    raw = localization.relevance_mass_accuracy(case, relevance="raw").numpy()
    metric = quantus.RelevanceMassAccuracy(abs=False, normalise=False, disable_warnings=True)
    batch = case.x.shape[0]
    theirs = np.asarray(Q._run(metric, case, s_batch=Q._numpy(localization._mask_rows(case)).reshape(batch, 1, -1),
                               a_batch=Q._numpy(case.relevance).reshape(batch, 1, -1),
                               x_batch=Q._numpy(case.x).reshape(batch, 1, -1)))
    assert relative_difference(raw, theirs) < 1e-9
    assert relative_difference(localization.relevance_mass_accuracy(case), theirs) > 1e-3


def test_quantus_runs_leave_the_global_random_state_alone():
    case = dense_setting()
    np.random.seed(5)  # noqa: NPY002 (the global state Quantus uses)
    torch.manual_seed(5)
    numpy_state, torch_state = np.random.get_state()[1].copy(), torch.get_rng_state()  # noqa: NPY002
    Q.quantus_mprt_cascading(case)
    Q.quantus_average_sensitivity(case, samples=2)
    assert np.array_equal(np.random.get_state()[1], numpy_state)  # noqa: NPY002
    assert torch.equal(torch.get_rng_state(), torch_state)
