"""Every reference case's maps scored with the evaluation metrics, as skill scores against a
random map (Bommer et al. 2024), with Quantus's value beside ours where it is asked for.

    score_case(explanations_dir, model_dir, out_csv, ...)      a case's folder of
                                    <method>__<backend>.nc files (the cases study's format)
    score_groundtruth(relevance_nc, model_dir, out_csv, ...)   the ground-truth benchmark's
                                    relevance.nc (explanation x sample x cell)
    score(case, model, entries, ...) -> DataFrame              the shared core

What is scored (one row per case x method x backend x metric, SCORE_COLUMNS):
- value: the metric's mean over the scored samples (NaN samples left out; `samples` counts the rest);
- random_value: the same metric for a uniform random map on [0, 1) of the same samples (for the
  metrics that re-explain: a fresh random map per call for robustness, the same one for
  randomization; xaibench.metrics.evaluation.random_reference says why): Bommer et al.'s reference;
- skill_score: (value - random_value) / (optimum - random_value), 1 at the metric's optimum, 0 for
  the random map, negative when worse than random;
- quantus_value: Quantus 0.6.0's value of the same metric on the same Setting (its mean over the
  samples), where the configuration asks for it, in Quantus's own form (MPRT and random logit over
  every feature: quantus_check.quantus_form); quantus_deterministic: whether the metric is
  deterministic. The randomized ones replay Quantus's draws, so the two agree unless the method
  re-explained is itself random (SmoothGrad's noise follows the batch) or Quantus computes
  something else (quantus_check.KNOWN_DIFFERENCES);
- note: why a value is missing (no mask, re-explaining not asked for this backend, a backend that
  cannot explain a randomized model, Quantus cannot take the input).

Re-explaining metrics (robustness, randomization) call the same backend with the options stored
in the file; the backends in `explain_backends` only (innvestigate builds a TensorFlow graph per
randomized model: minutes per map). A failure of our own metric raises; a backend that cannot
re-explain, a method that refuses the perturbed input (xaibench.metrics.evaluation.CANNOT_EXPLAIN)
and a metric without a value for the model (NotApplicable) leave a NaN with the reason.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from xaibench.errors import InputError
from xaibench.metrics import evaluation as E
from xaibench.progress import Progress
from xaibench.studies import sweep

logger = logging.getLogger(__name__)

SCORE_COLUMNS = ("case", "method", "backend", "metric", "category", "value", "skill_score", "quantus_value",
                 "quantus_deterministic", "random_value", "optimum", "higher_is_better", "samples", "seconds",
                 "quantus_seconds", "note")


@dataclass
class Entry:
    """One map to score: a method on a backend, its samples and how to re-explain them."""

    method: str
    backend: str
    x: torch.Tensor
    target: torch.Tensor
    relevance: torch.Tensor
    explain: E.Explain | None
    note: str = ""        # why explain is None


def backend_explain(method: str, backend: str, options: dict, dtype: torch.dtype | None = None) -> E.Explain:
    """An Explain that calls xaibench.explain with the method, backend and options of a stored map."""
    import xaibench

    def explain(model, x, target):
        chosen = dict(options)
        if dtype is not None:
            chosen["dtype"] = dtype
        return xaibench.explain(model, x, method, target=target, backend=backend, **chosen).relevance.detach()

    return explain


def score(case: str, model: torch.nn.Module, entries: Iterable[Entry], *, mask: torch.Tensor | None = None,
          metrics: Iterable[str] | None = None, seed: int = 0, quantus: bool = False,
          options: dict | None = None, log: Callable[[str], None] | None = None) -> pd.DataFrame:
    """Rows of SCORE_COLUMNS for every entry x metric (module docstring). `metrics`: names
    (default every registered one); `options`: {metric: {option: value}} over the defaults."""
    say = log or logger.info
    registry = E.metrics()
    names = list(registry) if metrics is None else list(metrics)
    unknown = [name for name in names if name not in registry]
    unknown += [f"{name} (in options)" for name in (options or {}) if name not in registry]
    if unknown:
        raise InputError(f"unknown metric(s) {', '.join(unknown)}; metrics: {', '.join(registry)}")
    from xaibench.studies.evaluation.quantus_check import quantus_functions

    functions = quantus_functions() if quantus else {}
    model = model.eval()
    entries = list(entries)
    rows, references, progress = [], {}, Progress(len(entries))
    for entry in entries:
        setting = E.Setting(model, entry.x, entry.target, entry.relevance, entry.explain, mask=mask, seed=seed,
                            options=dict(options or {}))
        key = _samples_key(entry)
        if key not in references:   # the random map's values: once per set of samples
            references[key] = E.random_reference(setting, names)
        scores = E.evaluate(setting, names, references[key], missing_explain=entry.note)
        for result in scores:
            row = {"case": case, "method": entry.method, "backend": entry.backend, **asdict(result)}
            row["quantus_deterministic"] = registry[result.metric].deterministic
            row.update(_quantus(functions.get(result.metric), setting, registry[result.metric], quantus))
            quantus_note = row.pop("quantus_note", "")
            row["note"] = "; ".join(part for part in (row["note"], quantus_note) if part)
            rows.append(row)
        say(f"{progress.step()} {entry.method:22s} {entry.backend:12s} " + " ".join(
            f"{r.metric}={r.skill_score:.2f}" for r in scores if np.isfinite(r.skill_score)))
    return pd.DataFrame(rows, columns=list(SCORE_COLUMNS))


def _samples_key(entry: Entry) -> tuple:
    """Entries of the same samples share one random reference."""
    return (tuple(entry.x.shape), float(entry.x.double().sum()), tuple(entry.target.tolist()))


def _quantus(function, setting: E.Setting, metric: E.Metric, asked: bool) -> dict:
    """{quantus_value, quantus_seconds} and, when Quantus fails, why (quantus_note)."""
    if not asked or function is None or not metric.available(setting):
        return {"quantus_value": math.nan, "quantus_seconds": math.nan}
    from xaibench.studies.evaluation.quantus_check import quantus_form, quantus_options

    start = time.perf_counter()
    try:
        values = np.asarray(function(setting, **quantus_options(metric.name, setting)), dtype=np.float64)
    except Exception as error:   # Quantus's own limits (input layouts it cannot take) are a note, not an end
        return {"quantus_value": math.nan, "quantus_seconds": math.nan,
                "quantus_note": f"Quantus failed: {sweep.one_line(error, 200)}"}
    finite = values[np.isfinite(values)]
    form = quantus_form().get(metric.name, {})
    return {"quantus_value": float(finite.mean()) if finite.size else math.nan,
            "quantus_seconds": time.perf_counter() - start,
            "quantus_note": ("Quantus's value is its own form: " + ", ".join(f"{k}={v!r}" for k, v in form.items()))
            if form else ""}


# --- the reference cases ----------------------------------------------------------------------------
def score_case(explanations_dir, model_dir, out_csv, *, samples: int | None = None, seed: int = 0,
               backends: Iterable[str] | None = None, explain_backends: Iterable[str] = ("native",),
               methods: Iterable[str] | None = None, metrics: Iterable[str] | None = None,
               quantus: bool = False, options: dict | None = None,
               log: Callable[[str], None] | None = None) -> pd.DataFrame:
    """Score a case's explanation files (the cases study's folder results/explanations/<model>).

    samples: the first N samples of each file (default all); backends, methods: which files
    (default all); explain_backends: the backends that re-explain for robustness and
    randomization; quantus: also run Quantus's versions. The mask for localization is the
    file's `region` (Nino3.4 box, convective region, radar footprint), broadcast to the input."""
    from xaibench.io import read_dataset, write_csv
    from xaibench.studies.models.training import load_trained

    folder = Path(explanations_dir)
    files = sorted(folder.glob("*__*.nc"))
    if not files:
        raise InputError(f"no <method>__<backend>.nc explanation files in {folder}")
    model, metadata = load_trained(model_dir)
    chosen_backends = None if backends is None else set(backends)
    chosen_methods = None if methods is None else set(methods)
    entries, mask, case = [], None, None
    for path in files:
        method, _, backend = path.name.removesuffix(".nc").rpartition("__")
        if (chosen_backends is not None and backend not in chosen_backends) or \
                (chosen_methods is not None and method not in chosen_methods):
            continue
        ds = read_dataset(path)
        case = case or ds.attrs.get("case", folder.name)
        if ds.attrs.get("model") not in (None, metadata.get("model")):
            raise InputError(f"{path} explains {ds.attrs.get('model')!r}, "
                             f"but {model_dir} holds {metadata.get('model')!r}")
        rows = slice(None) if samples is None else slice(0, samples)
        ds = ds.isel(sample=rows)
        x = torch.from_numpy(np.ascontiguousarray(ds["input"].values, dtype=np.float32))
        relevance = torch.from_numpy(np.ascontiguousarray(ds["relevance"].values, dtype=np.float32))
        target = torch.from_numpy(np.asarray(ds["target"].values, dtype=np.int64))
        if mask is None and "region" in ds:
            mask = _region_mask(ds)
        explain, note = None, f"re-explaining is not asked of {backend} (evaluation.explain_backends)"
        if backend in set(explain_backends):
            options_stored = json.loads(ds.attrs.get("options", "{}"))
            explain, note = backend_explain(method, backend, options_stored), ""
        entries.append(Entry(method, backend, x, target, relevance, explain, note))
    if not entries:
        raise InputError(f"no explanation file in {folder} matches backends {sorted(chosen_backends or [])} "
                         f"and methods {sorted(chosen_methods or [])}")
    table = score(case, model, entries, mask=mask, metrics=metrics, seed=seed, quantus=quantus, options=options,
                  log=log)
    write_csv(table, out_csv)
    return table


def _region_mask(ds) -> torch.Tensor:
    """The file's `region` as a bool tensor broadcast to the input's shape [sample, *input dims]."""
    import xarray as xr

    region = ds["region"].astype(bool)
    broadcast, _ = xr.broadcast(region, ds["input"])
    broadcast = broadcast.transpose(*ds["input"].dims)
    return torch.from_numpy(np.ascontiguousarray(broadcast.values, dtype=bool))


# --- the ground-truth benchmark ---------------------------------------------------------------------
def score_groundtruth(relevance_nc, model_dir, out_csv, *, samples: int | None = 64, seed: int = 0,
                      mask_fraction: float = 0.1, backends: Iterable[str] | None = None,
                      explain_backends: Iterable[str] = ("native",), methods: Iterable[str] | None = None,
                      metrics: Iterable[str] | None = None, quantus: bool = False, options: dict | None = None,
                      log: Callable[[str], None] | None = None) -> pd.DataFrame:
    """Score the ground-truth benchmark's maps of the trained network (relevance.nc).

    Localization's mask is where the truth lies: per sample, the cells holding the largest
    `mask_fraction` of the exact attribution's magnitude |A| (at least one cell)."""
    from xaibench.io import read_dataset, write_csv
    from xaibench.studies.models.training import load_trained

    if not 0 < mask_fraction <= 1:
        raise InputError(f"mask_fraction must be in (0, 1], got {mask_fraction}")
    model, _ = load_trained(model_dir)
    ds = read_dataset(relevance_nc)
    rows = slice(None) if samples is None else slice(0, samples)
    ds = ds.isel(sample=rows)
    x = torch.from_numpy(np.ascontiguousarray(ds["sst_anomaly"].values, dtype=np.float32))
    target = torch.zeros(x.shape[0], dtype=torch.long)
    mask = truth_mask(torch.from_numpy(np.asarray(ds["attribution"].values)), mask_fraction)
    chosen_backends = None if backends is None else set(backends)
    chosen_methods = None if methods is None else set(methods)
    entries = []
    for index in range(ds.sizes["explanation"]):
        one = ds.isel(explanation=index)
        method, backend = str(one["method"].values), str(one["backend"].values)
        if "model" in one.coords and str(one["model"].values) != "trained":
            continue
        if (chosen_backends is not None and backend not in chosen_backends) or \
                (chosen_methods is not None and method not in chosen_methods):
            continue
        relevance = torch.from_numpy(np.ascontiguousarray(one["relevance"].values, dtype=np.float32))
        explain, note = None, f"re-explaining is not asked of {backend} (evaluation.explain_backends)"
        if backend in set(explain_backends):
            stored = json.loads(str(one["options"].values)) if "options" in one.coords else {}
            explain, note = backend_explain(method, backend, stored), ""
        entries.append(Entry(method, backend, x, target, relevance, explain, note))
    table = score("groundtruth", model, entries, mask=mask, metrics=metrics, seed=seed, quantus=quantus,
                  options=options, log=log)
    write_csv(table, out_csv)
    return table


def truth_mask(attribution: torch.Tensor, fraction: float) -> torch.Tensor:
    """bool [sample, cell]: per sample the ceil(fraction * cells) cells of largest |attribution|."""
    magnitude = attribution.abs().reshape(attribution.shape[0], -1)
    count = max(1, math.ceil(fraction * magnitude.shape[1]))
    top = magnitude.topk(count, dim=1).indices
    mask = torch.zeros_like(magnitude, dtype=torch.bool)
    mask.scatter_(1, top, True)
    return mask.reshape(attribution.shape)


# --- one map as a Setting (the Quantus comparison) -------------------------------------------------
def case_setting(explanations_dir, model_dir, method: str = "lrp.epsilon", backend: str = "native",
                 samples: int | None = None, seed: int = 0) -> tuple[str, E.Setting]:
    """(case name, Setting) of one stored map of a case, re-explained by its own method and backend."""
    from xaibench.io import read_dataset
    from xaibench.studies.models.training import load_trained

    path = Path(explanations_dir) / f"{method}__{backend}.nc"
    if not path.exists():
        raise InputError(f"no {method} map of {backend} in {explanations_dir} ({path.name} is missing)")
    model, _ = load_trained(model_dir)
    ds = read_dataset(path).isel(sample=slice(None) if samples is None else slice(0, samples))
    x = torch.from_numpy(np.ascontiguousarray(ds["input"].values, dtype=np.float32))
    relevance = torch.from_numpy(np.ascontiguousarray(ds["relevance"].values, dtype=np.float32))
    target = torch.from_numpy(np.asarray(ds["target"].values, dtype=np.int64))
    explain = backend_explain(method, backend, json.loads(ds.attrs.get("options", "{}")))
    mask = _region_mask(ds) if "region" in ds else None
    return str(ds.attrs.get("case", Path(explanations_dir).name)), E.Setting(model.eval(), x, target, relevance,
                                                                             explain, mask=mask, seed=seed)


def groundtruth_setting(relevance_nc, model_dir, method: str = "lrp.epsilon", backend: str = "native",
                        samples: int | None = 64, seed: int = 0, mask_fraction: float = 0.1) -> E.Setting:
    """The Setting of one map of the ground-truth benchmark (its trained network)."""
    from xaibench.io import read_dataset
    from xaibench.studies.models.training import load_trained

    model, _ = load_trained(model_dir)
    ds = read_dataset(relevance_nc).isel(sample=slice(None) if samples is None else slice(0, samples))
    chosen = [i for i in range(ds.sizes["explanation"])
              if str(ds["method"].values[i]) == method and str(ds["backend"].values[i]) == backend
              and ("model" not in ds.coords or str(ds["model"].values[i]) == "trained")]
    if not chosen:
        raise InputError(f"{relevance_nc} has no {method} map of {backend} for the trained network")
    one = ds.isel(explanation=chosen[0])
    x = torch.from_numpy(np.ascontiguousarray(ds["sst_anomaly"].values, dtype=np.float32))
    relevance = torch.from_numpy(np.ascontiguousarray(one["relevance"].values, dtype=np.float32))
    target = torch.zeros(x.shape[0], dtype=torch.long)
    stored = json.loads(str(one["options"].values)) if "options" in one.coords else {}
    mask = truth_mask(torch.from_numpy(np.asarray(ds["attribution"].values)), mask_fraction)
    return E.Setting(model.eval(), x, target, relevance, backend_explain(method, backend, stored), mask=mask,
                     seed=seed)
