"""Files in and out, in one place: netCDF data sets, tables and trained models.

Part of the library (docs/architecture.md, "Library and studies").

The code lives where it is used; this module only re-exports it.

    write_dataset(ds, path) / read_dataset(path)   atomic netCDF (h5netcdf) write, checked read
                                                   (xaibench.data.storage)
    save_trained(model, metadata, out) / load_trained(directory)
                                                   state dict as safetensors + JSON metadata, both
                                                   written atomically; loading never runs code
                                                   (xaibench.models.training)
    write_csv(frame, path)                         a table, written atomically
"""

import os
from pathlib import Path

from .data.storage import read_dataset, write_dataset
from .models.training import load_trained, save_trained

__all__ = ["load_trained", "read_dataset", "save_trained", "write_csv", "write_dataset"]


def write_csv(frame, path) -> Path:
    """A pandas table as CSV, written beside the target and renamed into place, so an
    interrupted run never leaves a half-written table that looks finished."""
    path = Path(path)
    temporary = path.with_name(f".{path.name}.partial")
    try:
        frame.to_csv(temporary, index=False)
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
    return path
