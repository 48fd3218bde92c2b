"""Reading and checking the explanation files the figures draw.

One file per method x backend (written by xaibench.studies.cases), holding:

    relevance   (sample, *input dims)   the attribution, shaped like the input
    input       (sample, *input dims)   the explained input
    output      (sample)                the explained output value (softmax stripped)
    target      (sample)                the explained output index
    label       (sample)                the true class, when the data have labels
    target_y, target_x (sample)         radar only: the explained output pixel (row, column index)
    coordinates lat, lon (degrees_north/east), channel (names), time, y, x
    attributes  method, backend, case

with input dims ENSO (lat, lon), convection (channel, time, y, x), radar (channel, y, x).

read_explanations() accepts paths or xarray Datasets and checks all of that up front, so a
figure never fails half-drawn: every problem raises InputError naming the file (or "dataset
#i (method, backend)" for an in-memory Dataset) and what is wrong.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import xarray as xr

from xaibench.errors import InputError
from xaibench.io import read_dataset

#: the input dimensions (after "sample") of each case's relevance and input
CASE_DIMS = {
    "enso": ("lat", "lon"),
    "convection": ("channel", "time", "y", "x"),
    "radar": ("channel", "y", "x"),
}
#: coordinates each case's figures need (labels, map positions)
CASE_COORDS = {
    "enso": ("lat", "lon"),
    "convection": ("channel", "time"),
    "radar": ("channel",),
}
#: per-sample variables each case's figures need
CASE_PER_SAMPLE = {
    "enso": ("output", "target"),
    "convection": ("output", "target"),
    "radar": ("output", "target", "target_y", "target_x"),
}


@dataclass(frozen=True)
class ExplanationFile:
    """One checked explanation file: where it came from, its data, its method and backend."""

    name: str          # the path, or "dataset #i" for an in-memory Dataset (used in messages)
    data: xr.Dataset
    method: str
    backend: str

    @property
    def title(self) -> str:
        """Panel title: 'method (backend)'."""
        return f"{self.method} ({self.backend})"

    @property
    def has_labels(self) -> bool:
        return "label" in self.data.variables


def read_explanations(items, case: str) -> list[ExplanationFile]:
    """Read (if paths) and check explanation files of one case ("enso", "convection", "radar").

    items: one path or Dataset, or a list of them. Raises InputError naming the file and the
    problem (missing variable, wrong dimensions, non-finite relevance, ...)."""
    if case not in CASE_DIMS:
        raise ValueError(f"unknown case '{case}'; known: {', '.join(CASE_DIMS)}")
    if isinstance(items, (str, Path, xr.Dataset)):
        items = [items]
    items = list(items)
    if not items:
        raise InputError(f"no {case} explanation files given")
    return [_check(_open(item, index), case) for index, item in enumerate(items)]


def _open(item, index: int) -> tuple[str, xr.Dataset]:
    if isinstance(item, xr.Dataset):
        attrs = item.attrs
        label = f"dataset #{index}"
        if "method" in attrs or "backend" in attrs:
            label += f" ({attrs.get('method', '?')}, {attrs.get('backend', '?')})"
        return label, item
    if isinstance(item, (str, Path)):
        return str(item), read_dataset(item)  # InputError naming the file if missing or unreadable
    raise TypeError(f"explanation {index}: expected a path or an xarray.Dataset, got {type(item).__name__}")


def _check(opened: tuple[str, xr.Dataset], case: str) -> ExplanationFile:
    name, ds = opened
    expected = ("sample",) + CASE_DIMS[case]
    variables = ", ".join(map(str, ds.data_vars)) or "none"
    for variable in ("relevance", "input"):
        if variable not in ds.data_vars:
            raise InputError(f"{name}: no '{variable}' variable (variables: {variables}); a {case} "
                             f"explanation file needs relevance and input {expected}")
        dims = ds[variable].dims
        if dims != expected:
            raise InputError(f"{name}: '{variable}' has dims {dims}, a {case} explanation needs {expected}")
    if ds.sizes["sample"] == 0:
        raise InputError(f"{name}: no samples")
    for variable in CASE_PER_SAMPLE[case] + (("label",) if "label" in ds.variables else ()):
        if variable not in ds.variables:
            raise InputError(f"{name}: no '{variable}' variable (variables: {variables}); a {case} "
                             f"explanation file needs {', '.join(CASE_PER_SAMPLE[case])}")
        if ds[variable].dims != ("sample",):
            raise InputError(f"{name}: '{variable}' has dims {ds[variable].dims}, expected ('sample',)")
    for coordinate in CASE_COORDS[case]:
        if coordinate not in ds.coords:
            raise InputError(f"{name}: no '{coordinate}' coordinate; a {case} explanation file needs "
                             f"{', '.join(CASE_COORDS[case])}")
    for attribute in ("method", "backend"):
        value = ds.attrs.get(attribute)
        if not isinstance(value, str) or not value:
            raise InputError(f"{name}: no '{attribute}' attribute (a non-empty string naming the {attribute})")
    relevance = ds["relevance"].values
    if not np.issubdtype(relevance.dtype, np.number):
        raise InputError(f"{name}: relevance is not numeric (dtype {relevance.dtype})")
    finite = np.isfinite(relevance.reshape(relevance.shape[0], -1)).all(axis=1)
    if not finite.all():
        bad = np.flatnonzero(~finite)
        raise InputError(f"{name}: relevance is NaN or infinite in {bad.size} sample(s), the first at "
                         f"position {bad[0]} (sample {ds['sample'].values[bad[0]]})")
    return ExplanationFile(name=name, data=ds, method=ds.attrs["method"], backend=ds.attrs["backend"])


def check_same_grid(files: list[ExplanationFile], coordinates) -> None:
    """All files on the same coordinates (e.g. lat, lon): composites are compared panel by panel."""
    first = files[0]
    for other in files[1:]:
        for coordinate in coordinates:
            a, b = first.data[coordinate].values, other.data[coordinate].values
            if a.shape != b.shape or not np.array_equal(a, b):
                raise InputError(f"{other.name}: coordinate '{coordinate}' differs from that of {first.name}; "
                                 f"all files of one figure must be on the same grid")
