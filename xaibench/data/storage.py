"""Writing and reading generated Datasets as netCDF (engine h5netcdf).

write_dataset is atomic: it writes a temporary file in the target's folder and moves it into
place with os.replace, so a crash or an interrupted workflow job never leaves a half-written
file under the final name (snakemake would otherwise take it for a finished output).
read_dataset loads everything into memory and closes the file, and turns every failure
(missing, truncated, not netCDF) into an InputError that names the file.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import xarray as xr

from ..errors import InputError

ENGINE = "h5netcdf"
# netCDF has no boolean attributes; bools are stored as these strings and turned back on read.
_BOOL_TEXT = {True: "true", False: "false"}
_TEXT_BOOL = {text: value for value, text in _BOOL_TEXT.items()}


def write_dataset(ds: xr.Dataset, path) -> Path:
    """Write `ds` to `path` atomically (temp file in the same folder, then os.replace)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    encoded = ds.copy(deep=False)
    encoded.attrs = _encode_attrs(ds.attrs)
    for variable in encoded.variables.values():  # shallow copy: new Variable objects, same data
        variable.attrs = _encode_attrs(variable.attrs)
    descriptor, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(descriptor)
    try:
        encoded.to_netcdf(temporary, engine=ENGINE)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return path


def read_dataset(path, engine: str = ENGINE) -> xr.Dataset:
    """Read a Dataset written by write_dataset, fully into memory (the file is closed after).
    engine="scipy" reads netCDF3 files (the eofs HadISST sample is one).

    Raises InputError naming the file when it is missing or cannot be read as netCDF."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"data file not found: {path}")
    try:
        # decode_timedelta=False: offsets such as "min" stay numbers, as they were written.
        with xr.open_dataset(path, engine=engine, decode_timedelta=False) as opened:
            ds = opened.load()
    except Exception as error:  # h5py/h5netcdf raise OSError, ValueError, KeyError... by case
        raise InputError(f"cannot read data file {path} as netCDF ({type(error).__name__}: {error}); "
                         f"it may be truncated or corrupt (a generated file can be deleted and made again)") from error
    ds.attrs = _decode_attrs(ds.attrs)
    for variable in ds.variables.values():
        variable.attrs = _decode_attrs(variable.attrs)
    return ds


def _encode_attrs(attrs: dict) -> dict:
    return {key: _BOOL_TEXT[value] if isinstance(value, bool) else value for key, value in attrs.items()}


def _decode_attrs(attrs: dict) -> dict:
    return {key: _TEXT_BOOL.get(value, value) if isinstance(value, str) else value for key, value in attrs.items()}
