"""Measures of an explanation: conservation, agreement, region mass, pattern and rank correlation,
and the channel / time decomposition used for the convection shortcut.

Every measure is per sample (the first axis of an array, or the dimension `sample` of an
xarray.DataArray) and is computed in float64. Arrays may be numpy arrays, torch tensors or
xarray.DataArrays; with DataArrays a mask or a weight is broadcast by dimension name.

    conservation_residual(explanation)      Conservation(residual, ledger_closure)
        residual        |sum R - output| / |output|: how much of the explained output the map
                        lacks or adds (for every method whose relevance is in output units)
        ledger_closure  native LRP: |sum R + absorbed - output| / max(|output|, sum |R|), the
                        engine's Explanation.relative_conservation_error; None elsewhere
    agreement(relevance, reference, output=None)
        max|R - R_ref| / max(sum |R_ref|, |output|): 0 for identical maps, scale-free
    agreement_per_sample(relevance, reference, sample_dims=1)
                                            the same (output=None) on torch tensors whose first
                                            sample_dims axes are rows (sample, target): a tensor
                                            back (the census' and validate's measure)
    region_mass(relevance, mask)            RegionMass(absolute, positive)
        absolute  sum_{mask} |R| / sum |R|        (NaN where the mask is empty or R = 0)
        positive  sum_{mask} R+ / sum R+          (NaN where the mask is empty or R+ = 0)
    pattern_correlation(a, b, lat)          cos(lat)-weighted Pearson (or uncentred) correlation of maps
    spearman(a, b, absolute=False)          Spearman rank correlation (ties get average ranks)
    spearman_per_sample(a, b, sample_dims)  Spearman of |a| and |b| with the first sample_dims axes as rows
    pearson(a, b)                           unweighted Pearson correlation over all elements of a sample
    deletion_curve(predict, x, relevance, fractions, fill)
                                            outputs as the most relevant inputs are replaced by `fill`
    deletion_score(curves)                  mean drop f(x) - f(x deleted) along a curve (AOPC, Samek et al.)
    channel_shares(relevance, channel_axis) sum |R_c| / sum |R| per channel
    temporal_shares(relevance, time_axis)   static / temporal split of sum R^2 (see the function)

Empty and degenerate cases are NaN, never an error: a mean over samples then uses numpy's
nanmean and says how many samples entered it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SAMPLE = "sample"
TINY = np.finfo(np.float64).tiny


# --- conversions -----------------------------------------------------------------------------------
def _array(values) -> np.ndarray:
    """float64 numpy array from a numpy array, torch tensor or xarray object."""
    if hasattr(values, "detach"):  # torch
        values = values.detach().cpu().double().numpy()
    elif hasattr(values, "values") and hasattr(values, "dims"):  # xarray
        values = values.values
    return np.asarray(values, dtype=np.float64)


def _rows(values) -> np.ndarray:
    """[sample, everything else flattened]."""
    values = _array(values)
    if values.ndim == 0:
        raise ValueError("a per-sample measure needs at least a sample axis")
    return values.reshape(values.shape[0], -1)


def _is_xarray(values) -> bool:
    return hasattr(values, "dims") and hasattr(values, "coords")


def _divide(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """numerator / denominator, NaN where the denominator is 0."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(denominator > 0, numerator / np.where(denominator > 0, denominator, 1.0), np.nan)


# --- conservation ----------------------------------------------------------------------------------
@dataclass
class Conservation:
    residual: np.ndarray                   # [sample] |sum R - output| / |output|
    ledger_closure: np.ndarray | None      # [sample], native LRP only


def residual(relevance, output) -> np.ndarray:
    """|sum R - output| / |output| per sample (inf where the output is 0 and sum R is not)."""
    total = _rows(relevance).sum(1)
    output = _array(output).reshape(-1)
    difference = np.abs(total - output)
    scale = np.abs(output)
    ratio = np.where(scale > 0, difference / np.where(scale > 0, scale, 1.0), np.inf)
    return np.where(difference == 0, 0.0, ratio)


def ledger_closure(relevance, output, conservation_error) -> np.ndarray:
    """conservation_error / max(|output|, sum |R|) per sample (Explanation.relative_conservation_error)."""
    magnitude = np.abs(_rows(relevance)).sum(1)
    output = _array(output).reshape(-1)
    error = _array(conservation_error).reshape(-1)
    return error / np.maximum(np.maximum(np.abs(output), magnitude), TINY)


def conservation_residual(explanation) -> Conservation:
    """Conservation of an xaibench Explanation or of an explanation file's Dataset (variables
    relevance, output and, for native LRP, conservation_error and attribute lrp="true").

    ledger_closure is given for native LRP only: an Explanation whose ledger is set, or a
    Dataset whose attrs say backend="native" and lrp is true and that holds conservation_error.
    (Native integrated gradients also carries a conservation_error, its completeness residual;
    it is not a ledger and is not reported here.)"""
    if _is_xarray(explanation):  # an explanation file
        closure = None
        is_lrp = explanation.attrs.get("lrp") in (True, "true")
        if explanation.attrs.get("backend") == "native" and is_lrp and "conservation_error" in explanation:
            closure = ledger_closure(explanation["relevance"], explanation["output"],
                                     explanation["conservation_error"])
        return Conservation(residual(explanation["relevance"], explanation["output"]), closure)
    closure = None
    if getattr(explanation, "ledger", None) is not None and explanation.conservation_error is not None:
        closure = _array(explanation.relative_conservation_error).reshape(-1)
    return Conservation(residual(explanation.relevance, explanation.output), closure)


# --- agreement -------------------------------------------------------------------------------------
def agreement(relevance, reference, output=None) -> np.ndarray:
    """max|R - R_ref| / max(sum |R_ref|, |output|) per sample.

    output: the explained output of the reference (None: sum |R_ref| alone is the scale).
    Identical maps agree (0), also two zero maps; a non-zero map against a zero reference and
    zero output is inf."""
    a, b = _rows(relevance), _rows(reference)
    if a.shape != b.shape:
        raise ValueError(f"relevance {a.shape} and reference {b.shape} differ in shape (per sample, flattened)")
    difference = np.abs(a - b).max(1) if a.shape[1] else np.zeros(a.shape[0])
    scale = np.abs(b).sum(1)
    if output is not None:
        scale = np.maximum(scale, np.abs(_array(output).reshape(-1)))
    ratio = np.where(scale > 0, difference / np.where(scale > 0, scale, 1.0), np.inf)
    return np.where(difference == 0, 0.0, ratio)



def agreement_per_sample(relevance, reference, sample_dims: int = 1):
    """max|R - R_ref| / sum|R_ref| per row, for torch tensors whose first `sample_dims` axes are
    rows (sample, or sample and target), in float64: a tensor of shape reference.shape[:sample_dims].
    agreement() with output=None: equal maps agree (0), a non-zero map against a zero reference
    does not (inf)."""
    import torch

    rows = int(np.prod(reference.shape[:sample_dims]))
    values = agreement(relevance.detach().double().cpu().numpy().reshape(rows, -1),
                       reference.detach().double().cpu().numpy().reshape(rows, -1))
    return torch.from_numpy(values).reshape(reference.shape[:sample_dims])

# --- region mass -----------------------------------------------------------------------------------
@dataclass
class RegionMass:
    absolute: np.ndarray   # [sample] share of sum |R| inside the mask
    positive: np.ndarray   # [sample] share of sum R+ inside the mask


def _broadcast_mask(relevance, mask) -> tuple[np.ndarray, np.ndarray]:
    """(relevance, mask) as float64 / bool arrays of the relevance's shape."""
    if _is_xarray(relevance) and _is_xarray(mask):
        import xarray as xr

        missing = set(mask.dims) - set(relevance.dims)
        if missing:
            raise ValueError(f"the mask has dimension(s) {sorted(missing)} the relevance lacks "
                             f"(relevance: {relevance.dims}, mask: {mask.dims})")
        mask = xr.broadcast(mask.astype(bool), relevance)[0].transpose(*relevance.dims)
        return _array(relevance), np.asarray(mask.values, dtype=bool)
    values = _array(relevance)
    mask = np.asarray(_array(mask) != 0)
    try:
        mask = np.broadcast_to(mask, values.shape)
    except ValueError:
        raise ValueError(f"mask of shape {mask.shape} does not broadcast to the relevance {values.shape}; "
                         "pass xarray.DataArrays to broadcast by dimension name") from None
    return values, mask


def region_mass(relevance, mask) -> RegionMass:
    """Shares of the relevance inside a mask, per sample (see the module docstring).

    mask: bool, the relevance's shape or broadcastable to it by numpy's rules (e.g. a map
    [lat, lon] for relevance [sample, lat, lon]); with xarray.DataArrays by dimension name
    (e.g. core_mask(sample, y, x) against relevance(sample, channel, time, y, x))."""
    values, mask = _broadcast_mask(relevance, mask)
    rows = values.reshape(values.shape[0], -1)
    inside = mask.reshape(mask.shape[0], -1)
    magnitude = np.abs(rows)
    positive = np.maximum(rows, 0.0)
    empty = ~inside.any(1)
    absolute = _divide((magnitude * inside).sum(1), magnitude.sum(1))
    plus = _divide((positive * inside).sum(1), positive.sum(1))
    absolute[empty], plus[empty] = np.nan, np.nan
    return RegionMass(absolute, plus)


# --- correlations ----------------------------------------------------------------------------------
def pattern_correlation(a, b, lat, centered: bool = True) -> np.ndarray:
    """Area-weighted correlation of maps a, b [..., lat, lon] (one value per leading index).

    Weights cos(lat) (lat in degrees, the second-last axis). centered=True: weighted Pearson
    (each map minus its weighted mean); False: the uncentred cosine similarity. NaN where a
    map is constant (centred) or zero (uncentred)."""
    a, b = _array(a), _array(b)
    if a.shape != b.shape or a.ndim < 2:
        raise ValueError(f"maps must share a shape [..., lat, lon], got {a.shape} and {b.shape}")
    lat = _array(lat).reshape(-1)
    if lat.size != a.shape[-2]:
        raise ValueError(f"lat has {lat.size} values, the maps {a.shape[-2]} rows")
    weights = np.broadcast_to(np.cos(np.deg2rad(lat))[:, None], a.shape[-2:])
    weights = weights / weights.sum()
    lead = a.shape[:-2]
    a, b = a.reshape(lead + (-1,)), b.reshape(lead + (-1,))
    w = weights.reshape(-1)
    if centered:
        a = a - (a * w).sum(-1, keepdims=True)
        b = b - (b * w).sum(-1, keepdims=True)
    covariance = (w * a * b).sum(-1)
    norm = np.sqrt((w * a * a).sum(-1) * (w * b * b).sum(-1))
    return _divide(covariance, norm)


def spearman(a, b, absolute: bool = False) -> np.ndarray:
    """Spearman rank correlation of a and b per sample (of |a|, |b| when absolute=True).

    A constant map has no ranking: against a non-constant one it is 0, two constant maps give 1
    (as spearman_per_sample)."""
    from scipy.stats import rankdata

    a, b = _rows(a), _rows(b)
    if a.shape != b.shape:
        raise ValueError(f"shapes differ: {a.shape} and {b.shape}")
    if absolute:
        a, b = np.abs(a), np.abs(b)
    result = np.empty(a.shape[0])
    for i in range(a.shape[0]):
        ra, rb = rankdata(a[i]), rankdata(b[i])
        sa, sb = ra.std(), rb.std()
        if sa == 0 or sb == 0:
            result[i] = 1.0 if sa == 0 and sb == 0 else 0.0
        else:
            result[i] = float(((ra - ra.mean()) * (rb - rb.mean())).mean() / (sa * sb))
    return result


def spearman_per_sample(a, b, sample_dims: int) -> np.ndarray:
    """Spearman rank correlation of |a| and |b| per row (the first `sample_dims` axes are rows:
    sample, or sample and target), by spearman(): ties get average ranks; a constant map against
    a non-constant one counts as 0 (it lost its structure), two constant maps as 1."""
    rows = int(np.prod(a.shape[:sample_dims]))
    return spearman(_array(a).reshape(rows, -1), _array(b).reshape(rows, -1), absolute=True)


def pearson(a, b) -> np.ndarray:
    """Pearson correlation of a and b per sample over all their other elements (unweighted, as
    the ground-truth benchmark of Mamalakis et al. 2022 scores heat maps). NaN where a map is
    constant."""
    a, b = _rows(a), _rows(b)
    if a.shape != b.shape:
        raise ValueError(f"shapes differ: {a.shape} and {b.shape}")
    a = a - a.mean(1, keepdims=True)
    b = b - b.mean(1, keepdims=True)
    return _divide((a * b).sum(1), np.sqrt((a * a).sum(1) * (b * b).sum(1)))


# --- faithfulness (needs the model, not a ground truth) --------------------------------------------
def deletion_curve(predict, x, relevance, fractions=None, fill: float = 0.0) -> np.ndarray:
    """[sample, fraction]: the model's output when the round(fraction * n) inputs with the largest
    relevance (signed: most positive first) are replaced by `fill`, for each fraction (default
    0, 0.05, ..., 1). predict maps an array [n, *x] to outputs [n]. Ties are broken by position,
    so a constant map deletes in input order. The first column (fraction 0) is f(x).

    A faithful map lowers the output fastest: the inputs it calls most positive are those whose
    removal costs the most (Samek et al. 2017, "most relevant first")."""
    x, relevance = np.asarray(x, dtype=np.float64), _rows(relevance)
    flat = x.reshape(x.shape[0], -1)
    if relevance.shape != flat.shape:
        raise ValueError(f"relevance {relevance.shape} does not match the inputs {flat.shape} (flattened)")
    fractions = np.linspace(0.0, 1.0, 21) if fractions is None else np.asarray(fractions, dtype=np.float64)
    if fractions.ndim != 1 or fractions.size == 0 or fractions.min() < 0 or fractions.max() > 1:
        raise ValueError(f"fractions must be a 1-D array of values in [0, 1], got {fractions}")
    n_inputs = flat.shape[1]
    order = np.argsort(-relevance, axis=1, kind="stable")
    rank = np.empty_like(order)
    np.put_along_axis(rank, order, np.arange(n_inputs)[None, :].repeat(len(flat), 0), axis=1)
    counts = np.rint(fractions * n_inputs).astype(np.int64)
    curves = np.empty((flat.shape[0], counts.size))
    for column, count in enumerate(counts):
        deleted = np.where(rank < count, fill, flat)
        curves[:, column] = np.asarray(predict(deleted.reshape(x.shape)), dtype=np.float64).reshape(-1)
    return curves


def deletion_score(curves) -> np.ndarray:
    """Per sample: the mean over the deletion steps after the first of f(x) - f(x with the top
    inputs deleted), i.e. the area over the perturbation curve (AOPC). Larger is more faithful;
    in the output's units (divide by a typical output scale to compare models)."""
    curves = np.asarray(curves, dtype=np.float64)
    if curves.ndim != 2 or curves.shape[1] < 2:
        raise ValueError(f"curves must be [sample, step] with at least 2 steps, got {curves.shape}")
    return (curves[:, :1] - curves[:, 1:]).mean(1)


# --- channels and time (convection) ----------------------------------------------------------------
def channel_shares(relevance, channel_axis: int | str = 1) -> np.ndarray:
    """[sample, channel]: sum |R| over a channel / sum |R| (each row sums to 1; NaN where R = 0).

    channel_axis: the axis (int) or, for a DataArray, the dimension name."""
    values = _array(relevance)
    axis = relevance.dims.index(channel_axis) if isinstance(channel_axis, str) else channel_axis
    magnitude = np.moveaxis(np.abs(values), axis, 1)
    per_channel = magnitude.reshape(magnitude.shape[0], magnitude.shape[1], -1).sum(-1)
    return _divide(per_channel, per_channel.sum(1, keepdims=True))


def temporal_shares(relevance, time_axis: int | str = 2) -> tuple[np.ndarray, np.ndarray]:
    """(static, temporal) [sample]: how much of the map is constant in time and how much varies.

    Split R(t) = Rbar + R'(t), Rbar the mean over the time axis at each other index (pixel,
    channel). The two parts are orthogonal, so sum R^2 = T sum Rbar^2 + sum R'^2 exactly, and
    static = T sum Rbar^2 / sum R^2, temporal = sum R'^2 / sum R^2 add up to 1 (NaN where R = 0).
    A network that reads only brightness gives nearly the same relevance in every frame (static
    near 1); one that reads how the texture changes from frame to frame gives relevance of
    changing sign along time (temporal share large). Squares, not |R|: only the quadratic
    split is exact."""
    values = _array(relevance)
    axis = relevance.dims.index(time_axis) if isinstance(time_axis, str) else time_axis
    values = np.moveaxis(values, axis, 1)
    frames = values.shape[1]
    mean = values.mean(1, keepdims=True)
    total = (values**2).reshape(values.shape[0], -1).sum(1)
    static = frames * (mean**2).reshape(values.shape[0], -1).sum(1)
    temporal = ((values - mean) ** 2).reshape(values.shape[0], -1).sum(1)
    return _divide(static, total), _divide(temporal, total)


# --- summaries -------------------------------------------------------------------------------------
def summary(values) -> dict:
    """{"max", "median", "mean", "n"} over the finite values of a per-sample measure (NaN when none)."""
    values = np.asarray(values, dtype=np.float64).reshape(-1)
    finite = values[~np.isnan(values)]
    if finite.size == 0:
        return {"max": np.nan, "median": np.nan, "mean": np.nan, "n": 0}
    return {"max": float(finite.max()), "median": float(np.median(finite)), "mean": float(finite.mean()),
            "n": int(finite.size)}
