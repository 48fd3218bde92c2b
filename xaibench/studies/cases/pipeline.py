"""The generic reference-case pipeline: each trained network explained with every method on every
backend that has it, the explanations written as netCDF with the input's dimensions and
coordinates, and the metrics per method x backend.

    explain_case(case, model_dir, data_path, out_dir, ...) -> [written files]
    explain_case(..., batch_size=B, chunk="I/N")  one chunk of the samples (a scatter job)
    gather_case(case, chunk_dirs, out_dir)   the chunks merged: the files of one unchunked run
    metrics_case(case, explanations_dir, data_path, out_csv, ...) -> pandas.DataFrame

One case per reference network (registry.CASES: enso, convection, radar1, radar2, radar3,
radar_vit); what each explains (samples, subsets, region, z^B bounds, extra measures, figure)
is its module's (enso.py, convection.py, radar.py; the interface: case.py). Nothing here depends on which case.

Methods (DEFAULT_METHODS) with their options (DEFAULT_OPTIONS, recorded in every file): LRP
presets with epsilon 0.1 and biases taking part; z^B with explicit bounds, one scalar pair for
every sample and backend (innvestigate bakes one pair into its analyzer): the case's
zbox_bounds; integrated gradients from a zero baseline, 64 steps, left Riemann sum
(innvestigate's only rule); SmoothGrad with noise 0.1 x each sample's range, 32 copies, seed 0
(native). deep_taylor exists in innvestigate only (Toms et al. used it); its agreement is
measured against table.NEAREST_NATIVE (lrp.zplus). Options only the native engine honours are
dropped for the other backends (xaibench.studies.sweep.options_for).

Failures follow xaibench.studies.sweep with native_failure="raise": a backend that is not
installed or cannot mirror the model (sweep.SKIPPABLE) is recorded in out_dir/skipped.csv with
the reason (status "skipped"), as is any other failure of a non-native backend (status "error");
any failure of the native engine raises. Where TensorFlow has no float64 kernel (3D pooling),
innvestigate runs in float32 and the file's dtype attribute says so.

File format (out_dir/<method>__<backend>.nc, written atomically by data.write_dataset):
    relevance(sample, *input dims)  float; CF units: the output's ("1"), per unit of input for
                                    gradient and smoothgrad
    input(sample, *input dims)      the explained input (the data's variable, its attributes)
    output(sample)                  the explained output value (softmax stripped)
    target(sample)                  flat index of the explained output
    subset(sample), source_sample(sample)   where the sample comes from and its index there
    label(sample), prediction(sample)       classifiers: the true and the predicted class
    target_y(sample), target_x(sample), target_pixel(sample), target_reflectivity(sample)   radar
    region(*region dims)            bool, the expected region: (lat, lon) for enso,
                                    (sample, y, x) for convection and radar
    conservation_error(sample)      native LRP: |sum R + absorbed - output| (the ledger); native
                                    integrated gradients: its completeness residual
    coordinates from the data: lat, lon (enso); channel, time, y, x (convection); channel, y, x (radar)
    attrs: Conventions, title, case, model, model_dir, method, backend, lrp, options (JSON),
           known_differences ('; '-joined), dtype, dtype_note, data, data_hash, subsets (JSON),
           stripped, gradient_fallback (zennit: where it gave the plain gradient, else ""), xaibench_version

Chunks (xaibench.studies.chunks: why they are whole batches of batch_size samples): a chunk's
folder holds the same files for its rows of the selection (the sample coordinate keeps the
rows' numbers in the whole selection) and chunk.json, written last: {case, chunk "I/N",
samples, batch_size, rows [start, stop], pairs [[method, backend], ...] in run order,
data_hash}. An empty chunk (more chunks than batches) holds chunk.json only. gather_case
concatenates each file along sample (everything else must be identical in every chunk, the
attributes included; a chunk that holds every sample has the unchunked files, copied as they
are) and writes a pair as skipped when any chunk skipped it, with the reason the first of them
gave: where an unchunked run would stop at the same batch with the same error.
"""

from __future__ import annotations

import copy
import csv
import io
import json
import logging
import math
import os
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import xarray as xr

from xaibench import metrics as M
from xaibench.backends import table
from xaibench.backends.zennit_backend import fallback_note
from xaibench.errors import ChunkError, ExportError, InputError
from xaibench.io import read_dataset, write_bytes, write_csv, write_dataset, write_json, write_text
from xaibench.studies import chunks, sweep
from xaibench.studies.cases.case import Case
from xaibench.studies.cases.registry import CASES, get_case
from xaibench.studies.chunks import Chunk

logger = logging.getLogger(__name__)

CASE_NAMES = tuple(CASES)
DEFAULT_METHODS = ("lrp.epsilon", "lrp.zplus", "lrp.alpha1beta0", "lrp.preset_a", "lrp.preset_b", "lrp.zbox",
                   "gradient", "input_x_gradient", "integrated_gradients", "smoothgrad", "deep_taylor")
EPSILON = 0.1
DEFAULT_OPTIONS = {
    "integrated_gradients": {"baseline": "zeros", "steps": 64, "rule": "riemann_left"},
    "smoothgrad": {"noise_level": 0.1, "samples": 32, "seed": 0},
}
#: methods whose relevance is per unit of input (no conservation residual)
PER_INPUT_UNIT = ("gradient", "smoothgrad")
SKIPPED_FILE = "skipped.csv"
CHUNK_FILE = "chunk.json"
SKIPPED_COLUMNS = ["case", "method", "backend", "status", "reason"]
#: the extra measures a case may give (Case.shares); empty where it gives none
SHARE_COLUMNS = ("share_visible", "share_ir", "share_static", "share_temporal")
METRICS_COLUMNS = ["case", "method", "backend", "reference", "n_samples",
                   "conservation_residual_max", "conservation_residual_median", "ledger_closure_max",
                   "agreement_max", "agreement_median", "spearman_median", "pattern_correlation_median",
                   "region_mass_mean", "region_mass_positive_mean", *SHARE_COLUMNS,
                   "known_differences", "status"]
PER_SAMPLE_COLUMNS = ["case", "method", "backend", "sample", "subset", "source_sample", "label", "target",
                      "output", "conservation_residual", "ledger_closure", "agreement", "spearman",
                      "pattern_correlation", "region_mass", "region_mass_positive", *SHARE_COLUMNS]


# =====================================================================================================
# Samples
# =====================================================================================================
def select_samples(case: str | Case, model, metadata: dict, data: xr.Dataset, *,
                   evaluation: Mapping[str, object] | None = None, n_samples: int = 16) -> xr.Dataset:
    """The samples a case explains, as a Dataset: input(sample, *input dims), target, subset,
    source_sample, region and the case's extras (label, prediction; target_y/x for radar),
    with the data's coordinates. n_samples is per subset (radar: data samples, two pixels each).
    attrs["subsets"]: JSON {subset: where its samples come from}."""
    case = get_case(case)
    if isinstance(n_samples, bool) or not isinstance(n_samples, int) or n_samples < 1:
        raise InputError(f"n_samples must be a positive integer, got {n_samples!r}")
    sets = _subsets(case, metadata, data, evaluation, n_samples)
    samples, sources = case.samples(model, data, sets, n_samples)
    return _finish(case, samples, data, sources)


def _subsets(case, metadata, data, evaluation, n_samples) -> dict[str, tuple[xr.Dataset, str]]:
    """{subset name: (Dataset, description)}: the test block of the data, then the evaluation sets."""
    from xaibench.studies.data import split

    config = metadata.get("config", {})
    validation, test = config.get("validation", 0.2), config.get("test", 0.2)
    sets = {"test": (split(data, validation=validation, test=test)["test"],
                     f"test block of the training data (split fractions validation={validation}, test={test})")}
    given = dict(evaluation) if evaluation is not None else case.default_evaluation(data, n_samples)
    for name, value in given.items():
        if name in sets:
            raise InputError(f"evaluation set name '{name}' is taken (the data's own test block)")
        description = None
        if isinstance(value, tuple):
            value, description = value
        if isinstance(value, (str, os.PathLike)):
            description = description or f"evaluation set {value} (all samples)"
            value = read_dataset(value)
        if not isinstance(value, xr.Dataset):
            raise InputError(f"evaluation set '{name}' must be a path or an xarray.Dataset, got {type(value).__name__}")
        _check_same_kind(case, data, value, f"evaluation set '{name}'")
        sets[name] = (value, description or "evaluation set (all samples)")
    return sets


def _check_same_kind(case, data, other, what):
    if case.input_variable not in other:
        raise InputError(f"{what} has no variable '{case.input_variable}'")
    for dim in case.input_dims:
        if other.sizes.get(dim) != data.sizes.get(dim):
            raise InputError(f"{what}: dimension {dim} has {other.sizes.get(dim)} values, "
                             f"the data {data.sizes.get(dim)}")
    for coord in case.coords:
        if coord in data.coords and coord in other.coords and data[coord].dtype.kind == "f" \
                and not np.allclose(data[coord].values, other[coord].values):
            raise InputError(f"{what}: coordinate {coord} differs from the data's")


def model_input(case: str | Case, inputs: np.ndarray) -> torch.Tensor:
    """The data's input array [sample, *input dims] as the model takes it (ENSO maps get a channel axis)."""
    return get_case(case).model_input(inputs)


def _finish(case, samples, data, sources) -> xr.Dataset:
    n = samples.sizes["sample"]
    samples = samples.assign_coords(sample=("sample", np.arange(n, dtype=np.int64),
                                            {"long_name": "explained sample (row of this file)", "units": "1"}))
    for coord in case.coords:
        samples = samples.assign_coords({coord: data[coord]})
    region = case.data_region(data)
    if region is not None:
        samples["region"] = region
    samples["input"].attrs = dict(data[case.input_variable].attrs)
    samples["target"].attrs = {"long_name": "flat index of the explained output (per sample of the model output)",
                               "units": "1"}
    samples["subset"].attrs = {"long_name": "the set the sample comes from (see the attribute subsets)"}
    samples["source_sample"].attrs = {"long_name": "index of the sample in its set (its sample coordinate)",
                                      "units": "1"}
    if "prediction" in samples:
        samples["prediction"].attrs = {"long_name": "class the model predicts (argmax of its logits)", "units": "1"}
    samples["region"].attrs = {"long_name": case.region_long_name, "units": "1"}
    samples.attrs = {"subsets": json.dumps(sources, sort_keys=True)}
    return samples


# =====================================================================================================
# Explaining
# =====================================================================================================
def method_options(case: str | Case, method: str, backend: str, bounds: tuple[float, float] | None = None,
                   overrides: Mapping[str, Mapping] | None = None) -> dict:
    """The options of one explanation (module docstring), overrides {method: {option: value}} applied,
    then xaibench.studies.sweep.options_for: options only the native engine reads (SmoothGrad's
    seed) are dropped for other backends."""
    entry = table.METHODS[method]
    options: dict = {}
    if "epsilon" in entry.options:
        options["epsilon"] = EPSILON
    if "low" in entry.options and bounds is not None:
        options["low"], options["high"] = float(bounds[0]), float(bounds[1])
    options.update(copy.deepcopy(DEFAULT_OPTIONS.get(method, {})))
    options.update(dict((overrides or {}).get(method, {})))
    return sweep.options_for(method, backend, options)


def zbox_bounds(case: str | Case, data: xr.Dataset, samples: xr.Dataset) -> tuple[float, float]:
    """The z^B bounds of a case (its zbox_bounds: [0, 1] for the scaled convection and radar
    inputs; for ENSO the min and max over the data file and every explained map)."""
    return get_case(case).zbox_bounds(data, samples)


def _dtype(dtype) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        chosen = dtype
    else:
        chosen = {"float32": torch.float32, "float64": torch.float64}.get(str(dtype))
    if chosen not in (torch.float32, torch.float64):
        raise InputError(f"dtype must be float32 or float64, got {dtype!r}")
    return chosen


def explain_case(case: str | Case, model_dir, data_path, out_dir, methods: Iterable[str] | None = None,
                 backends: Iterable[str] | None = None, n_samples: int = 16, dtype="float32", *,
                 evaluation: Mapping[str, object] | None = None, options: Mapping[str, Mapping] | None = None,
                 batch_size: int | None = None, chunk: Chunk | str | None = None,
                 log: Callable[[str], None] | None = None) -> list[Path]:
    """Explain the case's samples with every method on every backend that has it.

    model_dir: a folder written by xaibench.studies.models.training (model.json + model.safetensors).
    data_path: the data the model was trained on (its hash must match the model's metadata).
    out_dir: gets <method>__<backend>.nc per explanation and skipped.csv (always written; one
        row per (method, backend) that was skipped or failed on a non-native backend).
    methods: default DEFAULT_METHODS; backends: default api.BACKENDS.
    n_samples: per subset (module docstring); dtype: "float32" or "float64".
    evaluation: {subset name: path or Dataset} of extra sets (default: the case's default_evaluation).
    options: {method: {option: value}} overriding DEFAULT_OPTIONS.
    batch_size: explain at most this many samples per call (None: all at once). The batches
        change float rounding (BLAS picks kernels by batch size) and SmoothGrad's noise draws.
    chunk: "I/N": explain only chunk I of N, whole batches of the selection
        (xaibench.studies.chunks), into out_dir with chunk.json (module docstring); gather_case
        merges the N folders into what one run without chunk writes.
    Returns the files written, skipped.csv last (chunk.json after it for a chunk)."""
    from xaibench import __version__
    from xaibench.studies.data import data_hash
    from xaibench.studies.models.training import load_trained

    case = get_case(case)
    say = log or logger.info
    dtype = _dtype(dtype)
    methods = list(DEFAULT_METHODS if methods is None else methods)
    backends = list(sweep.backends() if backends is None else backends)
    pairs = sweep.pairs(methods, backends)
    chunks.batches(0, batch_size)   # a bad batch_size or chunk fails before any work
    chunk = None if chunk is None else Chunk.parse(chunk)

    model, metadata = load_trained(model_dir)
    if metadata.get("model", case.model) != case.model:
        raise InputError(f"{model_dir} holds the {metadata.get('model')} network, not {case.name}")
    data = read_dataset(data_path)
    digest = data_hash(data)
    trained_on = (metadata.get("data") or {}).get("hash")
    if trained_on is not None and trained_on != digest:
        raise InputError(f"{model_dir} was trained on other data than {data_path} (data hash {trained_on[:12]}... "
                         f"in its metadata, {digest[:12]}... here); the case's test split needs the training data")
    samples = select_samples(case, model, metadata, data, evaluation=evaluation, n_samples=n_samples)
    bounds = zbox_bounds(case, data, samples)
    x = model_input(case, samples["input"].values)
    target = torch.from_numpy(np.asarray(samples["target"].values, dtype=np.int64))
    n = samples.sizes["sample"]
    every = chunks.batches(n, batch_size)
    mine, (start, stop) = (every, (0, n)) if chunk is None else (chunk.batches(n, batch_size),
                                                                  chunk.rows(n, batch_size))
    part = samples.isel(sample=slice(start, stop))
    say(f"{case.name}: {n} samples ({_counts(samples)}), {len(pairs)} explanations"
        + ("" if chunk is None else f"; chunk {chunk}: samples {start}:{stop} in {len(mine)} of {len(every)} batches"))

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    manifest = None if chunk is None else {
        "case": case.name, "chunk": str(chunk), "samples": n, "batch_size": batch_size, "rows": [start, stop],
        "pairs": [list(pair) for pair in pairs], "data_hash": digest}
    if chunk is not None and not mine:
        say(f"chunk {chunk} is empty: {len(every)} batches of {n} samples fill the chunks before it")
        return [write_json(out / CHUNK_FILE, manifest, indent=1)]
    written, skipped = [], []
    runner = sweep.Sweep(native_failure="raise")
    common = {"case": case.name, "model": str(metadata.get("model", case.model)), "model_dir": str(model_dir),
              "data": str(data_path), "data_hash": digest, "subsets": samples.attrs["subsets"],
              "xaibench_version": __version__}
    for method, backend in pairs:
        chosen = method_options(case, method, backend, bounds, options)
        known_unavailable = backend in runner.unavailable

        # a pair that depends on the calls before it runs on every batch, as unchunked (chunks.py)
        whole = chunk is not None and chunks.runs_whole(method, backend)

        def run(method=method, backend=backend, chosen=chosen, whole=whole):
            explanation, used, note = _explain(model, x, target, method, backend, dtype, chosen,
                                               every if whole else mine)
            return (chunks.take_rows(explanation, start, stop) if whole else explanation), (used, note)

        outcome = runner.run(method, backend, run)
        if not outcome.ok:
            skipped.append([case.name, method, backend, outcome.status, outcome.reason])
            if not known_unavailable:
                say(f"  {method:22s} {backend:12s} {outcome.status}: {outcome.reason}")
            continue
        explanation, (used, note) = outcome.explanation, outcome.extra
        known = table.known_differences(backend, method, chosen, model)
        dataset = explanation_dataset(case, part, explanation, method, backend, chosen, known, used, note, common)
        path = out / f"{method}__{backend}.nc"
        write_dataset(dataset, path)
        written.append(path)
        say(f"  {method:22s} {backend:12s} -> {path.name}")
    written.append(_write_skipped(out / SKIPPED_FILE, skipped))
    if manifest is not None:   # last: a folder with chunk.json is a finished chunk
        written.append(write_json(out / CHUNK_FILE, manifest, indent=1))
    return written


def _counts(samples) -> str:
    names, counts = np.unique(np.asarray(samples["subset"].values), return_counts=True)
    return ", ".join(f"{name} {count}" for name, count in zip(names, counts))


def _explain(model, x, target, method, backend, dtype, options, spans):
    """(Explanation, dtype used, note) of the rows in `spans`: one call per batch [(start, stop)],
    concatenated (chunks.explain_in_batches). innvestigate falls back to float32 where TensorFlow
    has no float64 kernel."""
    import xaibench

    def run(model, x, dtype):
        return chunks.explain_in_batches(
            lambda first, last: xaibench.explain(model, x[first:last], method, target=target[first:last],
                                                 backend=backend, dtype=dtype, **options), spans)

    try:
        return run(model, x, dtype), dtype, ""
    except ExportError as error:
        if backend != "innvestigate" or dtype != torch.float64 or "float64" not in str(error):
            raise
    return (run(copy.deepcopy(model).float(), x.float(), torch.float32), torch.float32,
            "innvestigate ran in float32: TensorFlow has no float64 3D pooling kernel on CPU")


def _units(case: Case, method: str, input_units: str) -> str:
    """The relevance's CF units: the output's, or per unit of input for gradients."""
    if method not in PER_INPUT_UNIT or input_units in ("1", ""):
        return case.output_units
    if case.output_units == "1":
        return f"{input_units}-1"
    return f"{case.output_units} {input_units}-1"


def explanation_dataset(case: str | Case, samples: xr.Dataset, explanation, method: str, backend: str,
                        options: dict, known: list[str], dtype: torch.dtype = torch.float32, note: str = "",
                        attrs: Mapping | None = None) -> xr.Dataset:
    """One explanation as a Dataset with the input's dimensions and coordinates (module docstring)."""
    case = get_case(case)
    n = samples.sizes["sample"]
    dims = ("sample",) + case.input_dims
    shape = tuple(samples["input"].shape)
    relevance = explanation.relevance.detach().cpu().numpy()
    if relevance.size != int(np.prod(shape)):
        raise InputError(f"{method} on {backend}: relevance of shape {relevance.shape} does not fit the input {shape}")
    relevance = relevance.reshape(shape)
    output = explanation.output.detach().cpu().numpy().reshape(n)
    explained = np.asarray(torch.as_tensor(explanation.target).cpu().numpy()).reshape(-1)
    if explained.shape == (n,) and not np.array_equal(explained, samples["target"].values):
        raise InputError(f"{method} on {backend} explained other outputs than asked")
    per_input = method in PER_INPUT_UNIT
    input_units = str(samples["input"].attrs.get("units", "1"))
    ds = samples.copy()
    ds["relevance"] = (dims, relevance, {
        "long_name": f"relevance of the explained output ({method}, {backend})"
                     + (" : sensitivity, per unit of input" if per_input else ""),
        "units": _units(case, method, input_units)})
    ds["output"] = ("sample", output, {"long_name": case.output_long_name, "units": case.output_units})
    if explanation.conservation_error is not None:
        error = explanation.conservation_error.detach().cpu().numpy().reshape(n)
        long_name = ("|sum(relevance) + sum(absorbed) - output|: the LRP ledger's closure error"
                     if table.METHODS[method].lrp else
                     "|sum(relevance) - (output - output at the baseline)|: completeness residual of the Riemann sum")
        ds["conservation_error"] = ("sample", error, {"long_name": long_name, "units": case.output_units})
    ds = ds[["relevance", *[v for v in ds.data_vars if v != "relevance"]]]
    ds.attrs = {
        "Conventions": "CF-1.8",
        "title": f"{case.name}: {method} relevance ({backend} backend)",
        **dict(attrs or {}),
        "case": case.name,
        "method": method,
        "backend": backend,
        "lrp": bool(table.METHODS[method].lrp),
        "options": json.dumps(options, sort_keys=True),
        "known_differences": "; ".join(known),
        "dtype": str(dtype).removeprefix("torch."),
        "dtype_note": note,
        "stripped": ", ".join(map(str, explanation.stripped)),
        # zennit's plain gradient where it has no rule (attention's products, softmax, LayerNorm): named
        "gradient_fallback": fallback_note(fallback) if (fallback := getattr(explanation, "gradient_fallback",
                                                                                None)) else "",
        "subsets": samples.attrs.get("subsets", "{}"),
    }
    return ds


def _write_skipped(path: Path, rows) -> Path:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(SKIPPED_COLUMNS)
    writer.writerows(rows)
    write_text(path, buffer.getvalue())
    return path


# =====================================================================================================
# Gathering chunks
# =====================================================================================================
def gather_case(case: str | Case, chunk_dirs: Iterable, out_dir,
                log: Callable[[str], None] | None = None) -> list[Path]:
    """Merge the folders of explain_case(..., chunk="I/N"), I = 1..N in any order, into out_dir:
    the files one explain_case run without chunk (and the same batch_size) writes, bit for bit.

    Refused with ChunkError naming the folder: a folder without chunk.json (not a finished
    chunk), a chunk missing or given twice, chunks of another case or of different runs (other
    samples, batches, pairs or data), an explanation file missing from a chunk that did not skip
    the pair, and files that do not fit together (anything but the per-sample variables differs,
    attributes included). Returns the files written, skipped.csv last."""
    case = get_case(case)
    say = log or logger.info
    folders = [Path(folder) for folder in chunk_dirs]
    manifests = [_read_manifest(folder) for folder in folders]
    order = chunks.in_order([Chunk.parse(manifest["chunk"]) for manifest in manifests], [str(f) for f in folders])
    folders, manifests = [folders[i] for i in order], [manifests[i] for i in order]
    first = manifests[0]
    for folder, manifest in zip(folders, manifests):
        if manifest["case"] != case.name:
            raise ChunkError(f"{folder} is a chunk of case {manifest['case']!r}, not {case.name}")
        for key in ("samples", "batch_size", "pairs", "data_hash"):
            if manifest[key] != first[key]:
                raise ChunkError(f"{folder} and {folders[0]} are chunks of different runs: their {key} differ "
                                 f"({manifest[key]!r} and {first[key]!r})")
        expected = list(Chunk.parse(manifest["chunk"]).rows(first["samples"], first["batch_size"]))
        if manifest["rows"] != expected:
            raise ChunkError(f"{folder}: chunk {manifest['chunk']} holds samples {manifest['rows']}, not {expected} "
                             f"of {first['samples']} samples in batches of {first['batch_size']}")
    filled = [folder for folder, manifest in zip(folders, manifests) if manifest["rows"][0] < manifest["rows"][1]]

    skipped: dict[tuple[str, str], list[str]] = {}   # (method, backend) -> the first chunk's row
    for folder in filled:
        for row in _read_skipped(folder / SKIPPED_FILE):
            skipped.setdefault((row[1], row[2]), row)
    explained = [(method, backend) for method, backend in map(tuple, first["pairs"])
                 if (method, backend) not in skipped]
    for method, backend in explained:   # before anything is written
        missing = [folder for folder in filled if not (folder / f"{method}__{backend}.nc").is_file()]
        if missing:
            raise ChunkError(f"{missing[0] / f'{method}__{backend}.nc'} is missing: that chunk neither explained "
                             f"nor skipped {method} on {backend}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for method, backend in explained:
        name = f"{method}__{backend}.nc"
        if len(filled) == 1:   # one chunk holds every sample: its files are the unchunked run's, copied
            written.append(write_bytes(out / name, (filled[0] / name).read_bytes()))
        else:
            merged = _concat_samples([read_explanation(folder / name, case) for folder in filled], name)
            written.append(write_dataset(merged, out / name))
        say(f"  {method:22s} {backend:12s} -> {name} ({len(filled)} of {len(folders)} chunks)")
    rows = [skipped[tuple(pair)] for pair in first["pairs"] if tuple(pair) in skipped]
    written.append(_write_skipped(out / SKIPPED_FILE, rows))
    return written


def _read_manifest(folder: Path) -> dict:
    path = folder / CHUNK_FILE
    if not path.is_file():
        raise ChunkError(f"{folder} is not a finished chunk: it has no {CHUNK_FILE} "
                         "(written last by explain-case --chunk I/N)")
    try:
        manifest = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ChunkError(f"cannot read {path} ({type(error).__name__}: {error})") from None
    keys = {"case", "chunk", "samples", "batch_size", "rows", "pairs", "data_hash"}
    if not isinstance(manifest, dict) or not keys <= set(manifest):
        raise ChunkError(f"{path} is not a chunk manifest (it needs {', '.join(sorted(keys))})")
    return manifest


def _read_skipped(path: Path) -> list[list[str]]:
    if not path.is_file():
        raise ChunkError(f"{path} is missing: every chunk with samples writes it")
    rows = list(csv.reader(path.read_text().splitlines()))
    if not rows or rows[0] != SKIPPED_COLUMNS:
        raise ChunkError(f"{path} does not start with the columns {','.join(SKIPPED_COLUMNS)}")
    return rows[1:]


def _concat_samples(datasets: list[xr.Dataset], name: str) -> xr.Dataset:
    """The chunks' files of one explanation as one: the per-sample variables concatenated in
    chunk order, everything else (the region of ENSO, coordinates, attributes) identical in every
    chunk. The encoding read from the chunks is dropped, so the file is written as the unchunked
    run writes it."""
    try:
        merged = xr.concat(datasets, dim="sample", data_vars="minimal", coords="minimal", compat="identical",
                           join="exact", combine_attrs="identical")
    except (ValueError, xr.MergeError) as error:
        raise ChunkError(f"the chunks of {name} do not fit together: {' '.join(str(error).split())[:400]}") from None
    return merged[list(datasets[0].variables)].drop_encoding()   # the unchunked file's variable order


# =====================================================================================================
# Metrics
# =====================================================================================================
def explanation_files(explanations_dir) -> dict[tuple[str, str], Path]:
    """{(method, backend): path} of the <method>__<backend>.nc files in a folder."""
    folder = Path(explanations_dir)
    if not folder.is_dir():
        raise InputError(f"explanations folder not found: {folder}")
    found = {}
    for path in sorted(folder.glob("*__*.nc")):
        method, _, backend = path.name.removesuffix(".nc").rpartition("__")
        found[(method, backend)] = path
    return found


def read_explanation(path, case: str | Case | None = None) -> xr.Dataset:
    """One explanation file, checked: its attributes name the method and backend of its file name
    (and the case, when given)."""
    path = Path(path)
    ds = read_dataset(path)
    method, _, backend = path.name.removesuffix(".nc").rpartition("__")
    if (ds.attrs.get("method"), ds.attrs.get("backend")) != (method, backend):
        raise InputError(f"{path} holds {ds.attrs.get('method')!r} on {ds.attrs.get('backend')!r}, "
                         "not what its name says")
    if case is not None and ds.attrs.get("case") != get_case(case).name:
        raise InputError(f"{path} belongs to case {ds.attrs.get('case')!r}, not {get_case(case).name}")
    return ds


def _reference_key(method: str, backend: str) -> tuple[str, str] | None:
    return None if backend == "native" else (table.NEAREST_NATIVE.get(method, method), "native")


def metrics_case(case: str | Case, explanations_dir, data_path, out_csv, *, per_sample_csv=None) -> pd.DataFrame:
    """Metrics per method x backend of a case's explanations (explain_case's folder) -> out_csv.

    Columns (METRICS_COLUMNS; a measure that does not apply is empty):
    - conservation_residual_max/_median: over samples, |sum R - output| / |output| (methods whose
      relevance is in output units: not gradient, smoothgrad);
    - ledger_closure_max: native LRP, the worst |sum R + absorbed - output| / max(|output|, sum|R|);
    - agreement_max/_median: max|R - R_ref| / max(sum|R_ref|, |output_ref|) against the native
      explanation of `reference` (the same method, or table.NEAREST_NATIVE for methods only
      another backend has); spearman_median: signed rank correlation with it;
      pattern_correlation_median (enso): cos(lat)-weighted centred correlation with it;
    - region_mass_mean, region_mass_positive_mean: mean over samples with a non-empty region of
      the share of sum|R| (of sum R+) inside the case's region;
    - share_visible, share_ir (convection): mean over samples of the share of sum|R| on the
      reflectance and on the brightness-temperature channel; share_static, share_temporal:
      mean of metrics.temporal_shares (the part of sum R^2 constant over the frames, the part
      that varies);
    - known_differences: the file's, and zennit's gradient fallback where it had one;
    - status: ok, or the skipped.csv row's "skipped: reason" / "error: reason", or "error: ..."
      when a file cannot be compared.
    data_path: when given, the files' data_hash must match it (None: not checked).
    per_sample_csv: also write one row per method x backend x sample (PER_SAMPLE_COLUMNS).
    Files are read one at a time (a native reference stays loaded while its comparisons run)."""
    from xaibench.studies.data import data_hash

    case = get_case(case)
    paths = explanation_files(explanations_dir)
    digest = data_hash(read_dataset(data_path)) if data_path is not None and paths else None
    # each native file first, then the files compared with it
    ordered = sorted(paths, key=lambda key: (_reference_key(*key) or key, key[1] != "native", key))
    rows, sample_rows, reference = [], [], (None, None)
    for key in ordered:
        reference_key = _reference_key(*key)
        if reference_key is None:
            ds = read_explanation(paths[key], case)
            reference = (key, ds)
        else:
            ds = read_explanation(paths[key], case)
            if reference[0] != reference_key:
                reference = (reference_key, read_explanation(paths[reference_key], case)
                             if reference_key in paths else None)
        if digest is not None and ds.attrs.get("data_hash") != digest:
            raise InputError(f"explanation {paths[key].name} was made from other data than {data_path}")
        row, per_sample = _metrics_row(case, *key, ds, reference[1] if reference_key else None)
        rows.append(row)
        sample_rows += per_sample
    skipped_path = Path(explanations_dir) / SKIPPED_FILE
    if skipped_path.is_file():
        for record in csv.DictReader(skipped_path.read_text().splitlines()):
            row = {column: math.nan for column in METRICS_COLUMNS}
            row.update(case=case.name, method=record["method"], backend=record["backend"], reference="",
                       n_samples=0, known_differences="", status=f"{record['status']}: {record['reason']}")
            rows.append(row)
    order = {name: i for i, name in enumerate(table.METHODS)}
    backend_order = {"native": 0, "zennit": 1, "innvestigate": 2}
    frame = pd.DataFrame(rows, columns=METRICS_COLUMNS)
    if len(frame):
        frame = frame.sort_values(["method", "backend"], key=lambda s: s.map(order if s.name == "method"
                                                                            else backend_order).fillna(99),
                                  kind="stable").reset_index(drop=True)
    write_csv(frame, out_csv)
    if per_sample_csv is not None:
        write_csv(pd.DataFrame(sample_rows, columns=PER_SAMPLE_COLUMNS), per_sample_csv)
    return frame


def _metrics_row(case, method, backend, ds, other) -> tuple[dict, list[dict]]:
    n = ds.sizes["sample"]
    nan = np.full(n, np.nan)
    row = {column: math.nan for column in METRICS_COLUMNS}
    row.update(case=case.name, method=method, backend=backend, reference="", n_samples=n,
               known_differences="; ".join(filter(None, [ds.attrs.get("known_differences", ""),
                                                         ds.attrs.get("gradient_fallback", "")])), status="ok")
    conservation = M.conservation_residual(ds)
    residual = nan if method in PER_INPUT_UNIT else conservation.residual
    closure = nan if conservation.ledger_closure is None else conservation.ledger_closure
    agreement, rank, pattern = nan, nan, nan
    if backend != "native":
        reference = table.NEAREST_NATIVE.get(method, method)
        row["reference"] = reference
        if other is None:
            row["status"] = f"error: no native {reference} explanation to compare with ({reference}__native.nc)"
        elif not (np.array_equal(other["target"].values, ds["target"].values)
                  and np.array_equal(other["input"].values, ds["input"].values)):
            row["status"] = f"error: {reference}__native.nc explains other samples or outputs"
        else:
            agreement = M.agreement(ds["relevance"], other["relevance"], other["output"])
            rank = M.spearman(ds["relevance"], other["relevance"])
            measured = case.pattern_correlation(ds, other)
            if measured is not None:
                pattern = measured
    mass = M.region_mass(ds["relevance"], ds["region"])
    shares = {column: nan for column in SHARE_COLUMNS}
    extra = case.shares(ds)
    unknown = set(extra) - set(SHARE_COLUMNS)
    if unknown:
        raise InputError(f"case {case.name}: share columns {', '.join(sorted(unknown))} are not metrics columns")
    shares.update(extra)
    stats = {"conservation_residual": M.summary(residual), "agreement": M.summary(agreement)}
    row.update(conservation_residual_max=stats["conservation_residual"]["max"],
               conservation_residual_median=stats["conservation_residual"]["median"],
               ledger_closure_max=M.summary(closure)["max"],
               agreement_max=stats["agreement"]["max"], agreement_median=stats["agreement"]["median"],
               spearman_median=M.summary(rank)["median"], pattern_correlation_median=M.summary(pattern)["median"],
               region_mass_mean=M.summary(mass.absolute)["mean"],
               region_mass_positive_mean=M.summary(mass.positive)["mean"],
               **{column: M.summary(values)["mean"] for column, values in shares.items()})
    label = ds["label"].values if "label" in ds else np.full(n, -1)
    per_sample = [{"case": case.name, "method": method, "backend": backend, "sample": int(i),
                   "subset": str(ds["subset"].values[i]), "source_sample": int(ds["source_sample"].values[i]),
                   "label": int(label[i]), "target": int(ds["target"].values[i]),
                   "output": float(ds["output"].values[i]), "conservation_residual": residual[i],
                   "ledger_closure": closure[i], "agreement": agreement[i], "spearman": rank[i],
                   "pattern_correlation": pattern[i], "region_mass": mass.absolute[i],
                   "region_mass_positive": mass.positive[i], **{c: v[i] for c, v in shares.items()}}
                  for i in range(n)]
    return row, per_sample
