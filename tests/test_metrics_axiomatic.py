"""Axiomatic metrics on cases with a known answer: a linear model whose conserving map is
w * (x - x0), and a linear model with zero weights on some features for non-sensitivity."""

import pytest
import torch
from torch import nn

from xaibench.metrics import axiomatic as A
from xaibench.metrics.evaluation import Setting, metrics


def linear_model(n_features: int, zero_features=(), seed: int = 0):
    torch.manual_seed(seed)
    layer = nn.Linear(n_features, 2).double()
    with torch.no_grad():
        layer.weight[:, list(zero_features)] = 0.0
    return nn.Sequential(nn.Flatten(), layer).eval(), layer.weight.detach()


@pytest.fixture
def case():
    model, weight = linear_model(12)
    x = torch.randn(4, 3, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    target = torch.tensor([0, 1, 1, 0])
    return model, x, target, weight[target].reshape(x.shape)


def test_completeness_of_a_conserving_map_is_zero_and_of_a_doubled_map_one(case):
    model, x, target, gradient = case
    assert A.completeness(model, x, target, gradient * x).max() < 1e-13
    assert torch.allclose(A.completeness(model, x, target, 2 * gradient * x), torch.ones(4, dtype=torch.float64))
    assert torch.allclose(A.completeness(model, x, target, torch.zeros_like(x)), torch.ones(4, dtype=torch.float64))


def test_completeness_against_a_baseline_and_where_it_is_undefined(case):
    model, x, target, gradient = case
    baseline = torch.randn(3, 4, dtype=torch.float64)
    assert A.completeness(model, x, target, gradient * (x - baseline), baseline=baseline).max() < 1e-13
    at_baseline = A.completeness(model, baseline.expand_as(x), target, gradient, baseline=baseline)
    assert torch.isnan(at_baseline).all()      # f(x) = f(x0): no difference to explain


def test_non_sensitivity_counts_features_where_zero_attribution_and_no_effect_disagree():
    model, weight = linear_model(10, zero_features=(1, 4, 7))
    x = torch.randn(2, 10, dtype=torch.float64)
    target = torch.tensor([0, 1])
    gradient = weight[target]
    ones = torch.ones_like(x)
    assert A.non_sensitivity(model, x, target, gradient, fraction=False).tolist() == [0.0, 0.0]
    # a map of ones gives relevance to the 3 features the model ignores
    assert A.non_sensitivity(model, x, target, ones, fraction=False).tolist() == [3.0, 3.0]
    assert A.non_sensitivity(model, x, target, ones).tolist() == [0.3, 0.3]
    # a map that misses 2 used features (zero there) disagrees there too
    missing = gradient.clone()
    missing[:, [0, 2]] = 0.0
    assert A.non_sensitivity(model, x, target, missing, fraction=False).tolist() == [2.0, 2.0]
    # groups of 5: group 0 (features 0-4) and group 1 (5-9) both matter; the all-ones map agrees
    assert A.non_sensitivity(model, x, target, ones, features_in_step=5, fraction=False).tolist() == [0.0, 0.0]


def test_non_sensitivity_relative_attribution_threshold():
    model, weight = linear_model(4, zero_features=(3,))
    x = torch.ones(1, 4, dtype=torch.float64)
    relevance = torch.tensor([[1.0, 1.0, 1.0, 1e-7]], dtype=torch.float64)   # 1e-7 of the max: zero
    assert A.non_sensitivity(model, x, torch.tensor([0]), relevance, fraction=False).item() == 0.0
    tiny = relevance * 1e-9                                                   # the scale does not matter
    assert A.non_sensitivity(model, x, torch.tensor([0]), tiny, fraction=False).item() == 0.0


def test_non_sensitivity_baseline_perturbation_misses_a_feature_at_the_baseline():
    model, weight = linear_model(4)
    x = torch.tensor([[1.0, 0.0, 2.0, -1.0]], dtype=torch.float64)   # feature 1 is already at baseline 0
    gradient = weight[:1]
    uniform = A.non_sensitivity(model, x, torch.tensor([0]), gradient, fraction=False)
    baseline = A.non_sensitivity(model, x, torch.tensor([0]), gradient, perturbation="baseline", fraction=False)
    assert uniform.item() == 0.0 and baseline.item() == 1.0


def test_axiomatic_bad_input(case):
    model, x, target, gradient = case
    with pytest.raises(ValueError, match="perturbation"):
        A.non_sensitivity(model, x, target, gradient, perturbation="gaussian")
    with pytest.raises(ValueError, match="nr_samples"):
        A.non_sensitivity(model, x, target, gradient, nr_samples=0)
    with pytest.raises(ValueError, match="differ in shape"):
        A.completeness(model, x, target, gradient[:, :2])
    with pytest.raises(ValueError, match="baseline"):
        A.completeness(model, x, target, gradient, baseline=torch.zeros(5))


def test_axiomatic_metrics_are_registered(case):
    model, x, target, gradient = case
    registry = metrics()
    setting = Setting(model, x, target, gradient * x)
    for name in ("completeness", "non_sensitivity"):
        metric = registry[name]
        assert metric.category == "axiomatic" and metric.optimum == 0.0 and not metric.higher_is_better
        values = metric(setting)
        assert values.dtype == torch.float64 and values.shape == (4,)
        assert torch.equal(values, metric(setting))
    assert registry["completeness"](setting).max() < 1e-13


def test_non_sensitivity_needs_no_change_in_every_draw():
    """f = relu(x0 - 0.5) at x0 = 0: draws of x0 below 0.5 change nothing, draws above do. The
    feature has an effect (the map of ones that credits it is right: 0); counting it as "no
    effect" because one draw changed nothing would give 1."""
    model = nn.Sequential(nn.Flatten(), nn.Linear(2, 1), nn.ReLU()).double().eval()
    with torch.no_grad():
        model[1].weight[:] = torch.tensor([[1.0, 0.0]])
        model[1].bias[:] = -0.5
    x = torch.zeros(1, 2, dtype=torch.float64)
    relevance = torch.tensor([[1.0, 0.0]], dtype=torch.float64)
    assert A.non_sensitivity(model, x, torch.tensor([0]), relevance, nr_samples=16, fraction=False).item() == 0.0
