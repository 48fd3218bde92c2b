"""Pieces every generator shares: CF-attributed variables, dataset attributes, seeded random
streams, smooth random fields, the train/validation/test split and a stable data hash.

Reproducibility: every random draw comes from `numpy.random.Generator(PCG64)` streams keyed by
(seed, purpose, chunk index), so the same seed gives bit-identical arrays (same numpy version).
Samples are drawn in chunks of a FIXED size (not derived from n_samples): for ENSO and radar,
asking for more samples appends new ones and leaves the first ones unchanged. (Convection
draws exact class counts as one permutation of the whole set, so its scenes depend on
n_samples.)
"""

from __future__ import annotations

import hashlib
import json
import zlib

import numpy as np
import xarray as xr

CONVENTIONS = "CF-1.8"
# Samples per random stream; fixed so that the first k samples do not depend on n_samples.
CHUNK = 64


def cf(dims, data, units: str | None, long_name: str, standard_name: str | None = None, **extra):
    """(dims, data, attrs) for the xarray constructors, with the CF attributes every variable
    carries: long_name always, units for numbers ("1" when dimensionless), standard_name where
    the CF table has one."""
    attrs = {"long_name": long_name}
    if units is not None:
        attrs["units"] = units
    if standard_name is not None:
        attrs["standard_name"] = standard_name
    attrs.update(extra)
    return (dims, data, attrs)


def sample_coordinate(n: int):
    return cf(("sample",), np.arange(n, dtype=np.int64), "1", "sample index")


def dataset_attrs(*, title: str, generator: str, seed: int | None, config: dict, synthetic: bool,
                  source: str, input_variable: str, target_variable: str, **extra) -> dict:
    """The attributes every generated Dataset carries. `config` is stored as one canonical JSON
    string (sorted keys) so that it survives netCDF and enters the data hash unambiguously.
    `synthetic` is a Python bool in memory; write_dataset stores it as "true"/"false" because
    netCDF has no boolean attributes (read_dataset turns it back into a bool)."""
    attrs = {
        "Conventions": CONVENTIONS,
        "title": title,
        "source": source,
        "synthetic": bool(synthetic),
        "generator": generator,
        "seed": -1 if seed is None else int(seed),
        "config": canonical_json(config),
        "input_variable": input_variable,
        "target_variable": target_variable,
        "split_convention": SPLIT_CONVENTION,
    }
    attrs.update(extra)
    return attrs


def canonical_json(config: dict) -> str:
    return json.dumps(config, sort_keys=True, separators=(",", ":"), default=_jsonable)


def _jsonable(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"config value {value!r} of type {type(value).__name__} is not JSON-serialisable")


def config_of(ds: xr.Dataset) -> dict:
    """The generator configuration stored in a Dataset's attributes."""
    return json.loads(ds.attrs["config"])


def float_dtype(dtype) -> np.dtype:
    dtype = np.dtype(dtype)
    if dtype not in (np.float32, np.float64):
        raise ValueError(f"dtype must be float32 or float64, got {dtype}")
    return dtype


def check_seed(seed) -> int:
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    return int(seed)


def rng(seed: int, purpose: str, chunk: int = 0) -> np.random.Generator:
    """An independent stream for (seed, purpose, chunk). The purpose is hashed with crc32 (stable
    across runs, unlike Python's hash()) so that generators do not share streams."""
    return np.random.default_rng([seed, zlib.crc32(purpose.encode()), chunk])


def chunks(n: int, size: int = CHUNK):
    """(chunk index, start, stop) covering range(n) in blocks of a fixed size."""
    for index, start in enumerate(range(0, n, size)):
        yield index, start, min(start + size, n)


def gaussian_filter_periodic(fields: np.ndarray, length: float) -> np.ndarray:
    """Convolve the last two axes with a Gaussian of std `length` pixels (periodic, via FFT)."""
    height, width = fields.shape[-2:]
    return np.fft.irfft2(np.fft.rfft2(fields) * _gaussian_transfer(height, width, length), s=(height, width))


def smooth_fields(generator: np.random.Generator, shape: tuple[int, ...], length: float) -> np.ndarray:
    """Unit-variance Gaussian random fields on the last two axes of `shape`: white noise
    filtered with a Gaussian of std `length` pixels (periodic). Dividing by the theoretical
    std (not each field's own) keeps amplitudes comparable between fields and frames."""
    height, width = shape[-2:]
    white = generator.standard_normal(shape)
    transfer_full = _gaussian_transfer(height, width, length, full=True)
    std = np.sqrt(np.mean(transfer_full**2))  # variance of filtered unit white noise
    return gaussian_filter_periodic(white, length) / std


def _gaussian_transfer(height: int, width: int, length: float, full: bool = False) -> np.ndarray:
    fy = np.fft.fftfreq(height)[:, None]
    fx = (np.fft.fftfreq(width) if full else np.fft.rfftfreq(width))[None, :]
    return np.exp(-2.0 * np.pi**2 * length**2 * (fy**2 + fx**2))


def sigmoid(x):
    return 0.5 * (1.0 + np.tanh(0.5 * x))  # tanh form: no overflow warnings for large |x|


# ---------------------------------------------------------------------------------------------
# Train / validation / test split
# ---------------------------------------------------------------------------------------------
SPLIT_CONVENTION = (
    "split(ds): contiguous blocks along 'sample' in stored order, no shuffling: first train, then "
    "validation, then test (default fractions 0.6/0.2/0.2; block sizes round(f*n), test takes "
    "the rest). For ENSO the stored order is time, so validation/test lie later in time than "
    "training, as in Toms et al. (2020), and autocorrelated neighbours do not straddle splits "
    "except at the two block boundaries."
)


def split(ds: xr.Dataset, validation: float = 0.2, test: float = 0.2, dim: str = "sample") -> dict[str, xr.Dataset]:
    """{"train", "validation", "test"}: contiguous blocks along `dim` (see SPLIT_CONVENTION).

    A fraction of 0 gives an empty block (for ENSO, whose test set may be the real winters).
    Each part records its name and the fractions in its attrs."""
    if not (0 <= validation < 1 and 0 <= test < 1 and validation + test < 1):
        raise ValueError(f"validation and test fractions must be in [0, 1) with a sum < 1, got {validation}, {test}")
    if dim not in ds.dims:
        raise ValueError(f"dataset has no dimension '{dim}' (dimensions: {', '.join(map(str, ds.dims))})")
    n = ds.sizes[dim]
    n_validation, n_test = round(validation * n), round(test * n)
    n_train = n - n_validation - n_test
    bounds = {"train": (0, n_train), "validation": (n_train, n_train + n_validation),
              "test": (n_train + n_validation, n)}
    parts = {}
    for name, (start, stop) in bounds.items():
        part = ds.isel({dim: slice(start, stop)})
        part.attrs = {**ds.attrs, "split": name, "split_fractions": canonical_json(
            {"train": 1 - validation - test, "validation": validation, "test": test})}
        parts[name] = part
    return parts


# ---------------------------------------------------------------------------------------------
# Data hash
# ---------------------------------------------------------------------------------------------
#: where the generators lived before the studies moved under xaibench/studies/ (issue 15), and now
LEGACY_PREFIX, CURRENT_PREFIX = "xaibench.data.", "xaibench.studies.data."


def generator_name(ds: xr.Dataset) -> str:
    """The generator that made `ds`, by its current module path; files written before the move
    name the old one (xaibench.data.<module>.<function>) and are read as the same generator."""
    name = str(ds.attrs.get("generator", ""))
    return CURRENT_PREFIX + name[len(LEGACY_PREFIX):] if name.startswith(LEGACY_PREFIX) else name


def _generator_key(ds: xr.Dataset) -> str:
    """The generator as the data hash sees it: by the name it had when hashes were introduced,
    so that moving the code changes no hash (a model trained before still fits its data)."""
    name = generator_name(ds)
    return LEGACY_PREFIX + name[len(CURRENT_PREFIX):] if name.startswith(CURRENT_PREFIX) else name


def data_hash(ds: xr.Dataset) -> str:
    """sha256 (hex) over every variable and coordinate (name, dims, dtype, shape, bytes, in
    name order) plus the generator (its stable key, _generator_key) and config. Stable across a write/read round trip;
    use it in training metadata to tie a model to the exact data it saw. Attributes other
    than config/generator do not enter (they are descriptive)."""
    digest = hashlib.sha256()
    digest.update(_generator_key(ds).encode())
    digest.update(str(ds.attrs.get("config", "")).encode())
    for name in sorted(map(str, ds.variables)):
        variable = ds.variables[name]
        values = np.asarray(variable.values)
        digest.update(f"\0{name}\0{','.join(map(str, variable.dims))}\0{values.shape}\0".encode())
        if values.dtype.kind in "OUS":
            # Strings come back from netCDF as object or fixed-width arrays: hash their text.
            digest.update("\0".join(map(str, values.ravel())).encode())
        else:
            digest.update(values.dtype.str.encode())
            digest.update(np.ascontiguousarray(values).tobytes())
    return digest.hexdigest()
