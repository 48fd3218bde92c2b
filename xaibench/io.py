"""Files in and out, in one place: the one atomic writer, netCDF data sets, tables, text and
model files. Part of the library (docs/architecture.md, "Library and studies"): every study
writes through it, so no file is ever left half-written under its final name.

    atomic_path(path)                    context manager: a temporary path beside `path` that
                                         replaces it on success (os.replace) and is removed on error
    write_bytes(path, content) / write_text(path, text) / write_json(path, value)
    write_csv(frame, path)               a pandas table (index dropped)
    write_dataset(ds, path) / read_dataset(path)
                                         netCDF (h5netcdf); booleans in attributes survive the trip;
                                         a missing or unreadable file raises InputError naming it
    save_model_files(state, metadata, out) / load_model_files(directory)
                                         a state dict as model.safetensors plus model.json, the JSON
                                         recording the weights' sha256; loading never runs code
                                         (the reference networks are rebuilt from these by
                                         xaibench.studies.models.training.load_trained)

Atomic: the temporary file lives in the target's folder (so os.replace is a rename on the same
file system), is flushed to disk before the rename, and gets the permissions a plain open()
would give (or those of the file it replaces). An interrupted workflow job therefore leaves
either the previous file or none, never a truncated one that snakemake would take as finished.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import xarray as xr

from .errors import InputError

ENGINE = "h5netcdf"
WEIGHTS_FILE = "model.safetensors"
METADATA_FILE = "model.json"
# netCDF has no boolean attributes; bools are stored as these strings and turned back on read.
_BOOL_TEXT = {True: "true", False: "false"}
_TEXT_BOOL = {text: value for value, text in _BOOL_TEXT.items()}

__all__ = ["METADATA_FILE", "WEIGHTS_FILE", "atomic_path", "json_safe", "load_model_files", "read_dataset",
           "save_model_files",
           "write_bytes", "write_csv", "write_dataset", "write_json", "write_text"]


def _new_file_mode(path: Path) -> int:
    if path.exists():
        return path.stat().st_mode & 0o777
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


@contextlib.contextmanager
def atomic_path(path) -> Iterator[Path]:
    """Yield a fresh temporary path in `path`'s folder (created, empty); when the block ends
    without an error the temporary file is synced and renamed to `path`, otherwise removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    mode = _new_file_mode(path)
    temporary = path.parent / f".{path.name}.{os.getpid()}.{uuid.uuid4().hex}.tmp"
    os.close(os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    try:
        yield temporary
        with open(temporary, "rb") as handle:
            os.fsync(handle.fileno())
        os.chmod(temporary, mode)
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def write_bytes(path, content: bytes) -> Path:
    with atomic_path(path) as temporary:
        temporary.write_bytes(content)
    return Path(path)


def write_text(path, text: str) -> Path:
    with atomic_path(path) as temporary:
        temporary.write_text(text, encoding="utf-8")
    return Path(path)


def write_json(path, value, **dump_options) -> Path:
    """`value` as JSON (NaN and infinities refused: they are not JSON), with a final newline."""
    return write_text(path, json.dumps(value, allow_nan=False, **dump_options) + "\n")


def write_csv(frame, path) -> Path:
    """A pandas table as CSV, without its index."""
    with atomic_path(path) as temporary:
        frame.to_csv(temporary, index=False)
    return Path(path)


def write_dataset(ds: xr.Dataset, path) -> Path:
    """Write `ds` to `path` as netCDF (h5netcdf), atomically; boolean attributes are stored as
    "true"/"false" and turned back into booleans by read_dataset."""
    encoded = ds.copy(deep=False)
    encoded.attrs = _encode_attrs(ds.attrs)
    for variable in encoded.variables.values():  # shallow copy: new Variable objects, same data
        variable.attrs = _encode_attrs(variable.attrs)
    with atomic_path(path) as temporary:
        encoded.to_netcdf(temporary, engine=ENGINE)
    return Path(path)


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


def save_model_files(state: dict, metadata: dict, out) -> dict:
    """Write the state dict to OUT/model.safetensors, then the metadata to OUT/model.json, each
    atomically (the JSON last, so a folder with a JSON has its weights). Returns the metadata as
    written, with the weights file's name and sha256 added; non-finite floats become null."""
    from safetensors.torch import save

    directory = Path(out)
    weights = save({key: value.detach().cpu().contiguous() for key, value in state.items()})
    metadata = {**metadata, "weights_file": WEIGHTS_FILE, "weights_sha256": hashlib.sha256(weights).hexdigest()}
    write_bytes(directory / WEIGHTS_FILE, weights)
    text = json.dumps(json_safe(metadata), indent=1, allow_nan=False)
    write_text(directory / METADATA_FILE, text + "\n")
    return json.loads(text)


def load_model_files(directory) -> tuple[dict, dict]:
    """(state dict, metadata) from a folder written by save_model_files. Never unpickles
    anything; a missing, corrupt or mismatched file raises InputError naming it."""
    from safetensors import SafetensorError
    from safetensors.torch import load

    directory = Path(directory)
    metadata_path = directory / METADATA_FILE
    weights_path = directory / WEIGHTS_FILE
    if not metadata_path.is_file():
        raise InputError(f"model metadata file not found: {metadata_path}")
    try:
        metadata = json.loads(metadata_path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise InputError(f"cannot read model metadata {metadata_path} ({type(error).__name__}: {error}); "
                         "it may be truncated or from another program") from None
    if not isinstance(metadata, dict):
        raise InputError(f"cannot read model metadata {metadata_path}: expected a JSON object")
    if not weights_path.is_file():
        raise InputError(f"model weights file not found: {weights_path}")
    weights = weights_path.read_bytes()
    expected = metadata.get("weights_sha256")
    if expected is not None and hashlib.sha256(weights).hexdigest() != expected:
        raise InputError(f"model weights {weights_path} do not match {metadata_path} (sha256 differs): "
                         "the file is corrupt or from another training run")
    try:
        state = load(weights)
    except (SafetensorError, ValueError, OSError) as error:
        raise InputError(f"cannot read model weights {weights_path} as safetensors: {error}") from None
    return state, metadata


def json_safe(value):
    """`value` with tuples as lists, numpy scalars as Python numbers and non-finite floats as None
    (null): what JSON can hold."""
    if isinstance(value, dict):
        return {str(key): json_safe(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(item) for item in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, np.generic):
        return json_safe(value.item())
    return value
