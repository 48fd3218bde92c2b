"""Localization: does the relevance lie where it should (a known region, setting.mask)? Deterministic.

    top_k_intersection(setting, k=0.1, relevance="raw")        |top-k features ∩ mask| / k (Theiner et al. 2021)
    relevance_rank_accuracy(setting, relevance="raw")           |top-K ∩ mask| / K, K = |mask| (Arras et al. 2022)
    relevance_mass_accuracy(setting, relevance="positive")      sum of R inside the mask / sum of R (Arras et al. 2022)

setting.mask is bool (or 0/1), broadcastable to the relevance's shape: one region for every sample
(e.g. a (lat, lon) box of [lat, lon] for maps [B, lat, lon]) or one per sample. A sample with an empty
mask gets NaN. Higher is better, 1 is perfect. Definitions: docs/metrics/localization.md.
"""

from __future__ import annotations

import torch

from .evaluation import Metric, Setting

RELEVANCE_KINDS = ("raw", "absolute", "positive")


def _mask_rows(setting: Setting) -> torch.Tensor:
    """[B, features] bool on the CPU: setting.mask broadcast to the relevance's shape."""
    mask = setting.mask
    if mask is None:
        raise ValueError("localization metrics need setting.mask (where the relevance should be)")
    mask = torch.as_tensor(mask).detach().cpu()
    if mask.dtype != torch.bool:
        if bool(((mask != 0) & (mask != 1)).any()):
            raise ValueError(f"mask must be bool (or 0/1), got dtype {mask.dtype} with other values")
        mask = mask != 0
    shape = tuple(setting.relevance.shape)
    try:
        mask = torch.broadcast_to(mask, shape)
    except RuntimeError:
        raise ValueError(f"mask of shape {tuple(mask.shape)} does not broadcast to the relevance's {shape}") from None
    return mask.reshape(shape[0], -1)


def _relevance_rows(setting: Setting, kind: str) -> torch.Tensor:
    """[B, features] float64 on the CPU: R, |R| or max(R, 0)."""
    if kind not in RELEVANCE_KINDS:
        raise ValueError(f"relevance must be one of {RELEVANCE_KINDS}, got {kind!r}")
    rows = setting.relevance.detach().reshape(setting.relevance.shape[0], -1).double().cpu()
    if kind == "absolute":
        return rows.abs()
    if kind == "positive":
        return rows.clamp(min=0)
    return rows


def _hits_in_top(values: torch.Tensor, mask: torch.Tensor, count: int) -> torch.Tensor:
    """[B] float64: how many of each row's `count` largest values lie in its mask. Values tied with the
    count-th largest share the remaining places: each counts (places left) / (tied values), the
    expectation over a random tie-break, so the answer does not depend on a sort's order (Quantus's
    argsort picks among ties by numpy's quicksort order; maps with many zeros, e.g. a CNN's
    receptive field, have such ties)."""
    threshold = values.topk(count, dim=1).values[:, -1:]
    above = values > threshold
    tied = values == threshold
    places_left = count - above.sum(1)
    tied_share = places_left.double() / tied.sum(1).double()
    return (above & mask).sum(1).double() + tied_share * (tied & mask).sum(1).double()


def _empty_to_nan(scores: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return torch.where(mask.any(1), scores, torch.full_like(scores, float("nan")))


def feature_count(k: int | float, features: int) -> int:
    """k as a number of features: an int is a count, a float in (0, 1] a fraction (at least 1)."""
    if isinstance(k, bool) or not isinstance(k, (int, float)):
        raise ValueError(f"k must be an int (a count) or a float in (0, 1] (a fraction), got {k!r}")
    if isinstance(k, float):
        if not 0 < k <= 1:
            raise ValueError(f"k as a fraction must lie in (0, 1], got {k}")
        return max(1, round(k * features))
    if not 0 < k <= features:
        raise ValueError(f"k = {k} features, but the map has {features} (k must lie in [1, {features}])")
    return k


def top_k_intersection(setting: Setting, *, k: int | float = 0.1, relevance: str = "raw") -> torch.Tensor:
    """[B] float64: the share of the k most relevant features that lie in the mask (Theiner et al.
    2021; Quantus TopKIntersection). k: a count or a fraction of the features (default 10%).
    relevance: rank R ("raw", as Quantus abs=False), |R| or max(R, 0)."""
    mask = _mask_rows(setting)
    values = _relevance_rows(setting, relevance)
    count = feature_count(k, values.shape[1])
    return _empty_to_nan(_hits_in_top(values, mask, count) / count, mask)


def relevance_rank_accuracy(setting: Setting, *, relevance: str = "raw") -> torch.Tensor:
    """[B] float64: with K = |mask| features in the mask, the share of the K most relevant features
    that lie in it (Arras et al. 2022; Quantus RelevanceRankAccuracy)."""
    mask = _mask_rows(setting)
    values = _relevance_rows(setting, relevance)
    sizes = mask.sum(1)
    scores = torch.empty(values.shape[0], dtype=torch.float64)
    for size in sizes.unique().tolist():
        rows = sizes == size
        hits = _hits_in_top(values[rows], mask[rows], max(int(size), 1))
        scores[rows] = hits / max(int(size), 1)
    return _empty_to_nan(scores, mask)


def relevance_mass_accuracy(setting: Setting, *, relevance: str = "positive") -> torch.Tensor:
    """[B] float64: the relevance inside the mask over all relevance, sum_{i in mask} R_i / sum_i R_i.
    Arras et al. (2022) count positive relevance only (default "positive": max(R, 0)), so the value
    lies in [0, 1]; Quantus RelevanceMassAccuracy uses the raw R ("raw"), whose ratio can leave [0, 1]
    or blow up when the signed sum is near 0. NaN for an empty mask or a zero denominator."""
    mask = _mask_rows(setting)
    values = _relevance_rows(setting, relevance)
    inside = (values * mask).sum(1)
    total = values.sum(1)
    scores = torch.where(total != 0, inside / total, torch.full_like(total, float("nan")))
    return _empty_to_nan(scores, mask)


SOURCE_ARRAS = ("Arras, Osman, Samek (2022), CLEVR-XAI: a benchmark dataset for the ground truth evaluation of "
                "neural network explanations, Information Fusion")

METRICS = (
    Metric("top_k_intersection", "localization", top_k_intersection, higher_is_better=True, optimum=1.0,
           needs=("mask",), source="Theiner, Müller-Budack, Ewerth (2022), Interpretable semantic photo "
                                   "geolocation, WACV (arXiv 2021)"),
    Metric("relevance_rank_accuracy", "localization", relevance_rank_accuracy, higher_is_better=True, optimum=1.0,
           needs=("mask",), source=SOURCE_ARRAS),
    Metric("relevance_mass_accuracy", "localization", relevance_mass_accuracy, higher_is_better=True, optimum=1.0,
           needs=("mask",), source=SOURCE_ARRAS),
)
