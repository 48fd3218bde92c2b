"""ENSO classification data after Toms, Barnes and Ebert-Uphoff (2020): SST anomaly maps
labelled El Nino (1) or La Nina (0) by the sign of their own Nino3.4 index, kept only where
|Nino3.4| > 0.5 K, land set to 0 in the input.

Real data available here: the HadISST-derived sample shipped with `eofs` (NDJFM-mean SST
anomalies, 50 winters 1963-2012, Pacific 22.5S-62.5N, 117.5E-97.5W, 5 degree grid, 18 x 30,
450 ocean cells). Toms et al. used monthly COBE SST 1880-2018, which is not available here, so:

- make_enso (synthetic, the training data) draws maps with the real sample's spatial
  statistics on its grid. With the sample's anomalies X (winters x ocean cells; linearly
  detrended per cell as Toms et al. detrended, or only de-meaned), the area-weighted
  (sqrt(cos lat)) EOFs give loadings L_k (K per unit-variance PC) with sum_k L_k L_k^T = cov(X)
  exactly. A map is
      x_t = a_t L_1 + sqrt(1 - s) sum_{k>=2} z_k L_k + sqrt(s) sqrt(diag R) * xi_t
  with a_t a unit-variance AR(1) "ENSO index" (monthly steps, lag-1 coefficient 0.9), z_k and
  xi_t independent standard normals, R = sum_{k>=2} L_k L_k^T the covariance left after the
  ENSO mode, and s the shrinkage (default 0.1): the residual covariance is shrunk toward its
  own diagonal, (1 - s) R + s diag(R), which keeps every cell's variance, makes the covariance
  full rank (50 winters give rank <= 49 over 450 cells) and damps spurious long-range sample
  correlations. L_1 (the leading EOF, sign chosen warm in the Nino3.4 box) is the ENSO
  pattern; only it has memory, the rest is white in time.
- make_enso_real returns the 50 real winters as the same kind of Dataset (synthetic=false), a
  held-out test set. With the default detrending 35 of the 50 winters pass |Nino3.4| > 0.5 K
  (17 El Nino, 18 La Nina).

Nino3.4 = cos(lat)-weighted mean anomaly over the ocean cells whose centres lie in 5S-5N,
170W-120W (190E-240E): on the 5 degree grid the 2 x 10 cells centred at 2.5S/2.5N and
192.5E ... 237.5E. Grid note: EnsoDense must be built with n_lat=18, n_lon=30 for these maps.
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import scipy.signal
import xarray as xr

from xaibench.studies.data.common import cf, check_seed, dataset_attrs, float_dtype, rng, sample_coordinate

NINO34_BOX = {"lat_min": -5.0, "lat_max": 5.0, "lon_min": 190.0, "lon_max": 240.0}  # degrees, lon east 0-360
SAMPLE_FILE = "sst_ndjfm_anom.nc"
SAMPLE_SOURCE = ("HadISST-derived NDJFM-mean SST anomalies, 50 winters 1963-2012, Pacific 22.5S-62.5N "
                 "117.5E-97.5W on a 5 degree grid: the example file sst_ndjfm_anom.nc shipped with the "
                 "eofs package (Met Office Hadley Centre HadISST)")
MONTHS_PER_CHUNK = 1024  # fixed, so the sequence does not depend on n_samples


def sample_path() -> Path:
    """Where the real HadISST sample lies (inside the installed eofs package)."""
    from eofs.examples import example_data_path

    return Path(example_data_path(SAMPLE_FILE))


def load_hadisst_sample(path=None) -> xr.Dataset:
    """The raw real sample: sst (time, lat, lon) in K, NaN over land."""
    path = Path(path) if path is not None else sample_path()
    from xaibench.io import read_dataset

    raw = read_dataset(path, engine="scipy")  # the sample is netCDF3 (classic)
    sst = raw["sst"].where(np.abs(raw["sst"]) < 1e19)  # missing value 1e20 over land, if not decoded
    return sst.rename(latitude="lat", longitude="lon").to_dataset(name="sst")


@functools.lru_cache(maxsize=4)
def sample_statistics(path: str, detrend: bool) -> dict:
    """The real sample's anomalies, EOF loadings and grid (cached: read once per process)."""
    sst = load_hadisst_sample(path)["sst"]
    lat = sst["lat"].values.astype(np.float64)
    lon = sst["lon"].values.astype(np.float64) % 360.0
    values = sst.values.astype(np.float64)
    ocean = np.all(np.isfinite(values), axis=0)  # a fixed land mask: cells missing in any winter are land
    anomalies = values[:, ocean]
    n_winters = anomalies.shape[0]
    if detrend:  # least-squares line per cell over the winters (Toms et al. detrended)
        design = np.stack([np.ones(n_winters), np.arange(n_winters) - (n_winters - 1) / 2], axis=1)
        anomalies = anomalies - design @ np.linalg.lstsq(design, anomalies, rcond=None)[0]
    else:
        anomalies = anomalies - anomalies.mean(axis=0)
    box = nino34_region(lat, lon) & ocean
    weights = np.sqrt(np.cos(np.deg2rad(lat)))[:, None] * np.ones((1, lon.size))
    weights = weights[ocean]
    _, singular, patterns = np.linalg.svd(anomalies * weights, full_matrices=False)
    keep = singular > 1e-10 * singular[0]  # detrending removes two degrees of freedom
    loadings = (singular[keep, None] / np.sqrt(n_winters - 1)) * patterns[keep] / weights
    box_cells = box[ocean]
    signs = np.where(loadings[:, box_cells].mean(axis=1) < 0, -1.0, 1.0)  # EOF 1 warm in Nino3.4
    loadings = loadings * signs[:, None]
    return {"lat": lat, "lon": lon, "ocean": ocean, "anomalies": anomalies, "loadings": loadings,
            "explained_variance": singular[keep] ** 2 / np.sum(singular**2), "time": sst["time"].values,
            "box": box}


def nino34_region(lat, lon) -> np.ndarray:
    """Boolean (lat, lon) grid: cell centres inside 5S-5N, 170W-120W."""
    lat = np.asarray(lat, dtype=np.float64)
    lon = np.asarray(lon, dtype=np.float64) % 360.0
    in_lat = (lat >= NINO34_BOX["lat_min"]) & (lat <= NINO34_BOX["lat_max"])
    in_lon = (lon >= NINO34_BOX["lon_min"]) & (lon <= NINO34_BOX["lon_max"])
    region = in_lat[:, None] & in_lon[None, :]
    if not region.any():
        raise ValueError("the grid has no cell centre inside the Nino3.4 box (5S-5N, 170W-120W)")
    return region


def nino34_index(maps, lat, lon, land_mask=None) -> np.ndarray:
    """Nino3.4 index (K) of maps [..., lat, lon]: cos(lat)-weighted mean over the ocean cells of
    the box, computed in float64."""
    region = nino34_region(lat, lon)
    if land_mask is not None:
        region = region & ~np.asarray(land_mask, dtype=bool)
    weights = np.cos(np.deg2rad(np.asarray(lat, dtype=np.float64)))[:, None] * region
    maps = np.asarray(maps, dtype=np.float64)
    return np.tensordot(maps, weights, axes=([-2, -1], [0, 1])) / weights.sum()


def make_enso(n_samples: int = 2000, ar1_coefficient: float = 0.9, shrinkage: float = 0.1,
              threshold: float = 0.5, detrend: bool = True, dtype: str = "float32", seed: int = 0,
              path=None) -> xr.Dataset:
    """Synthetic ENSO maps with the real sample's statistics (see the module docstring).

    n_samples: maps kept after the |Nino3.4| > threshold filter, in time order.
    ar1_coefficient: month-to-month autocorrelation of the ENSO index (0.9: e-folding ~9.5
    months, a choice; the winter-mean sample cannot give a monthly value).
    shrinkage: weight of the diagonal in the residual covariance, in [0, 1].
    """
    seed = check_seed(seed)
    dtype = float_dtype(dtype)
    if n_samples < 1:
        raise ValueError(f"n_samples must be positive, got {n_samples}")
    if not 0 <= ar1_coefficient < 1:
        raise ValueError(f"ar1_coefficient must be in [0, 1), got {ar1_coefficient}")
    if not 0 <= shrinkage <= 1:
        raise ValueError(f"shrinkage must be in [0, 1], got {shrinkage}")
    path = str(Path(path) if path is not None else sample_path())
    stats = sample_statistics(path, bool(detrend))
    lat, lon, ocean, loadings = stats["lat"], stats["lon"], stats["ocean"], stats["loadings"]
    enso_loading, residual_loadings = loadings[0], loadings[1:]
    residual_std = np.sqrt(np.sum(residual_loadings**2, axis=0))  # sqrt(diag R)

    maps_kept, index_kept, months_kept, driver_kept = [], [], [], []
    n_kept, state, chunk = 0, None, 0
    max_chunks = 100 * (n_samples // MONTHS_PER_CHUNK + 1)
    while n_kept < n_samples:
        if chunk >= max_chunks:
            raise ValueError(f"only {n_kept} of {n_samples} maps passed |Nino3.4| > {threshold} K in "
                             f"{chunk * MONTHS_PER_CHUNK} months; lower the threshold")
        generator = rng(seed, "enso", chunk)
        months = MONTHS_PER_CHUNK
        if state is None:  # start the chain in its stationary distribution
            state = generator.standard_normal()
        innovations = generator.standard_normal(months) * np.sqrt(1 - ar1_coefficient**2)
        # a_t = phi a_{t-1} + e_t, carried across chunks through the filter state
        driver, _ = scipy.signal.lfilter([1.0], [1.0, -ar1_coefficient], innovations,
                                             zi=[ar1_coefficient * state])
        state = driver[-1]
        coefficients = generator.standard_normal((months, residual_loadings.shape[0]))
        white = generator.standard_normal((months, enso_loading.size))
        ocean_values = (driver[:, None] * enso_loading
                        + np.sqrt(1 - shrinkage) * coefficients @ residual_loadings
                        + np.sqrt(shrinkage) * residual_std * white)
        maps = np.zeros((months, lat.size, lon.size), dtype=dtype)  # land = 0, as Toms et al.
        maps[:, ocean] = ocean_values.astype(dtype)
        index = nino34_index(maps, lat, lon, ~ocean)  # from the stored (cast) maps
        keep = np.abs(index) > threshold
        take = np.flatnonzero(keep)[: n_samples - n_kept]
        maps_kept.append(maps[take])
        index_kept.append(index[take])
        months_kept.append(chunk * MONTHS_PER_CHUNK + take)
        driver_kept.append(driver[take])
        n_kept += take.size
        chunk += 1

    config = {"n_samples": n_samples, "ar1_coefficient": ar1_coefficient, "shrinkage": shrinkage,
              "threshold": threshold, "detrend": bool(detrend), "dtype": dtype.name, "seed": seed}
    ds = _enso_dataset(np.concatenate(maps_kept), np.concatenate(index_kept), lat, lon, ocean,
                       cf(("sample",), np.concatenate(months_kept).astype(np.int64), "1",
                          "month index in the synthetic monthly sequence (before the |Nino3.4| filter)"))
    ds["enso_index"] = cf(("sample",), np.concatenate(driver_kept), "1",
                          "latent AR(1) ENSO index driving enso_pattern (unit variance)")
    ds["enso_pattern"] = cf(("lat", "lon"), _on_grid(enso_loading, ocean), "K",
                            "SST anomaly pattern driven by enso_index: leading EOF loading of the real "
                            "sample, K per unit index (0 over land)")
    ds.attrs = dataset_attrs(
        title="Synthetic ENSO SST anomaly maps (El Nino / La Nina classification)",
        generator="xaibench.studies.data.enso.make_enso", seed=seed, config=config, synthetic=True,
        source=("synthetic maps drawn with the spatial statistics (EOF loadings, shrunk residual "
                "covariance) of the real sample: " + SAMPLE_SOURCE),
        input_variable="sst_anomaly", target_variable="label",
        reference="Toms, Barnes and Ebert-Uphoff (2020), JAMES, doi:10.1029/2019MS002002",
        method=("x_t = a_t L_1 + sqrt(1-s) sum_{k>=2} z_k L_k + sqrt(s) sqrt(diag R) xi_t; a_t AR(1), "
                "L_k EOF loadings of the (detrended) real sample, s = shrinkage toward diag(R)"),
        enso_explained_variance_fraction=float(stats["explained_variance"][0]),
    )
    return ds


def make_enso_real(threshold: float = 0.5, keep_all: bool = False, detrend: bool = True,
                   dtype: str = "float32", path=None) -> xr.Dataset:
    """The 50 real winters of the sample as an ENSO Dataset (synthetic=false): a held-out test
    set. Labels from their own Nino3.4 index; keep_all=False keeps only |Nino3.4| > threshold
    (35 of 50 winters with the default detrending), keep_all=True all 50 (with a `passes_threshold`
    variable). Deterministic: no seed."""
    dtype = float_dtype(dtype)
    path = str(Path(path) if path is not None else sample_path())
    stats = sample_statistics(path, bool(detrend))
    lat, lon, ocean = stats["lat"], stats["lon"], stats["ocean"]
    n_winters = stats["anomalies"].shape[0]
    maps = np.zeros((n_winters, lat.size, lon.size), dtype=dtype)
    maps[:, ocean] = stats["anomalies"].astype(dtype)
    index = nino34_index(maps, lat, lon, ~ocean)
    passes = np.abs(index) > threshold
    keep = np.arange(n_winters) if keep_all else np.flatnonzero(passes)
    time = cf(("sample",), stats["time"][keep], None,
              "mid-January date of the NDJFM winter (the winter ending in that year)", "time")
    ds = _enso_dataset(maps[keep], index[keep], lat, lon, ocean, time)
    if keep_all:
        ds["passes_threshold"] = cf(("sample",), passes[keep], "1", f"|nino34| > {threshold} K")
    config = {"threshold": threshold, "keep_all": bool(keep_all), "detrend": bool(detrend), "dtype": dtype.name}
    ds.attrs = dataset_attrs(
        title="Real NDJFM SST anomaly winters (held-out ENSO test set)",
        generator="xaibench.studies.data.enso.make_enso_real", seed=None, config=config, synthetic=False,
        source=SAMPLE_SOURCE + ("; linearly detrended per cell" if detrend else "; de-meaned per cell"),
        input_variable="sst_anomaly", target_variable="label",
        n_winters=n_winters, n_passing_threshold=int(passes.sum()),
        n_el_nino=int((passes & (index > 0)).sum()), n_la_nina=int((passes & (index < 0)).sum()),
    )
    return ds


def _on_grid(ocean_values: np.ndarray, ocean: np.ndarray) -> np.ndarray:
    grid = np.zeros(ocean.shape, dtype=np.float64)
    grid[ocean] = ocean_values
    return grid


def _enso_dataset(maps, index, lat, lon, ocean, time) -> xr.Dataset:
    n = maps.shape[0]
    return xr.Dataset(
        {
            "sst_anomaly": cf(("sample", "lat", "lon"), maps, "K", "sea surface temperature anomaly (0 over land)"),
            "label": cf(("sample",), (index > 0).astype(np.int64), "1", "ENSO phase from the sign of nino34",
                        flag_values=np.array([0, 1], dtype=np.int64), flag_meanings="la_nina el_nino"),
            "nino34": cf(("sample",), index, "K", "Nino3.4 index: cos(lat)-weighted mean SST anomaly "
                         "over 5S-5N, 170W-120W"),
            "land_mask": cf(("lat", "lon"), ~ocean, "1", "land mask (true over land, where sst_anomaly is 0)"),
            "nino34_region": cf(("lat", "lon"), nino34_region(lat, lon) & ocean, "1",
                                "Nino3.4 box (true on the cells averaged into nino34)"),
        },
        coords={
            "sample": sample_coordinate(n),
            "time": time,
            "lat": cf(("lat",), lat, "degrees_north", "latitude (cell centre)", "latitude"),
            "lon": cf(("lon",), lon, "degrees_east", "longitude (cell centre)", "longitude"),
        },
    )
