"""Randomization metrics (xaibench.metrics.randomization) on cases with known answers."""

import copy

import numpy as np
import pytest
import scipy.stats
import torch
from torch import nn

import xaibench
from xaibench.metrics import evaluation as E
from xaibench.metrics import randomization as Z

FEATURES, HIDDEN, OUTPUTS, BATCH = 10, 8, 3, 4


def two_layer_model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(FEATURES, HIDDEN), nn.Linear(HIDDEN, OUTPUTS)).double().eval()


def gradient(model, x, target):
    return xaibench.explain(model, x, "gradient", target=target, backend="native").relevance


def setting(explain=gradient, model=None, seed=0, target=(0, 1, 2, 0)):
    model = model or two_layer_model()
    x = torch.randn(BATCH, FEATURES, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    target = torch.tensor(target)
    return E.Setting(model, x, target, explain(model, x, target), explain=explain, seed=seed)


def reset_as_documented(model, names, seed):
    """Every named layer of a deep copy reset under torch.manual_seed(seed + 1), in this order."""
    randomized = copy.deepcopy(model)
    for name in names:
        torch.manual_seed(seed + 1)
        randomized.get_submodule(name).reset_parameters()
    return randomized


def spearman_abs(a, b):
    return np.array([scipy.stats.spearmanr(np.abs(p), np.abs(q))[0] for p, q in zip(a.numpy(), b.numpy())])


@pytest.mark.parametrize("order, steps", [("cascading", [["1"], ["1", "0"]]), ("independent", [["1"], ["0"]])])
def test_mprt_equals_spearman_of_the_reset_models(order, steps):
    """Linear-linear network: the gradient is W0^T W1[t]; each step's model is the documented reset."""
    case = setting(seed=4)
    names, per_layer = Z.model_parameter_randomization(case, order=order)
    assert names == ["1", "0"] and per_layer.shape == (2, BATCH) and per_layer.dtype == torch.float64
    with torch.random.fork_rng(devices=[]):
        for row, layers in zip(per_layer, steps):
            randomized = reset_as_documented(case.model, layers, 4)
            expected = spearman_abs(case.relevance, gradient(randomized, case.x, case.target))
            np.testing.assert_allclose(row.numpy(), expected, rtol=1e-12)


def test_a_map_that_ignores_the_model_scores_one_and_the_mean_is_over_layers():
    case = setting(explain=lambda model, x, target: x * 2)
    for metric in (Z.mprt_cascading, Z.mprt_independent):
        assert torch.allclose(metric(case), torch.ones(BATCH, dtype=torch.float64))


def test_a_map_of_the_first_layer_only_keeps_its_similarity_when_the_top_is_randomized():
    """explain = |x| * |column sums of W0|: re-initializing layer 1 alone leaves it unchanged (1), layer 0
    changes it; the mean over the two layers is (1 + s0) / 2."""
    def first_layer_map(model, x, target):
        return x.abs() * model[0].weight.detach().abs().sum(0)

    case = setting(explain=first_layer_map)
    names, per_layer = Z.model_parameter_randomization(case, order="independent")
    assert torch.equal(per_layer[0], torch.ones(BATCH, dtype=torch.float64))
    assert bool((per_layer[1] < 1).all())
    assert torch.allclose(Z.mprt_independent(case), (1 + per_layer[1]) / 2)
    assert torch.equal(Z.mprt_independent(case, aggregate="last"), per_layer[1])


def test_the_users_model_and_the_global_random_state_are_unchanged():
    case = setting()
    state = {key: value.clone() for key, value in case.model.state_dict().items()}
    torch.manual_seed(123)
    rng_state = torch.get_rng_state()
    relevance = case.relevance.clone()
    Z.mprt_cascading(case)
    Z.mprt_independent(case)
    Z.random_logit(case)
    assert torch.equal(torch.get_rng_state(), rng_state)
    assert all(torch.equal(value, state[key]) for key, value in case.model.state_dict().items())
    assert torch.equal(case.relevance, relevance)


def test_same_seed_same_values_other_seed_other_values():
    assert torch.equal(Z.mprt_cascading(setting(seed=1)), Z.mprt_cascading(setting(seed=1)))
    assert not torch.equal(Z.mprt_cascading(setting(seed=1)), Z.mprt_cascading(setting(seed=2)))


def test_similarities_match_scipy_and_skimage():
    generator = torch.Generator().manual_seed(0)
    a = torch.randn(3, 40, generator=generator, dtype=torch.float64)
    b = a + torch.randn(3, 40, generator=generator, dtype=torch.float64)
    a[0, :10] = 0.0       # ties
    np.testing.assert_allclose(Z.similarity(a, b, "spearman").numpy(),
                               [scipy.stats.spearmanr(p, q)[0] for p, q in zip(a.numpy(), b.numpy())], rtol=1e-12)
    np.testing.assert_allclose(Z.similarity(a, b, "pearson").numpy(),
                               [scipy.stats.pearsonr(p, q)[0] for p, q in zip(a.numpy(), b.numpy())], rtol=1e-12)
    metrics = pytest.importorskip("skimage.metrics")
    expected = [metrics.structural_similarity(p, q, data_range=float(max(p.max(), q.max()) - min(p.min(), q.min())))
                for p, q in zip(a.numpy(), b.numpy())]
    np.testing.assert_allclose(Z.similarity(a, b, "ssim").numpy(), expected, rtol=1e-10)


def test_similarity_of_a_map_with_itself_and_of_a_constant_map():
    a = torch.randn(2, 20, dtype=torch.float64)
    for kind in Z.SIMILARITIES:
        assert torch.allclose(Z.similarity(a, a.clone(), kind), torch.ones(2, dtype=torch.float64))
    assert torch.isnan(Z.similarity(torch.ones(2, 20), a, "spearman")).all()
    with pytest.raises(ValueError, match="similarity"):
        Z.similarity(a, a, "kendall")
    with pytest.raises(ValueError, match="at least 7"):
        Z.similarity(a[:, :5], a[:, :5], "ssim")


def test_other_outputs_never_pick_the_target_and_cover_the_others():
    target = torch.tensor([0, 3, 9] * 400)
    other = Z.other_outputs(target, 10, seed=0)
    assert not bool((other == target).any())
    assert set(other[target == 3].tolist()) == set(range(10)) - {3}
    assert torch.equal(Z.other_outputs(torch.tensor([0, 1, 1]), 2, 5), torch.tensor([1, 0, 0]))
    with pytest.raises(ValueError, match="at least 2 outputs"):
        Z.other_outputs(target, 1, 0)
    with pytest.raises(ValueError, match="target"):
        Z.other_outputs(torch.tensor([5]), 3, 0)


@pytest.mark.parametrize("factor, expected", [(-1.0, -1.0), (2.0, 1.0)])
def test_random_logit_of_a_two_output_linear_model(factor, expected):
    """Gradient maps are the weight rows; with two outputs the other one is certain: W[1] = factor W[0]."""
    model = nn.Linear(FEATURES, 2, bias=False).double().eval()
    with torch.no_grad():
        model.weight[1] = factor * model.weight[0]
    case = setting(model=model, target=(0, 1, 1, 0))
    assert torch.allclose(Z.random_logit(case, similarity="pearson"), torch.full((BATCH,), expected,
                                                                                 dtype=torch.float64))
    assert torch.allclose(Z.random_logit(case, similarity="pearson", absolute=True),
                          torch.ones(BATCH, dtype=torch.float64))


def test_random_logit_uses_the_flat_output_size_of_dense_outputs():
    model = nn.Sequential(nn.Linear(FEATURES, 12), nn.Unflatten(1, (1, 3, 4))).double().eval()
    case = setting(model=model, target=(0, 11, 5, 7))
    assert Z.output_count(model, case.x) == 12
    values = Z.random_logit(case, similarity="spearman")
    assert values.shape == (BATCH,) and torch.isfinite(values).all()


def test_bad_options_and_missing_explain():
    with pytest.raises(ValueError, match="order"):
        Z.model_parameter_randomization(setting(), order="bottom_up")
    with pytest.raises(ValueError, match="similarity"):
        Z.mprt_cascading(setting(), similarity="cosine")
    with pytest.raises(ValueError, match="aggregate"):
        Z.mprt_cascading(setting(), aggregate="median")
    case = setting()
    case.explain = None
    with pytest.raises(ValueError, match="explain"):
        Z.random_logit(case)
    no_parameters = setting(model=nn.Sequential(nn.Flatten()).eval(), explain=lambda m, x, t: x, target=(0, 1, 2, 3))
    with pytest.raises(ValueError, match="no layer"):
        Z.mprt_cascading(no_parameters)


def test_registered_entries():
    names = {metric.name: metric for metric in Z.METRICS}
    assert set(names) == {"mprt_cascading", "mprt_independent", "random_logit"}
    for metric in names.values():
        assert metric.category == "randomization" and metric.needs == ("explain",)
        assert not metric.higher_is_better and metric.optimum == 0.0 and metric.source


def test_mprt_over_the_union_support_ignores_the_zeros_both_maps_share():
    """A map non-zero on 10 of 1000 features (a small receptive field): maps that disagree completely
    inside those 10 features have Spearman near 1 over all features (990 tied zeros agree) but -1
    over the union of their supports, the features where either is non-zero."""
    from xaibench.metrics.randomization import _compare

    original = torch.zeros(1, 1000, dtype=torch.float64)
    other = torch.zeros(1, 1000, dtype=torch.float64)
    original[0, :10] = torch.arange(1.0, 11.0)
    other[0, :10] = torch.arange(10.0, 0.0, -1.0)
    assert float(_compare(original, other, "spearman", absolute=True, support="all")) > 0.99
    assert float(_compare(original, other, "spearman", absolute=True, support="union")) == pytest.approx(-1.0)
    # maps without zeros: the two supports are the same
    dense, shuffled = original + 1.0, other + 1.0
    assert torch.allclose(_compare(dense, shuffled, "spearman", True, "all"),
                          _compare(dense, shuffled, "spearman", True, "union"))
    with pytest.raises(ValueError, match="support"):
        _compare(original, other, "spearman", True, "some")


def test_random_logit_over_the_union_support_sees_maps_of_distant_pixels_differ():
    """A 3x3 convolution's map of one output pixel is non-zero on 9 inputs: the maps of two distant
    pixels share no support. Over all 1024 features their SSIM is near 1 (the zeros agree); over
    the union of their supports it is not."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 1, 3, padding=1)).double().eval()
    x = torch.randn(2, 1, 32, 32, dtype=torch.float64)
    case = E.Setting(model, x, torch.tensor([33, 990]), gradient(model, x, torch.tensor([33, 990])), explain=gradient,
                     seed=0)
    everywhere = Z.random_logit(case, support="all")
    on_support = Z.random_logit(case)
    assert bool((everywhere > 0.9).all())
    assert bool((on_support < 0.5).all())
