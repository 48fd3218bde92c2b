"""Faithfulness: does removing or perturbing what the map calls relevant change the explained output?

    faithfulness_correlation(model, x, target, relevance, ...)   Bhatt et al. (2020), randomized
    perturbation_curve(model, x, target, relevance, ...)         [B, steps] f(x_k), pixel flipping /
                                                                 region perturbation (Samek et al. 2017)
    pixel_flipping_aopc(...), region_perturbation_aopc(...)      mean_k f(x) - f(x_k) (AOPC)
    noisy_linear_imputation(planes, removed, noise, generator)   Rong et al.'s ROAD imputation
    road_curve(...), road_accuracy_curve(...), road(...)         ROAD (Rong et al. 2022)
    monotonicity_correlation(...)                                Nguyen & Martinez (2020), randomized

Conventions (xaibench.metrics.evaluation): every input element is a feature; the explained output
is model(x)[b].flatten()[target[b]] as it is (no softmax); results are float64 [B] on the CPU;
random draws come from generators made here from `seed`; model, x and relevance are never modified.
Definitions, defaults and costs: docs/metrics/faithfulness.md.
"""

from __future__ import annotations

import math

import numpy as np
import scipy.sparse
import scipy.sparse.linalg
import scipy.stats
import torch
from torch import nn

from .evaluation import Metric, explained_output, from_setting

__all__ = ["faithfulness_correlation", "perturbation_curve", "pixel_flipping_aopc", "region_perturbation_aopc",
           "noisy_linear_imputation", "road_curve", "road_accuracy_curve", "road", "monotonicity_correlation",
           "METRICS"]


# --- shared checks and helpers ---------------------------------------------------------------------
def check_inputs(x: torch.Tensor, target: torch.Tensor, relevance: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(target as a LongTensor [B], relevance on x's device) or a ValueError naming what is wrong."""
    if not isinstance(x, torch.Tensor) or x.ndim < 2:
        raise ValueError(f"x must be a tensor [B, *input] with at least 2 axes, got {getattr(x, 'shape', type(x))}")
    if not isinstance(relevance, torch.Tensor) or relevance.shape != x.shape:
        raise ValueError(f"relevance {tuple(getattr(relevance, 'shape', ()))} and x {tuple(x.shape)} differ in shape")
    target = torch.as_tensor(target)
    if target.shape != (x.shape[0],) or target.dtype.is_floating_point:
        raise ValueError(f"target must be integer indices [B] = [{x.shape[0]}], "
                         f"got {tuple(target.shape)} {target.dtype}")
    return target.long(), relevance.to(x.device)


def baseline_for(x: torch.Tensor, baseline) -> torch.Tensor:
    """The value a removed feature takes, broadcast to x: None = zeros, a number, or a tensor
    broadcastable to x (e.g. a per-feature mean or climatology [*input])."""
    if baseline is None:
        return torch.zeros_like(x)
    baseline = torch.as_tensor(baseline).to(x.device, x.dtype)
    try:
        return torch.broadcast_to(baseline, x.shape)
    except RuntimeError:
        raise ValueError(f"baseline {tuple(baseline.shape)} cannot be broadcast to x {tuple(x.shape)}") from None


def positive_int(value, name: str, largest: int | None = None) -> int:
    """value as an int >= 1 (and <= largest), else a ValueError naming the option."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    if largest is not None and value > largest:
        raise ValueError(f"{name} = {value} is larger than the number of features ({largest})")
    return int(value)


def outputs_of_rows(model: nn.Module, make_rows, n_rows: int, target_index, batch_size: int) -> torch.Tensor:
    """[n_rows] float64: the explained output of rows made chunk by chunk (make_rows(start, stop)
    returns rows [stop - start, *input]), so that at most batch_size perturbed copies exist at once."""
    values = [explained_output(model, make_rows(start, min(start + batch_size, n_rows)), target_index, batch_size)
              for start in range(0, n_rows, batch_size)]
    return torch.cat(values) if values else torch.zeros(0, dtype=torch.float64)


def pearson_rows(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per row Pearson correlation of float64 [B, n] tensors; NaN where either row is constant."""
    a = a - a.mean(1, keepdim=True)
    b = b - b.mean(1, keepdim=True)
    denominator = (a.square().sum(1) * b.square().sum(1)).sqrt()
    return torch.where(denominator > 0, (a * b).sum(1) / denominator, torch.full_like(denominator, math.nan))


def spearman_rows(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per row Spearman correlation (ties get average ranks, as scipy.stats.spearmanr)."""
    rank_a = torch.from_numpy(scipy.stats.rankdata(a.numpy(), axis=1))
    rank_b = torch.from_numpy(scipy.stats.rankdata(b.numpy(), axis=1))
    return pearson_rows(rank_a.double(), rank_b.double())


# --- faithfulness correlation (Bhatt et al. 2020) ---------------------------------------------------
def random_subsets(n_samples: int, n_features: int, runs: int, subset_size: int, seed: int) -> torch.Tensor:
    """[B, runs, subset_size] long: for each sample and run a uniform random subset of the features
    (without replacement), drawn sample by sample from torch.Generator(seed) on the CPU."""
    generator = torch.Generator().manual_seed(seed)
    return torch.stack([torch.rand(runs, n_features, generator=generator, dtype=torch.float64).topk(subset_size, 1)
                        .indices for _ in range(n_samples)]) if n_samples else torch.zeros(0, runs, subset_size).long()


def default_subset_size(n_features: int, subset_fraction: float) -> int:
    """round(subset_fraction * n_features), at least 1."""
    if not 0 < subset_fraction <= 1:
        raise ValueError(f"subset_fraction must be in (0, 1], got {subset_fraction}")
    return max(1, round(subset_fraction * n_features))


def faithfulness_correlation(model: nn.Module, x: torch.Tensor, target: torch.Tensor, relevance: torch.Tensor, *,
                             baseline=None, runs: int = 100, subset_size: int | None = None,
                             subset_fraction: float = 0.05, seed: int = 0, batch_size: int = 256,
                             subsets: torch.Tensor | None = None) -> torch.Tensor:
    """[B] float64: Pearson correlation over `runs` random subsets S of the features between
    sum_{i in S} R_i and f(x) - f(x with S set to the baseline) (Bhatt et al. 2020, IJCAI).

    subset_size: |S| (default round(subset_fraction * n_features), at least 1). subsets: the draws
    [B, runs, |S|] to use instead of random_subsets(...) (to replay another library's draws).
    Cost: runs + 1 model calls per sample. NaN where the map sums or the output drops are constant."""
    target, relevance = check_inputs(x, target, relevance)
    n_samples, n_features = x.shape[0], x[0].numel()
    if subsets is None:
        runs = positive_int(runs, "runs")
        size = default_subset_size(n_features, subset_fraction) if subset_size is None else subset_size
        size = positive_int(size, "subset_size", n_features)
        subsets = random_subsets(n_samples, n_features, runs, size, seed)
    elif subsets.ndim != 3 or subsets.shape[0] != n_samples:
        raise ValueError(f"subsets must be [B={n_samples}, runs, size], got {tuple(subsets.shape)}")
    runs = subsets.shape[1]
    flat_x = x.reshape(n_samples, -1)
    flat_baseline = baseline_for(x, baseline).reshape(n_samples, -1)
    flat_relevance = relevance.reshape(n_samples, -1).double().cpu()
    original = explained_output(model, x, target, batch_size)
    relevance_sums = flat_relevance.gather(1, subsets.reshape(n_samples, -1)).reshape(n_samples, runs, -1).sum(2)
    drops = torch.empty(n_samples, runs, dtype=torch.float64)
    for sample in range(n_samples):
        chosen = subsets[sample].to(x.device)

        def make_rows(start, stop, sample=sample, chosen=chosen):
            rows = flat_x[sample].repeat(stop - start, 1)
            rows.scatter_(1, chosen[start:stop], flat_baseline[sample][chosen[start:stop]])
            return rows.reshape(stop - start, *x.shape[1:])

        drops[sample] = original[sample] - outputs_of_rows(model, make_rows, runs, target[sample], batch_size)
    return pearson_rows(relevance_sums, drops)


# --- pixel flipping and region perturbation (Samek et al. 2017) --------------------------------------
def flip_steps(relevance: torch.Tensor, features_in_step: int) -> torch.Tensor:
    """[B, n] long: the step (0-based) at which each feature is removed when features are removed
    in order of decreasing relevance (ties by position), features_in_step at a time."""
    flat = relevance.reshape(relevance.shape[0], -1)
    order = torch.argsort(flat, dim=1, descending=True, stable=True)
    rank = torch.empty_like(order)
    rank.scatter_(1, order, torch.arange(flat.shape[1], device=flat.device).expand_as(order).contiguous())
    return rank // features_in_step


def patch_ids(shape: tuple[int, ...], patch_size: int) -> tuple[torch.Tensor, int]:
    """(patch id of each feature of one sample [*input] as a flat [n] long tensor, number of patches).

    Patches are patch_size x patch_size squares of the last two axes (for a 1-D input, segments of
    patch_size along it) spanning every leading axis (channels, time). Where the size is not a
    multiple of patch_size, the grid is shifted by floor(padding / 2) like Quantus's
    RegionPerturbation, so the edge patches are partial."""
    spatial = shape[-2:] if len(shape) >= 2 else (1, shape[-1])
    coordinates = []
    for size in spatial:
        patch = patch_size if size > 1 or len(shape) >= 2 else 1
        shift = ((-size) % patch) // 2
        coordinates.append((torch.arange(size) + shift) // patch)
    n_cols = -(-(spatial[1] + ((-spatial[1]) % patch_size)) // patch_size)
    ids = coordinates[0][:, None] * n_cols + coordinates[1][None, :]
    ids = ids.expand(*shape[:-2], *spatial) if len(shape) >= 2 else ids[0]
    n_rows = int(coordinates[0].max()) + 1
    return ids.reshape(-1), n_rows * n_cols


def region_steps(relevance: torch.Tensor, patch_size: int) -> tuple[torch.Tensor, int]:
    """([B, n] long step of each feature, number of patches): patches removed in order of
    decreasing summed relevance (ties by patch position)."""
    ids, n_patches = patch_ids(tuple(relevance.shape[1:]), patch_size)
    ids = ids.to(relevance.device)
    flat = relevance.reshape(relevance.shape[0], -1).double()
    sums = torch.zeros(flat.shape[0], n_patches, dtype=torch.float64, device=flat.device)
    sums.index_add_(1, ids, flat)
    order = torch.argsort(sums, dim=1, descending=True, stable=True)
    patch_rank = torch.empty_like(order)
    patch_rank.scatter_(1, order, torch.arange(n_patches, device=flat.device).expand_as(order).contiguous())
    return patch_rank[:, ids], n_patches


def perturbation_curve(model: nn.Module, x: torch.Tensor, target: torch.Tensor, relevance: torch.Tensor, *,
                       features_in_step: int | None = 1, patch_size: int | None = None, steps: int | None = None,
                       baseline=None, batch_size: int = 256) -> torch.Tensor:
    """[B, steps] float64: f(x_k), k = 1..steps, where x_k has the k most relevant groups set to
    the baseline (cumulatively; most relevant first, "MoRF").

    Pixel flipping (patch_size None): a group is features_in_step features in order of decreasing
    relevance (signed), ceil(n / features_in_step) groups. Region perturbation (patch_size given):
    a group is a patch_size x patch_size square of the last two axes over all leading axes (a
    segment for 1-D inputs), ranked by its summed relevance. steps: only the first steps groups
    (default all). baseline: None (zeros), a number or a tensor broadcastable to x (a per-feature
    mean or climatology). Cost: steps model calls per sample."""
    target, relevance = check_inputs(x, target, relevance)
    n_samples, n_features = x.shape[0], x[0].numel()
    if patch_size is None:
        features_in_step = positive_int(features_in_step, "features_in_step", n_features)
        step_of_feature, n_groups = flip_steps(relevance, features_in_step), math.ceil(n_features / features_in_step)
    else:
        patch_size = positive_int(patch_size, "patch_size", max(x.shape[-2:]) if x.ndim > 2 else x.shape[-1])
        step_of_feature, n_groups = region_steps(relevance, patch_size)
    # steps is a cap: the first `steps` groups, or every group when there are fewer (one setting
    # serves inputs of 450 to 16384 features)
    steps = n_groups if steps is None else min(positive_int(steps, "steps"), n_groups)
    flat_x = x.reshape(n_samples, -1)
    flat_baseline = baseline_for(x, baseline).reshape(n_samples, -1)
    curves = torch.empty(n_samples, steps, dtype=torch.float64)
    for sample in range(n_samples):
        def make_rows(start, stop, sample=sample):
            removed = step_of_feature[sample][None, :] < torch.arange(start + 1, stop + 1, device=x.device)[:, None]
            rows = torch.where(removed, flat_baseline[sample][None, :], flat_x[sample][None, :])
            return rows.reshape(stop - start, *x.shape[1:])

        curves[sample] = outputs_of_rows(model, make_rows, steps, target[sample], batch_size)
    return curves


def aopc(original: torch.Tensor, curves: torch.Tensor) -> torch.Tensor:
    """[B]: mean over the steps k = 1..L of f(x) - f(x_k) (area over the perturbation curve)."""
    return (original[:, None] - curves).mean(1)


def pixel_flipping_aopc(model: nn.Module, x: torch.Tensor, target: torch.Tensor, relevance: torch.Tensor, *,
                        features_in_step: int | None = None, steps: int | None = None, baseline=None,
                        batch_size: int = 256) -> torch.Tensor:
    """[B] float64: AOPC of pixel flipping, mean_k f(x) - f(x_k) over the steps of
    perturbation_curve (Samek et al. 2017, IEEE TNNLS). features_in_step default ceil(n / 50)
    (50 steps that remove everything). Larger is more faithful."""
    n_features = x[0].numel() if isinstance(x, torch.Tensor) and x.ndim >= 2 else 1
    features_in_step = math.ceil(n_features / 50) if features_in_step is None else features_in_step
    curves = perturbation_curve(model, x, target, relevance, features_in_step=features_in_step, steps=steps,
                                baseline=baseline, batch_size=batch_size)
    return aopc(explained_output(model, x, target, batch_size), curves)


def region_perturbation_aopc(model: nn.Module, x: torch.Tensor, target: torch.Tensor, relevance: torch.Tensor, *,
                             patch_size: int = 4, steps: int | None = None, baseline=None,
                             batch_size: int = 256) -> torch.Tensor:
    """[B] float64: AOPC of region perturbation (patches of patch_size, see perturbation_curve),
    Samek et al. (2017). Larger is more faithful."""
    curves = perturbation_curve(model, x, target, relevance, patch_size=patch_size, steps=steps, baseline=baseline,
                                batch_size=batch_size)
    return aopc(explained_output(model, x, target, batch_size), curves)


# --- ROAD (Rong et al. 2022) ----------------------------------------------------------------------
#: Rong et al.'s NoisyLinearImputer: 1/6 for the direct neighbours, 1/12 for the diagonal ones
NEIGHBOUR_WEIGHTS = (((1, 1), 1 / 12), ((0, 1), 1 / 6), ((-1, 1), 1 / 12), ((1, -1), 1 / 12), ((0, -1), 1 / 6),
                     ((-1, -1), 1 / 12), ((1, 0), 1 / 6), ((-1, 0), 1 / 6))


def noisy_linear_imputation(planes: np.ndarray, removed: np.ndarray, noise: float = 0.0,
                            generator: np.random.Generator | None = None) -> np.ndarray:
    """float64 [P, H, W]: the planes with each removed value replaced by the weighted mean of its
    (valid, in-plane) neighbours, all removed values solved together as one sparse linear system,
    plus noise * N(0, 1) (Rong et al. 2022; Quantus's noisy_linear_imputation).

    For removed i: sum_j w_ij (v_i - v_j) = 0 over the neighbours j inside the plane, with v_j known
    where not removed. A plane with every value removed has nothing to impute from; its values
    are set to 0. Cost: one sparse LU (scipy spsolve) of a system with one row per removed value
    and at most 9 entries per row."""
    planes = np.asarray(planes, dtype=np.float64)
    removed = np.asarray(removed, dtype=bool)
    result = planes.copy()
    empty = ~(~removed).reshape(removed.shape[0], -1).any(1)
    result[empty] = 0.0
    solve = removed & ~empty[:, None, None]
    unknowns = np.flatnonzero(solve)
    if unknowns.size:
        values = _solve_imputation(planes, solve, unknowns)
        if noise:
            values = values + noise * generator.standard_normal(values.shape)
        result.reshape(-1)[unknowns] = values
    return result


def _solve_imputation(planes: np.ndarray, solve: np.ndarray, unknowns: np.ndarray) -> np.ndarray:
    """The imputed values at the flat indices `unknowns` (see noisy_linear_imputation)."""
    n_planes, height, width = planes.shape
    variable = np.full(planes.size, -1, dtype=np.int64)
    variable[unknowns] = np.arange(unknowns.size)
    plane, row, column = np.unravel_index(unknowns, planes.shape)
    flat_values = planes.reshape(-1)
    right_side = np.zeros(unknowns.size)
    diagonal = np.zeros(unknowns.size)
    rows, columns, entries = [], [], []
    for (row_offset, column_offset), weight in NEIGHBOUR_WEIGHTS:
        neighbour_row, neighbour_column = row + row_offset, column + column_offset
        valid = (neighbour_row >= 0) & (neighbour_row < height) & (neighbour_column >= 0) & (neighbour_column < width)
        neighbour = np.ravel_multi_index((plane[valid], neighbour_row[valid], neighbour_column[valid]), planes.shape)
        own = np.flatnonzero(valid)
        diagonal[own] += weight
        neighbour_variable = variable[neighbour]
        is_unknown = neighbour_variable >= 0
        rows.append(own[is_unknown])
        columns.append(neighbour_variable[is_unknown])
        entries.append(np.full(is_unknown.sum(), weight))
        np.add.at(right_side, own[~is_unknown], -weight * flat_values[neighbour[~is_unknown]])
    rows.append(np.arange(unknowns.size))
    columns.append(np.arange(unknowns.size))
    entries.append(-diagonal)
    matrix = scipy.sparse.csc_matrix((np.concatenate(entries), (np.concatenate(rows), np.concatenate(columns))),
                                     shape=(unknowns.size, unknowns.size))
    return np.atleast_1d(scipy.sparse.linalg.spsolve(matrix, right_side))


def as_planes(sample: np.ndarray) -> np.ndarray:
    """One sample [*input] as planes [P, H, W]: the last two axes are the plane (a 1-D input is one
    1 x L plane), every leading axis (channel, time) a separate plane."""
    if sample.ndim == 1:
        return sample[None, None, :]
    return sample.reshape(-1, *sample.shape[-2:])


def removed_count(n_features: int, percentage: float) -> int:
    """int(n * p / 100): the number of features removed at percentage p (Quantus's rounding)."""
    return int(n_features * percentage / 100)


def road_inputs(x: torch.Tensor, relevance: torch.Tensor, percentages, noise: float, seed: int,
                order: str = "morf") -> torch.Tensor:
    """[B, P, *input] on x's device: x with the top (MoRF) or bottom (LeRF) p % of the features
    (by signed relevance, ties by position) imputed by noisy_linear_imputation, per percentage.
    Noise from numpy default_rng(seed), drawn sample by sample, percentage by percentage."""
    if order not in ("morf", "lerf"):
        raise ValueError(f"order must be 'morf' or 'lerf', got {order!r}")
    if len(percentages) == 0 or min(percentages) < 0 or max(percentages) > 100:
        raise ValueError(f"percentages must be a non-empty list of values in [0, 100], got {percentages}")
    generator = np.random.default_rng(seed)
    samples = x.detach().double().cpu().numpy()
    flat_relevance = relevance.reshape(x.shape[0], -1).double().cpu()
    ranking = torch.argsort(flat_relevance, dim=1, descending=order == "morf", stable=True).numpy()
    n_features = samples[0].size
    imputed = np.empty((x.shape[0], len(percentages), *x.shape[1:]))
    for sample in range(x.shape[0]):
        planes = as_planes(samples[sample])
        for column, percentage in enumerate(percentages):
            removed = np.zeros(n_features, dtype=bool)
            removed[ranking[sample, :removed_count(n_features, percentage)]] = True
            filled = noisy_linear_imputation(planes, removed.reshape(planes.shape), noise, generator)
            imputed[sample, column] = filled.reshape(x.shape[1:])
    return torch.from_numpy(imputed).to(x.device, x.dtype)


DEFAULT_PERCENTAGES = (10, 20, 30, 40, 50, 60, 70, 80, 90)


def road_curve(model: nn.Module, x: torch.Tensor, target: torch.Tensor, relevance: torch.Tensor, *,
               percentages=DEFAULT_PERCENTAGES, noise: float = 0.01, order: str = "morf", seed: int = 0,
               batch_size: int = 256) -> torch.Tensor:
    """[B, P] float64: f(x_p), the explained output after the top p % features (MoRF) are removed
    and imputed (Rong et al. 2022, ICML), one column per percentage. Cost: P model calls and P
    sparse solves per sample."""
    target, relevance = check_inputs(x, target, relevance)
    imputed = road_inputs(x, relevance, list(percentages), noise, seed, order)
    rows = imputed.reshape(-1, *x.shape[1:])
    return explained_output(model, rows, target.repeat_interleave(imputed.shape[1]), batch_size).reshape(
        x.shape[0], -1)


def road_accuracy_curve(model: nn.Module, x: torch.Tensor, target: torch.Tensor, relevance: torch.Tensor, *,
                        percentages=DEFAULT_PERCENTAGES, noise: float = 0.01, order: str = "morf", seed: int = 0,
                        batch_size: int = 256) -> torch.Tensor:
    """[B, P] float64 0/1: whether argmax model(x_p).flatten() is still the target, the curve
    Rong et al. and Quantus's ROAD report (meaningful for classifiers only)."""
    target, relevance = check_inputs(x, target, relevance)
    imputed = road_inputs(x, relevance, list(percentages), noise, seed, order).reshape(-1, *x.shape[1:])
    parameter = next(iter(model.parameters()), None)
    device = parameter.device if parameter is not None else x.device
    predicted = []
    with torch.no_grad():
        for start in range(0, imputed.shape[0], batch_size):
            predicted.append(model(imputed[start:start + batch_size].to(device)).flatten(1).argmax(1).cpu())
    predicted = torch.cat(predicted).reshape(x.shape[0], -1)
    return (predicted == target.cpu()[:, None]).double()


def road(model: nn.Module, x: torch.Tensor, target: torch.Tensor, relevance: torch.Tensor, *,
         percentages=DEFAULT_PERCENTAGES, noise: float = 0.01, seed: int = 0, batch_size: int = 256) -> torch.Tensor:
    """[B] float64: mean over the percentages of f(x) - f(x_p) with MoRF removal and noisy linear
    imputation (the area over the ROAD curve, in output units). Larger is more faithful."""
    curves = road_curve(model, x, target, relevance, percentages=percentages, noise=noise, seed=seed,
                        batch_size=batch_size)
    return aopc(explained_output(model, x, target, batch_size), curves)


# --- monotonicity correlation (Nguyen & Martinez 2020) ----------------------------------------------
def monotonicity_draws(n_samples: int, n_groups: int, nr_samples: int, low: float, high: float,
                       seed: int) -> np.ndarray:
    """[B, groups, nr_samples] uniform values in [low, high) from numpy default_rng(seed)."""
    return np.random.default_rng(seed).uniform(low, high, size=(n_samples, n_groups, nr_samples))


def monotonicity_correlation(model: nn.Module, x: torch.Tensor, target: torch.Tensor, relevance: torch.Tensor, *,
                             nr_samples: int = 100, features_in_step: int | None = None, absolute: bool = True,
                             uniform_low: float = 0.0, uniform_high: float = 1.0, seed: int = 0,
                             batch_size: int = 256, draws: np.ndarray | None = None) -> torch.Tensor:
    """[B] float64: Spearman correlation over feature groups between the group's summed |R| and
    the mean of (f(x) - f(x with the group set to u))^2 over nr_samples draws u ~ U(low, high)
    (one value for the whole group), as Quantus's MonotonicityCorrelation (Nguyen & Martinez 2020).

    Groups: features_in_step consecutive features in order of increasing |R| (default
    ceil(n / 32), 32 groups). draws: [B, groups, nr_samples] values to use instead of
    monotonicity_draws(...). Cost: groups * nr_samples + 1 model calls per sample. NaN where the map
    or the prediction changes are constant over the groups."""
    target, relevance = check_inputs(x, target, relevance)
    n_samples, n_features = x.shape[0], x[0].numel()
    features_in_step = math.ceil(n_features / 32) if features_in_step is None else features_in_step
    features_in_step = positive_int(features_in_step, "features_in_step", n_features)
    n_groups = math.ceil(n_features / features_in_step)
    if draws is None:
        nr_samples = positive_int(nr_samples, "nr_samples")
        draws = monotonicity_draws(n_samples, n_groups, nr_samples, uniform_low, uniform_high, seed)
    elif draws.shape[:2] != (n_samples, n_groups):
        raise ValueError(f"draws must be [B={n_samples}, groups={n_groups}, nr_samples], got {draws.shape}")
    nr_samples = draws.shape[2]
    flat_relevance = relevance.reshape(n_samples, -1).double()
    flat_relevance = flat_relevance.abs() if absolute else flat_relevance
    order = torch.argsort(flat_relevance, dim=1, stable=True)
    group_of_feature = torch.empty_like(order)
    group_of_feature.scatter_(1, order, (torch.arange(n_features, device=order.device) // features_in_step)
                              .expand_as(order).contiguous())
    relevance_sums = torch.zeros(n_samples, n_groups, dtype=torch.float64, device=order.device)
    relevance_sums.scatter_add_(1, group_of_feature, flat_relevance)
    original = explained_output(model, x, target, batch_size)
    flat_x = x.reshape(n_samples, -1)
    values = torch.from_numpy(np.ascontiguousarray(draws)).to(x.device, x.dtype)
    mean_squares = torch.empty(n_samples, n_groups, dtype=torch.float64)
    for sample in range(n_samples):
        def make_rows(start, stop, sample=sample):
            index = torch.arange(start, stop, device=x.device)
            group, draw = index // nr_samples, index % nr_samples
            in_group = group_of_feature[sample][None, :] == group[:, None]
            rows = torch.where(in_group, values[sample, group, draw][:, None], flat_x[sample][None, :])
            return rows.reshape(stop - start, *x.shape[1:])

        outputs = outputs_of_rows(model, make_rows, n_groups * nr_samples, target[sample], batch_size)
        mean_squares[sample] = (outputs.reshape(n_groups, nr_samples) - original[sample]).square().mean(1)
    return spearman_rows(relevance_sums.cpu(), mean_squares)


# --- registry -------------------------------------------------------------------------------------
METRICS = (
    Metric("faithfulness_correlation", "faithfulness",
           from_setting(faithfulness_correlation, "baseline", "seed", "batch_size"),
           higher_is_better=True, optimum=1.0, deterministic=False, source="Bhatt, Weller & Moura (2020), IJCAI"),
    Metric("pixel_flipping_aopc", "faithfulness", from_setting(pixel_flipping_aopc, "baseline", "batch_size"),
           higher_is_better=True, optimum=math.nan, source="Samek et al. (2017), IEEE TNNLS"),
    Metric("region_perturbation_aopc", "faithfulness",
           from_setting(region_perturbation_aopc, "baseline", "batch_size"),
           higher_is_better=True, optimum=math.nan, source="Samek et al. (2017), IEEE TNNLS"),
    Metric("road", "faithfulness", from_setting(road, "seed", "batch_size"), higher_is_better=True,
           optimum=math.nan, deterministic=False, source="Rong et al. (2022), ICML"),
    Metric("monotonicity_correlation", "faithfulness", from_setting(monotonicity_correlation, "seed", "batch_size"),
           higher_is_better=True, optimum=1.0, deterministic=False,
           source="Nguyen & Martinez (2020), arXiv 2007.07584"),
)
