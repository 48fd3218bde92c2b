"""Complexity (sparseness, entropy) and localization metrics on maps with known answers."""

import math

import pytest
import torch
from torch import nn

from xaibench.metrics import complexity as C
from xaibench.metrics import evaluation as E
from xaibench.metrics import localization as L

N = 20


def setting(relevance, mask=None):
    relevance = torch.as_tensor(relevance, dtype=torch.float64)
    x = torch.zeros_like(relevance)
    return E.Setting(nn.Identity(), x, torch.zeros(relevance.shape[0], dtype=torch.long), relevance, mask=mask)


def one_hot(n=N, at=3, value=-2.0):
    row = torch.zeros(n, dtype=torch.float64)
    row[at] = value
    return row


# --- complexity -------------------------------------------------------------------------------------------

def test_gini_and_entropy_of_one_hot_and_constant_maps():
    maps = torch.stack([one_hot(), torch.full((N,), 0.7, dtype=torch.float64)])
    assert torch.allclose(C.sparseness(setting(maps)), torch.tensor([1 - 1 / N, 0.0], dtype=torch.float64),
                          atol=1e-15)
    assert torch.allclose(C.complexity(setting(maps)), torch.tensor([0.0, math.log(N)], dtype=torch.float64),
                          atol=1e-15)


def test_gini_and_entropy_by_hand():
    """|R| = [0, 0, 1, 1]: sum (2i - 5) a_(i) / (4 * 2) = (1 + 3) / 8; p = [1, 1, 2] / 4:
    entropy = -(2 * 0.25 log 0.25 + 0.5 log 0.5)."""
    assert C.sparseness(setting([[0.0, -1.0, 0.0, 1.0]])).item() == pytest.approx(0.5, rel=1e-15)
    expected = -(2 * 0.25 * math.log(0.25) + 0.5 * math.log(0.5))
    assert C.complexity(setting([[1.0, -1.0, 2.0]])).item() == pytest.approx(expected, rel=1e-15)


def test_complexity_metrics_ignore_sign_scale_and_order():
    generator = torch.Generator().manual_seed(0)
    maps = torch.randn(3, 50, generator=generator, dtype=torch.float64)
    changed = -1e-4 * maps[:, torch.randperm(50, generator=generator)]
    for metric in (C.sparseness, C.complexity):
        assert torch.allclose(metric(setting(maps)), metric(setting(changed)), rtol=1e-12)


def test_quantus_epsilon_makes_sparseness_depend_on_scale():
    maps = torch.stack([one_hot(value=1e-6)])
    assert C.sparseness(setting(maps)).item() == pytest.approx(1 - 1 / N)
    # with Quantus's 1e-7 the one-hot map of height 1e-6 loses most of its sparseness: g * a / (a + n eps)
    assert C.sparseness(setting(maps), epsilon=1e-7).item() == pytest.approx((1 - 1 / N) * 1e-6 / (1e-6 + N * 1e-7))
    with pytest.raises(ValueError, match="epsilon"):
        C.sparseness(setting(maps), epsilon=-1.0)


def test_an_all_zero_map_is_nan_and_inputs_are_kept():
    maps = torch.stack([torch.zeros(N, dtype=torch.float64), one_hot()])
    before = maps.clone()
    assert torch.isnan(C.sparseness(setting(maps))[0]) and torch.isnan(C.complexity(setting(maps))[0])
    assert not torch.isnan(C.complexity(setting(maps))[1])
    assert torch.equal(maps, before)


# --- localization -----------------------------------------------------------------------------------------

def ranked_maps():
    """Two samples [2, 4, 5]: relevance 0..19, so the top-k features are the last k of the flat order."""
    return torch.arange(2 * N, dtype=torch.float64).reshape(2, N).remainder(N).reshape(2, 4, 5)


def test_top_k_with_a_mask_over_the_top_k_is_one_and_off_it_zero():
    maps = ranked_maps()
    top = torch.zeros(4, 5, dtype=torch.bool)
    top.view(-1)[-4:] = True                   # the 4 most relevant features, the same mask for every sample
    assert torch.equal(L.top_k_intersection(setting(maps, top), k=4), torch.ones(2, dtype=torch.float64))
    assert torch.equal(L.top_k_intersection(setting(maps, ~top), k=4), torch.zeros(2, dtype=torch.float64))
    assert torch.equal(L.top_k_intersection(setting(maps, top), k=8), torch.full((2,), 0.5, dtype=torch.float64))
    assert torch.equal(L.top_k_intersection(setting(maps, top), k=0.2), torch.ones(2, dtype=torch.float64))


def test_top_k_ranks_signed_relevance_unless_asked():
    maps = ranked_maps() - 12.0                # -12..7: the largest |R| are the first two features
    first = torch.zeros(4, 5, dtype=torch.bool)
    first.view(-1)[:2] = True
    assert torch.equal(L.top_k_intersection(setting(maps, first), k=2), torch.zeros(2, dtype=torch.float64))
    assert torch.equal(L.top_k_intersection(setting(maps, first), k=2, relevance="absolute"),
                       torch.ones(2, dtype=torch.float64))


def test_ties_at_the_kth_value_share_the_remaining_places():
    """R = [5, 1, 1, 1, 1, 0]: k = 3 takes 5 and two of the four 1s; a mask on 5 and two 1s expects
    1 + 2 * (2 / 4) hits -> 2 / 3, whatever order a sort leaves the ties in."""
    maps = torch.tensor([[5.0, 1.0, 1.0, 1.0, 1.0, 0.0]])
    mask = torch.tensor([True, True, False, True, False, False])
    assert L.top_k_intersection(setting(maps, mask), k=3).item() == pytest.approx(2 / 3, rel=1e-15)
    assert L.relevance_rank_accuracy(setting(maps, mask)).item() == pytest.approx(2 / 3, rel=1e-15)


def test_rank_accuracy_by_hand_with_per_sample_masks():
    maps = ranked_maps()
    mask = torch.zeros(2, 4, 5, dtype=torch.bool)
    mask[0].view(-1)[[16, 18, 19]] = True      # sample 0: K = 3, top 3 = 17..19, of which 18, 19 -> 2/3
    mask[1].view(-1)[[0, 1, 19, 18]] = True    # sample 1: K = 4, top 4 = 16..19, of which 18, 19 -> 0.5
    assert torch.allclose(L.relevance_rank_accuracy(setting(maps, mask)),
                          torch.tensor([2 / 3, 0.5], dtype=torch.float64), rtol=1e-15)
    mask[0] = False
    mask[0].view(-1)[-3:] = True               # exactly the top 3 -> 1
    assert L.relevance_rank_accuracy(setting(maps, mask))[0].item() == 1.0


def test_mass_accuracy_positive_and_raw():
    maps = torch.tensor([[3.0, 1.0, -2.0, 4.0]], dtype=torch.float64)
    mask = torch.tensor([True, False, True, False])
    assert L.relevance_mass_accuracy(setting(maps, mask)).item() == pytest.approx(3 / 8)
    assert L.relevance_mass_accuracy(setting(maps, mask), relevance="raw").item() == pytest.approx(1 / 6)
    assert L.relevance_mass_accuracy(setting(maps, mask), relevance="absolute").item() == pytest.approx(5 / 10)
    assert L.relevance_mass_accuracy(setting(maps, torch.ones(4, dtype=torch.bool))).item() == 1.0


def test_empty_mask_and_zero_relevance_give_nan():
    maps = ranked_maps()
    mask = torch.zeros(2, 4, 5, dtype=torch.bool)
    mask[1, 0, 0] = True
    for metric in (L.top_k_intersection, L.relevance_rank_accuracy, L.relevance_mass_accuracy):
        values = metric(setting(maps, mask))
        assert torch.isnan(values[0]) and not torch.isnan(values[1])
    negative = setting(-maps - 1, torch.ones(4, 5, dtype=torch.bool))
    assert torch.isnan(L.relevance_mass_accuracy(negative)).all()


def test_a_mask_of_zeros_and_ones_counts_as_bool_and_nothing_is_modified():
    maps = ranked_maps()
    mask = torch.zeros(4, 5)
    mask.view(-1)[-4:] = 1.0
    before = maps.clone(), mask.clone()
    assert torch.equal(L.top_k_intersection(setting(maps, mask), k=4), torch.ones(2, dtype=torch.float64))
    assert torch.equal(maps, before[0]) and torch.equal(mask, before[1])


@pytest.mark.parametrize("options, message", [({"k": 21}, "k = 21"), ({"k": 0}, "k = 0"), ({"k": 1.5}, "fraction"),
                                              ({"k": "10"}, "int"), ({"relevance": "signed"}, "relevance")])
def test_bad_options(options, message):
    with pytest.raises(ValueError, match=message):
        L.top_k_intersection(setting(ranked_maps(), torch.ones(4, 5, dtype=torch.bool)), **options)


def test_bad_masks():
    with pytest.raises(ValueError, match="does not broadcast"):
        L.relevance_rank_accuracy(setting(ranked_maps(), torch.ones(5, 4, dtype=torch.bool)))
    with pytest.raises(ValueError, match="0/1"):
        L.relevance_mass_accuracy(setting(ranked_maps(), torch.full((4, 5), 0.5)))
    with pytest.raises(ValueError, match="setting.mask"):
        L.top_k_intersection(setting(ranked_maps()))


def test_registered_entries():
    for metric in C.METRICS + L.METRICS:
        assert metric.deterministic and metric.source
    assert {m.name: (m.higher_is_better, m.optimum) for m in C.METRICS} == {"sparseness": (True, 1.0),
                                                                           "complexity": (False, 0.0)}
    for metric in L.METRICS:
        assert metric.category == "localization" and metric.needs == ("mask",) and metric.higher_is_better
        assert metric.optimum == 1.0
