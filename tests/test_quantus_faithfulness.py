"""Our faithfulness and axiomatic metrics against Quantus 0.6.0 on the same Setting, and the
Quantus defects we found (Completeness's exact float equality, NonSensitivity's single baseline
perturbation and its broken features_in_step).

Models are float64; Quantus feeds every input through float32 (torch.Tensor(x)), so the inputs are
float32-representable values stored as float64 and the comparison is to 1e-6 relative or better.
The randomized metrics replay our draws through Quantus's numpy calls (quantus_faithfulness.py),
so they agree to rounding as well."""

import numpy as np
import pytest
import torch
from torch import nn

pytest.importorskip("quantus", reason="quantus is not installed: the agreement tests need Quantus 0.6.0")

from xaibench.metrics import axiomatic as A  # noqa: E402
from xaibench.metrics import faithfulness as F  # noqa: E402
from xaibench.metrics.evaluation import Setting, metrics  # noqa: E402
from xaibench.studies.evaluation import quantus_faithfulness as Q  # noqa: E402

TOLERANCE = 1e-6


def relative_difference(ours, theirs) -> float:
    ours, theirs = np.asarray(ours, dtype=np.float64), np.asarray(theirs, dtype=np.float64)
    return float(np.max(np.abs(ours - theirs) / np.maximum(np.maximum(np.abs(ours), np.abs(theirs)), 1e-12)))


@pytest.fixture(scope="module")
def cnn_setting():
    """A small float64 CNN on [B, 2, 6, 8] inputs (two planes), 5 outputs, a random map."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(2, 3, 3, padding=1), nn.Tanh(), nn.Flatten(), nn.Linear(3 * 6 * 8, 5))
    model = model.double().eval()
    x = torch.randn(3, 2, 6, 8).double()                      # float32 values
    relevance = torch.randn(3, 2, 6, 8, dtype=torch.float64)  # no ties
    return Setting(model, x, torch.tensor([0, 3, 4]), relevance)


@pytest.fixture(scope="module")
def flat_setting():
    """A float64 dense net on [B, 40] inputs (the ground-truth network's layout)."""
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(40, 16), nn.ReLU(), nn.Linear(16, 3)).double().eval()
    x = torch.randn(4, 40).double()
    return Setting(model, x, torch.tensor([0, 1, 2, 1]), torch.randn(4, 40, dtype=torch.float64))


CASES = {
    "faithfulness_correlation": {"runs": 20, "subset_size": 5},
    "pixel_flipping_aopc": {"features_in_step": 4},
    "region_perturbation_aopc": {"patch_size": 4},
    "road": {"percentages": [10, 50, 90], "noise": 0.01},
    "monotonicity_correlation": {"nr_samples": 5, "features_in_step": 8},
}


@pytest.mark.parametrize("name", list(CASES))
@pytest.mark.parametrize("setting_name", ["cnn_setting", "flat_setting"])
def test_agrees_with_quantus(name, setting_name, request):
    setting = request.getfixturevalue(setting_name)
    ours = metrics()[name](setting, **CASES[name]).numpy()
    theirs = Q.QUANTUS[name](setting, **CASES[name])
    assert np.isfinite(ours).all()
    assert relative_difference(ours, theirs) <= TOLERANCE


def test_default_options_agree_with_quantus(cnn_setting):
    """No options: both sides use our METRICS defaults (e.g. ceil(n / 50) features per step)."""
    setting = Setting(cnn_setting.model, cnn_setting.x, cnn_setting.target, cnn_setting.relevance,
                      options={"faithfulness_correlation": {"runs": 10}})
    for name in ("faithfulness_correlation", "region_perturbation_aopc"):
        assert relative_difference(metrics()[name](setting).numpy(), Q.QUANTUS[name](setting)) <= TOLERANCE


def test_pixel_flipping_curve_agrees_with_quantus(cnn_setting):
    ours = F.perturbation_curve(cnn_setting.model, cnn_setting.x, cnn_setting.target, cnn_setting.relevance,
                                features_in_step=3)
    assert relative_difference(ours.numpy(), Q.quantus_pixel_flipping_curve(cnn_setting, 3)) <= TOLERANCE


def test_road_accuracy_curve_agrees_with_quantus():
    """A classifier whose class 0 is sum x and class 1 a constant: the accuracy flips once the
    imputation has lowered the sum enough, the same sample and percentage on both sides."""
    torch.manual_seed(3)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 2)).double().eval()
    with torch.no_grad():
        model[1].weight.zero_()
        model[1].weight[0] = 1.0
        model[1].bias[:] = torch.tensor([0.0, 2.0])
    x = (torch.rand(4, 1, 8, 8) + torch.linspace(0, 0.2, 4)[:, None, None, None]).double()
    relevance = x + 0.01 * torch.randn(4, 1, 8, 8, dtype=torch.float64)
    setting = Setting(model, x, torch.zeros(4, dtype=torch.long), relevance)
    percentages = [10, 30, 50, 70, 90, 99]
    ours = F.road_accuracy_curve(model, x, setting.target, relevance, percentages=percentages, noise=0.01)
    theirs = Q.quantus_road_accuracy_curve(setting, percentages, noise=0.01)
    assert np.array_equal(ours.numpy(), theirs)
    assert 0 < ours.sum() < ours.numel()          # the case is not trivial: some samples flip


def test_non_sensitivity_with_baseline_perturbation_agrees_with_quantus(flat_setting):
    model = nn.Linear(40, 3).double()
    with torch.no_grad():
        model.weight[:, ::3] = 0.0
    model = model.eval()
    relevance = flat_setting.relevance.clone()
    relevance[:, 1::4] = 0.0
    setting = Setting(model, flat_setting.x, flat_setting.target, relevance)
    ours = A.non_sensitivity(model, setting.x, setting.target, relevance, perturbation="baseline", fraction=False)
    theirs = Q.quantus_non_sensitivity(setting, fraction=False)
    assert ours.min() > 0 and np.array_equal(ours.numpy(), theirs)


def test_quantus_completeness_exact_equality_fails_a_conserving_float32_map():
    """Quantus's Completeness returns sum R == f(x) - f(x0) by exact float equality: the exact
    map w * x of a float32 linear model is not 'complete' for it (rounding) in 4 of 5 samples, the
    fifth passes by the luck of rounding; ours is below 1e-5 (float32 rounding) for all."""
    torch.manual_seed(4)
    model = nn.Sequential(nn.Flatten(), nn.Linear(50, 2)).eval()
    x = torch.randn(5, 50)
    target = torch.tensor([0, 1, 0, 1, 0])
    conserving = model[1].weight.detach()[target] * x
    setting = Setting(model, x, target, conserving)
    ours = A.completeness(model, x, target, conserving)
    assert ours.max() < 1e-5
    assert Q.quantus_completeness(setting).tolist() == [1.0, 1.0, 0.0, 1.0, 1.0]  # Quantus: 4 of 5 "not complete"


def test_quantus_completeness_agrees_where_equality_is_exact():
    """Integer weights and inputs in float64: every sum is exact, both say complete (0)."""
    model = nn.Sequential(nn.Flatten(), nn.Linear(6, 1, bias=False)).double().eval()
    with torch.no_grad():
        model[1].weight[:] = torch.tensor([[1.0, -2.0, 3.0, 0.0, 4.0, -1.0]])
    x = torch.tensor([[1.0, 2.0, 3.0, 4.0, 5.0, 6.0], [0.0, 1.0, -1.0, 2.0, 1.0, 1.0]], dtype=torch.float64)
    relevance = model[1].weight.detach() * x
    setting = Setting(model, x, torch.zeros(2, dtype=torch.long), relevance)
    assert A.completeness(model, x, setting.target, relevance).tolist() == [0.0, 0.0]
    assert Q.quantus_completeness(setting).tolist() == [0.0, 0.0]


def test_quantus_non_sensitivity_misses_a_feature_at_the_baseline():
    """Nguyen & Martinez: non-sensitivity = |{a_i = 0} symmetric-difference {f does not depend on
    x_i}|. A linear model with weights (w0, 0, w2, w3): the gradient map w is exactly right, the
    answer is 0. Quantus replaces each feature once by the baseline (0): feature 3 already is 0, so
    its replacement changes nothing and Quantus counts it as "no effect" with a non-zero
    attribution (1); our random perturbation (the paper's) finds its effect (0)."""
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 1)).double().eval()
    with torch.no_grad():
        model[1].weight[:] = torch.tensor([[1.5, 0.0, -2.0, 0.5]])
    x = torch.tensor([[1.0, 3.0, -1.0, 0.0]], dtype=torch.float64)
    gradient = model[1].weight.detach().clone()
    setting = Setting(model, x, torch.tensor([0]), gradient)
    assert A.non_sensitivity(model, x, setting.target, gradient, fraction=False).item() == 0.0
    assert Q.quantus_non_sensitivity(setting, fraction=False).tolist() == [1.0]


def test_quantus_non_sensitivity_cannot_group_features():
    """Quantus compares one prediction per group with one attribution per feature: with
    features_in_step > 1 the shapes differ and the XOR fails; ours counts groups."""
    import quantus

    model = nn.Sequential(nn.Flatten(), nn.Linear(8, 1)).double().eval()
    x = torch.randn(2, 1, 8).double()
    relevance = torch.rand(2, 1, 8, dtype=torch.float64)
    metric = quantus.NonSensitivity(features_in_step=2, normalise=False, perturb_baseline=0.0,
                                    disable_warnings=True)
    with pytest.raises(ValueError, match="broadcast"):
        metric(model=Q.FlatInput(model, (1, 8), torch.float64).eval(), x_batch=x.numpy(),
               y_batch=np.zeros(2, dtype=int), a_batch=relevance.numpy(), channel_first=True)
    assert A.non_sensitivity(model, x, torch.zeros(2, dtype=torch.long), relevance, features_in_step=2,
                             fraction=False).shape == (2,)


def test_quantus_faithfulness_rejects_a_per_feature_baseline(cnn_setting):
    setting = Setting(cnn_setting.model, cnn_setting.x, cnn_setting.target, cnn_setting.relevance,
                      baseline=torch.randn(2, 6, 8, dtype=torch.float64))
    with pytest.raises(ValueError, match="per-feature baseline"):
        Q.quantus_pixel_flipping_aopc(setting, features_in_step=4)
