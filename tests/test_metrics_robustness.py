"""Robustness metrics (xaibench.metrics.robustness) on cases with known answers.

A linear model f(x) = W x: its gradient W[t] does not depend on x, so every sensitivity and the
Lipschitz estimate of the gradient are 0; input x gradient is W[t] * x, so e(x) - e(x') = W[t] * (x - x')
and the values follow in closed form from the noise, which is drawn from RandomState(seed) in
Quantus's order ([samples, B, features], step-major)."""

import numpy as np
import pytest
import torch
from torch import nn

import xaibench
from xaibench.metrics import evaluation as E
from xaibench.metrics import robustness as R

FEATURES, OUTPUTS, BATCH = 12, 3, 4


def linear_model(weight=None):
    model = nn.Linear(FEATURES, OUTPUTS, bias=False).double().eval()
    if weight is not None:
        with torch.no_grad():
            model.weight.copy_(weight)
    return model


def gradient(model, x, target):
    return xaibench.explain(model, x, "gradient", target=target, backend="native").relevance


def input_x_gradient(model, x, target):
    return xaibench.explain(model, x, "input_x_gradient", target=target, backend="native").relevance


def setting(explain, model=None, seed=0, batch_size=256):
    torch.manual_seed(1)
    model = model or linear_model()
    x = torch.randn(BATCH, FEATURES, dtype=torch.float64)
    target = torch.tensor([0, 1, 2, 0])
    return E.Setting(model, x, target, explain(model, x, target), explain=explain, seed=seed, batch_size=batch_size)


def uniform_noise(seed, samples, radius):
    return np.random.RandomState(seed).uniform(-radius, radius, size=(samples, BATCH, FEATURES))


@pytest.mark.parametrize("metric", [R.average_sensitivity, R.max_sensitivity])
def test_sensitivity_of_a_constant_gradient_is_zero(metric):
    values = metric(setting(gradient), samples=5)
    assert values.dtype == torch.float64 and values.shape == (BATCH,)
    assert torch.equal(values, torch.zeros(BATCH, dtype=torch.float64))


def test_lipschitz_of_a_constant_gradient_is_zero():
    values = R.local_lipschitz_estimate(setting(gradient), samples=5)
    assert torch.equal(values, torch.zeros(BATCH, dtype=torch.float64))


def test_sensitivity_of_input_x_gradient_in_closed_form():
    case = setting(input_x_gradient, seed=7)
    weight = case.model.weight.detach()[case.target]                       # [B, F]
    noise = torch.from_numpy(uniform_noise(7, 6, 0.3))                       # [S, B, F]
    ratios = torch.linalg.vector_norm(weight * noise, dim=-1) / torch.linalg.vector_norm(weight * case.x, dim=-1)
    assert torch.allclose(R.average_sensitivity(case, samples=6, radius=0.3), ratios.mean(0), rtol=1e-12)
    assert torch.allclose(R.max_sensitivity(case, samples=6, radius=0.3), ratios.max(0).values, rtol=1e-12)
    plain = torch.linalg.vector_norm(weight * noise, dim=-1).mean(0)
    assert torch.allclose(R.average_sensitivity(case, samples=6, radius=0.3, relative=False), plain, rtol=1e-12)


def test_lipschitz_of_input_x_gradient_is_the_weight_when_it_is_constant():
    """W[t] = c everywhere: ||c (x - x')|| / ||x - x'|| = |c| whatever the noise."""
    weight = torch.full((OUTPUTS, FEATURES), -2.5, dtype=torch.float64)
    values = R.local_lipschitz_estimate(setting(input_x_gradient, linear_model(weight)), samples=7)
    assert torch.allclose(values, torch.full((BATCH,), 2.5, dtype=torch.float64), rtol=1e-9)


def test_lipschitz_of_input_x_gradient_in_closed_form():
    case = setting(input_x_gradient, seed=2)
    weight = case.model.weight.detach()[case.target]
    noise = torch.from_numpy(np.random.RandomState(2).normal(0, 0.05, size=(9, BATCH, FEATURES)))
    ratios = torch.linalg.vector_norm(weight * noise, dim=-1) / (torch.linalg.vector_norm(noise, dim=-1) + 1e-10)
    assert torch.allclose(R.local_lipschitz_estimate(case, samples=9, std=0.05), ratios.max(0).values, rtol=1e-9)


def test_chunking_does_not_change_the_values_and_batches_the_calls():
    calls = []

    def counting(model, x, target):
        calls.append(x.shape[0])
        return input_x_gradient(model, x, target)

    whole = R.average_sensitivity(setting(counting, batch_size=256), samples=10)
    assert calls[1:] == [BATCH * 10]          # the map itself, then one call for all 40 perturbed copies
    calls.clear()
    chunked = R.average_sensitivity(setting(counting, batch_size=9), samples=10)
    assert max(calls[1:]) <= 9 and sum(calls[1:]) == BATCH * 10
    assert torch.equal(whole, chunked)


def test_same_seed_same_values_other_seed_other_values():
    first = R.max_sensitivity(setting(input_x_gradient, seed=3), samples=4)
    again = R.max_sensitivity(setting(input_x_gradient, seed=3), samples=4)
    other = R.max_sensitivity(setting(input_x_gradient, seed=4), samples=4)
    assert torch.equal(first, again) and not torch.equal(first, other)


def test_max_is_at_least_the_average():
    case = setting(input_x_gradient)
    assert bool((R.max_sensitivity(case, samples=8) >= R.average_sensitivity(case, samples=8) - 1e-15).all())


def test_nothing_given_is_modified():
    case = setting(input_x_gradient)
    state = {k: v.clone() for k, v in case.model.state_dict().items()}
    x, relevance = case.x.clone(), case.relevance.clone()
    for metric in (R.average_sensitivity, R.max_sensitivity, R.local_lipschitz_estimate):
        metric(case, samples=3)
    assert torch.equal(case.x, x) and torch.equal(case.relevance, relevance)
    assert all(torch.equal(v, state[k]) for k, v in case.model.state_dict().items())


def test_an_all_zero_map_gives_nan_when_relative():
    case = setting(lambda model, x, target: torch.zeros_like(x))
    assert torch.isnan(R.average_sensitivity(case, samples=2)).all()
    assert torch.equal(R.average_sensitivity(case, samples=2, relative=False), torch.zeros(BATCH, dtype=torch.float64))


@pytest.mark.parametrize("options, message", [({"samples": 0}, "samples"), ({"samples": 2.5}, "samples"),
                                              ({"radius": -0.1}, "radius")])
def test_bad_options(options, message):
    with pytest.raises(ValueError, match=message):
        R.average_sensitivity(setting(gradient), **options)


def test_needs_explain():
    case = setting(gradient)
    case.explain = None
    with pytest.raises(ValueError, match="explain"):
        R.local_lipschitz_estimate(case)
    with pytest.raises(ValueError, match="std"):
        R.local_lipschitz_estimate(setting(gradient), std=0)


def test_registered_entries():
    names = {metric.name: metric for metric in R.METRICS}
    assert set(names) == {"average_sensitivity", "max_sensitivity", "local_lipschitz_estimate"}
    for metric in names.values():
        assert metric.category == "robustness" and metric.needs == ("explain",) and not metric.higher_is_better
        assert metric.optimum == 0.0 and not metric.deterministic and metric.source
    values = names["average_sensitivity"](setting(input_x_gradient))
    assert values.shape == (BATCH,) and torch.isfinite(values).all()
