"""The ground-truth attribution benchmark data of Mamalakis, Ebert-Uphoff and Barnes (2022).

Inputs are SST-like anomaly fields over the ocean cells of a grid, drawn from a multivariate
normal whose spatial correlation is that of real SST anomalies; the response is a sum of one
piecewise-linear function per cell, so the contribution of every cell to every sample's response
is known exactly (docs/papers.md section 6):

    X ~ N(0, S)                        S: correlation matrix of the real anomalies (shrunk, below)
    F(X) = (1/D) sum_i C_i(X_i)        D ocean cells, no noise
    C_i piecewise linear through (0, 0) with breakpoints 0 and K - 1 random ones, one slope per
        piece; the slopes of a piece are one draw of N(0, S) over the cells (spatially correlated)
    ground truth: attribution_i = C_i(X_i) / D, which sums to F(X) exactly

What is real and what is not. The paper estimates S from COBE-SST2 monthly anomalies 1950-2019
(70 years x 12 months); no such archive can be downloaded here. S comes from the one real sample
the project has: 50 NDJFM-mean winters of HadISST anomalies over the Pacific (22.5S-62.5N,
117.5E-97.5W, 5 degrees; 450 ocean cells), shipped with the eofs package. Everything drawn from
it (inputs, breakpoints, slopes, responses) is synthetic.

Regularizing S. Fifty winters give a sample correlation matrix of rank at most 49 (48 after the
detrending) for 450 cells, which is singular: most directions would get no variance at all. S
is shrunk toward the identity, S = (1 - lambda) R + lambda I (the diagonal stays 1), with
lambda the Ledoit-Wolf (2004) estimate for the standardized anomalies unless one is given
(shrinkage="ledoit_wolf"; measured on the sample: see `correlation_matrix`). Shrinking toward
the identity keeps the large-scale correlations (scaled by 1 - lambda) and gives every cell some
variance of its own.

Breakpoints. The paper draws the random breakpoints from spatially correlated normals mapped to
each cell's quantiles. Every cell's marginal here is N(0, 1) (S has a unit diagonal), so the
quantile of a standard normal draw z at probability Phi(z) is z itself: the breakpoints are
draws of N(0, S), taken directly.

    make_groundtruth(n_samples, stride, n_breakpoints, shrinkage, seed) -> xarray.Dataset
    attribution(ds, samples=None) -> the exact attribution [sample, cell] (float64)
    piecewise_linear(x, breakpoints, slopes) -> C(x) per cell (numpy, float64)
    correlation_matrix(stride, shrinkage) -> (S, lambda, grid)
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import xarray as xr

from xaibench.studies.data.common import cf, check_seed, dataset_attrs, float_dtype, rng, sample_coordinate
from xaibench.studies.data.enso import SAMPLE_SOURCE, sample_path, sample_statistics

CHUNK_SAMPLES = 4096  # fixed, so the first n samples do not depend on n_samples
REFERENCE = ("Mamalakis, Ebert-Uphoff and Barnes (2022), Environmental Data Science 1, e8, "
             "doi:10.1017/eds.2022.7")


def ledoit_wolf_shrinkage(standardized: np.ndarray) -> float:
    """Ledoit and Wolf's (2004) shrinkage intensity toward mu I for the covariance of the rows of
    `standardized` [n, p] (centred columns). Returns lambda in [0, 1]."""
    n, p = standardized.shape
    if n < 2:
        raise ValueError(f"need at least 2 samples to estimate a shrinkage, got {n}")
    sample = standardized.T @ standardized / n
    mu = np.trace(sample) / p
    distance = np.sum((sample - mu * np.eye(p)) ** 2) / p            # d^2
    # bbar^2 = (1/n^2) sum_k ||x_k x_k^T - S||_F^2 / p, expanded so that no p x p matrix per sample is built
    squared_norms = np.sum(standardized**2, axis=1)
    spread = (np.sum(squared_norms**2) / n - np.sum(sample**2)) / (n * p)
    return float(min(spread, distance) / distance) if distance > 0 else 1.0


@functools.lru_cache(maxsize=8)
def _correlation(path: str, stride: int, shrinkage) -> tuple[np.ndarray, float, dict]:
    stats = sample_statistics(path, True)  # linearly detrended winters, as the paper detrends
    lat_index = np.arange(0, stats["lat"].size, stride)
    lon_index = np.arange(0, stats["lon"].size, stride)
    ocean_grid = stats["ocean"]
    on_grid = np.zeros_like(ocean_grid)
    on_grid[np.ix_(lat_index, lon_index)] = True
    keep = (on_grid & ocean_grid)[ocean_grid]                   # ocean cells kept by the stride
    anomalies = stats["anomalies"][:, keep]
    std = anomalies.std(axis=0)
    if np.any(std == 0):
        raise ValueError("a cell of the real sample has no variance; cannot standardize it")
    standardized = (anomalies - anomalies.mean(axis=0)) / std
    sample = standardized.T @ standardized / standardized.shape[0]
    sample = sample / np.sqrt(np.outer(np.diag(sample), np.diag(sample)))  # exactly 1 on the diagonal
    amount = ledoit_wolf_shrinkage(standardized) if shrinkage == "ledoit_wolf" else float(shrinkage)
    correlation = (1.0 - amount) * sample + amount * np.eye(sample.shape[0])
    rows, cols = np.nonzero(on_grid & ocean_grid)
    grid = {"lat": stats["lat"][rows], "lon": stats["lon"][cols],
            "lat_grid": stats["lat"][lat_index], "lon_grid": stats["lon"][lon_index]}
    return correlation, amount, grid


def correlation_matrix(stride: int = 1, shrinkage="ledoit_wolf", path=None) -> tuple[np.ndarray, float, dict]:
    """S [D, D] (unit diagonal), the shrinkage used, and the grid {lat, lon (per cell), lat_grid,
    lon_grid} of the D ocean cells of the real sample kept by `stride` (every stride-th latitude
    and longitude of its 5 degree grid). shrinkage: "ledoit_wolf" or a number in [0, 1]."""
    if isinstance(stride, bool) or not isinstance(stride, int | np.integer) or stride < 1:
        raise ValueError(f"stride must be a positive integer, got {stride!r}")
    if shrinkage != "ledoit_wolf":
        if isinstance(shrinkage, bool) or not isinstance(shrinkage, int | float) or not 0 <= shrinkage <= 1:
            raise ValueError(f"shrinkage must be 'ledoit_wolf' or a number in [0, 1], got {shrinkage!r}")
        shrinkage = float(shrinkage)
    path = str(Path(path) if path is not None else sample_path())
    correlation, amount, grid = _correlation(path, int(stride), shrinkage)
    return correlation.copy(), amount, {key: value.copy() for key, value in grid.items()}


def piecewise_linear(x, breakpoints, slopes) -> np.ndarray:
    """C_i(x_i) for x [..., D], breakpoints [K, D] (sorted along K; may be empty) and slopes
    [K + 1, D] (piece k lies between breakpoints k - 1 and k, the outer pieces unbounded).

    C_i is the integral of the piecewise-constant slope from 0 to x_i, so it passes through
    (0, 0) and is continuous: C(x) = sum_k s_k (clip(x, e_k, e_k+1) - clip(0, e_k, e_k+1)) with
    the piece edges e = (-inf, b_1, ..., b_K, +inf)."""
    x = np.asarray(x, dtype=np.float64)
    breakpoints = np.asarray(breakpoints, dtype=np.float64)
    slopes = np.asarray(slopes, dtype=np.float64)
    cells = slopes.shape[-1]
    if breakpoints.shape != (slopes.shape[0] - 1, cells) or x.shape[-1] != cells:
        raise ValueError(f"shapes do not fit: x {x.shape}, breakpoints {breakpoints.shape} (want [K, D]), "
                         f"slopes {slopes.shape} (want [K + 1, D])")
    infinite = np.full((1, cells), np.inf)
    lower = np.concatenate([-infinite, breakpoints])
    upper = np.concatenate([breakpoints, infinite])
    total = np.zeros(x.shape)
    for k in range(slopes.shape[0]):
        total += slopes[k] * (np.clip(x, lower[k], upper[k]) - np.clip(0.0, lower[k], upper[k]))
    return total


def make_groundtruth(n_samples: int = 10000, stride: int = 1, n_breakpoints: int = 5, shrinkage="ledoit_wolf",
                     dtype: str = "float32", seed: int = 0, path=None) -> xr.Dataset:
    """The benchmark data set: inputs `sst_anomaly` [sample, cell], response `response` [sample],
    and the response function (`breakpoints`, `slopes`) from which `attribution(ds)` gives the
    exact attribution of every cell (not stored: it would double the file for the training set).

    n_breakpoints: K, the breakpoints per cell: 0 plus K - 1 random ones (the paper: 5); K = 0
    makes every C_i linear (one slope), for which the ground truth is input x gradient.
    The response and the attribution are computed in float64 from the inputs as stored (after
    the cast to `dtype`), so that they are exact for the data the network sees."""
    seed = check_seed(seed)
    dtype = float_dtype(dtype)
    if isinstance(n_samples, bool) or not isinstance(n_samples, int | np.integer) or n_samples < 1:
        raise ValueError(f"n_samples must be a positive integer, got {n_samples!r}")
    if isinstance(n_breakpoints, bool) or not isinstance(n_breakpoints, int | np.integer) or n_breakpoints < 0:
        raise ValueError(f"n_breakpoints must be a non-negative integer, got {n_breakpoints!r}")
    correlation, amount, grid = correlation_matrix(stride, shrinkage, path)
    cells = correlation.shape[0]
    factor = np.linalg.cholesky(correlation)

    n_random = max(n_breakpoints - 1, 0)
    draws = rng(seed, "groundtruth-response").standard_normal((n_random + n_breakpoints + 1, cells)) @ factor.T
    random_breakpoints, slopes = draws[:n_random], draws[n_random:]
    breakpoints = np.sort(np.concatenate([np.zeros((1, cells)), random_breakpoints]), axis=0) \
        if n_breakpoints else np.zeros((0, cells))

    inputs = np.empty((n_samples, cells), dtype=dtype)
    response = np.empty(n_samples)
    for chunk in range((n_samples + CHUNK_SAMPLES - 1) // CHUNK_SAMPLES):   # chunks: bounded memory at 10^6
        start, stop = chunk * CHUNK_SAMPLES, min((chunk + 1) * CHUNK_SAMPLES, n_samples)
        white = rng(seed, "groundtruth-inputs", chunk).standard_normal((CHUNK_SAMPLES, cells))
        inputs[start:stop] = (white @ factor.T)[: stop - start].astype(dtype)
        response[start:stop] = (piecewise_linear(inputs[start:stop], breakpoints, slopes) / cells).sum(axis=1)

    config = {"n_samples": int(n_samples), "stride": int(stride), "n_breakpoints": int(n_breakpoints),
              "shrinkage": shrinkage, "dtype": dtype.name, "seed": seed}
    cell = ("cell",)
    ds = xr.Dataset(
        {
            "sst_anomaly": cf(("sample", "cell"), inputs, "1",
                              "standardized SST anomaly (synthetic, unit variance per cell)",
                              standard_name="sea_surface_temperature_anomaly"),
            "response": cf(("sample",), response.astype(dtype), "1",
                           "F(X) = (1/D) sum_i C_i(X_i), the known response"),
            "breakpoints": cf(("breakpoint", "cell"), breakpoints, "1",
                              "breakpoints of C_i, sorted (0 and n_breakpoints - 1 random ones)"),
            "slopes": cf(("piece", "cell"), slopes, "1", "slope of C_i on each piece (piece k below breakpoint k)"),
            "correlation_shrinkage": cf((), amount, "1",
                                        "lambda in S = (1 - lambda) R + lambda I (R: the real sample's correlation)"),
        },
        coords={
            "sample": sample_coordinate(n_samples),
            "lat": cf(cell, grid["lat"], "degrees_north", "latitude of the cell centre", standard_name="latitude"),
            "lon": cf(cell, grid["lon"], "degrees_east", "longitude of the cell centre", standard_name="longitude"),
            "lat_grid": cf(("lat_grid",), grid["lat_grid"], "degrees_north", "latitudes of the map grid"),
            "lon_grid": cf(("lon_grid",), grid["lon_grid"], "degrees_east", "longitudes of the map grid"),
        },
    )
    ds.attrs = dataset_attrs(
        title="Ground-truth attribution benchmark: SST-like fields and an additive piecewise-linear response",
        generator="xaibench.studies.data.groundtruth.make_groundtruth", seed=seed, config=config, synthetic=True,
        source=("synthetic fields from N(0, S), S the shrunk correlation matrix of the real sample: "
                + SAMPLE_SOURCE),
        input_variable="sst_anomaly", target_variable="response", reference=REFERENCE,
        method=("X ~ N(0, (1 - lambda) R + lambda I), lambda Ledoit-Wolf unless given; F = (1/D) sum C_i(X_i), "
                "C_i piecewise linear through 0 with slopes ~ N(0, S) per piece; attribution_i = C_i(X_i)/D"),
    )
    return ds


def attribution(ds: xr.Dataset, samples=None) -> np.ndarray:
    """The exact attribution C_i(X_i)/D [sample, cell] (float64) of the data set's inputs as stored
    (a slice or index array `samples` selects samples); it sums to the response over the cells."""
    inputs = ds["sst_anomaly"].values if samples is None else ds["sst_anomaly"].values[samples]
    return piecewise_linear(inputs, ds["breakpoints"].values, ds["slopes"].values) / ds.sizes["cell"]


def to_map(values, ds: xr.Dataset) -> np.ndarray:
    """[..., cell] -> [..., lat_grid, lon_grid] with NaN where there is no ocean cell."""
    values = np.asarray(values)
    lat_index = np.searchsorted(ds["lat_grid"].values, ds["lat"].values)
    lon_index = np.searchsorted(ds["lon_grid"].values, ds["lon"].values)
    maps = np.full(values.shape[:-1] + (ds.sizes["lat_grid"], ds.sizes["lon_grid"]), np.nan)
    maps[..., lat_index, lon_index] = values
    return maps
