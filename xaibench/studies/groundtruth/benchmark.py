"""The ground-truth attribution benchmark (Mamalakis, Ebert-Uphoff and Barnes 2022; docs/papers.md section 6).

Agreement between libraries says nothing about whether a heat map is right. Here the right answer
is known for every sample: the response is additive over the ocean cells, F(X) = (1/D) sum_i
C_i(X_i), so cell i contributes exactly C_i(X_i)/D (xaibench.studies.data.groundtruth). The dense network
(512-256-128-64-32-16-1) is trained on F and explained with every method on every backend; each
heat map is scored per sample against the ground truth.

    explain_benchmark(model_dir, data, out, n_samples, methods, backends)   -> relevance.nc
    explain_benchmark(..., batch_size=B, chunk="I/N")   one chunk of the samples (a scatter job)
    gather_benchmark(chunk_files, out)   the chunks merged: the relevance.nc of one unchunked run
    score_benchmark(relevance, model_dir, out_dir)   -> correlations.csv, faithfulness.csv, .md
    true_response_network(ds)   F written exactly as a one-hidden-layer ReLU network

Two kinds of evidence, side by side:
- correlation with the ground truth: per-sample Pearson and Spearman over the cells (the paper's
  scores). Methods that give only positive relevance (alpha1beta0 = z+, deep Taylor) are also
  scored against the positive part max(C_i/D, 0), as the paper does;
- faithfulness, which needs no ground truth: the deletion score (AOPC, metrics.deletion_score)
  of the network's output as the cells each map calls most relevant are set to 0 (the
  climatology of the standardized anomalies), shown relative to two orderings:
  faithfulness_relative = (AOPC - AOPC_random) / (AOPC_ground_truth - AOPC_random),
  0 for a random ordering and 1 for the ground truth's ordering.

The same methods also explain the true function itself (model "true_function": F as an exact
ReLU network, float64). Those rows are each method's ceiling with a perfect network: integrated
gradients from 0 and occlusion with fill 0 are exact there (F is additive and C_i(0) = 0), input
x gradient is not (it gives C_i'(X_i) X_i, exact only where C_i is linear through 0).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterable
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import xarray as xr
from torch import nn

from xaibench.errors import ChunkError, InputError
from xaibench.io import read_dataset, write_csv, write_dataset, write_text
from xaibench.studies import chunks
from xaibench.studies.chunks import Chunk
from xaibench.studies.data.common import generator_name

logger = logging.getLogger(__name__)

#: the paper's methods (plus occlusion), in the order of its figures
METHODS = ("gradient", "smoothgrad", "input_x_gradient", "integrated_gradients", "occlusion",
           "lrp.z", "lrp.epsilon", "lrp.alpha1beta0", "deep_taylor")
#: methods whose maps cannot be negative: also scored against the ground truth's positive part
POSITIVE_ONLY = ("lrp.alpha1beta0", "lrp.zplus", "deep_taylor", "deep_taylor.bounded")
#: the options of every method (innvestigate's integrated gradients is a left Riemann sum, so
#: native uses the same rule); what only the native engine honours (SmoothGrad's noise level and
#: seed: Method.native_only_options of xaibench/backends/table.py) is dropped for the other
#: backends by xaibench.studies.sweep.options_for
OPTIONS = {
    "integrated_gradients": {"baseline": "zeros", "steps": 64, "rule": "riemann_left"},
    "smoothgrad": {"noise_level": 0.1, "samples": 32, "seed": 0},
    "occlusion": {"patch": 1, "fill": 0.0},
    # the response is ~0.1 in size: the cases' epsilon of 0.1 would absorb most of it
    "lrp.epsilon": {"epsilon": 1e-3},
}
MODELS = ("trained", "true_function")
TOP_GROUP_WIDTH = 0.05   # methods within this of the best mean correlation share first place
RELEVANCE_FILE = "relevance.nc"
#: the attributes only a chunk's file has (gather_benchmark drops them)
CHUNK_ATTRS = ("chunk", "chunk_samples", "chunk_batch_size", "chunk_rows", "chunk_runs")
CORRELATION_COLUMNS = ["method", "backend", "mean_pearson", "median_pearson", "mean_spearman", "n_samples",
                       "model", "reference", "q05_pearson", "q25_pearson", "q75_pearson", "q95_pearson",
                       "median_spearman", "deletion_aopc", "faithfulness_relative", "options"]
FAITHFULNESS_COLUMNS = ["method", "backend", "model", "ordering", "deletion_aopc", "faithfulness_relative",
                        "n_samples"]
#: what the paper found (docs/papers.md section 6), shown beside our numbers
PAPER_FINDINGS = (
    ("input_x_gradient", "best with integrated gradients (about 0.8-0.9)"),
    ("integrated_gradients", "best with input x gradient (about 0.8-0.9)"),
    ("lrp.z", "close to input x gradient"),
    ("gradient", "near zero"),
    ("smoothgrad", "near zero"),
    ("lrp.alpha1beta0", "positive contributions only (scored against the positive part)"),
    ("deep_taylor", "positive contributions only (scored against the positive part)"),
)


# ---------------------------------------------------------------------------------------------
# The true function as a network
# ---------------------------------------------------------------------------------------------
def true_response_network(ds: xr.Dataset) -> nn.Sequential:
    """F(X) = (1/D) sum_i C_i(X_i) as Linear -> ReLU -> Linear, float64, exact.

    Each C_i with breakpoints b_1 < ... < b_K and slopes s_0 ... s_K is
    s_0 (relu(x) - relu(-x)) + sum_k (s_k - s_k-1) (relu(x - b_k) - relu(-b_k)),
    i.e. hidden units relu(x_i), relu(-x_i) and relu(x_i - b_k) per cell, and an output bias that
    puts C_i(0) at 0. Every attribution method of the package can then explain F itself."""
    breakpoints = torch.from_numpy(np.asarray(ds["breakpoints"].values, dtype=np.float64))   # [K, D]
    slopes = torch.from_numpy(np.asarray(ds["slopes"].values, dtype=np.float64))             # [K + 1, D]
    n_breaks, cells = breakpoints.shape
    units = n_breaks + 2
    first = nn.Linear(cells, cells * units, dtype=torch.float64)
    second = nn.Linear(cells * units, 1, dtype=torch.float64)
    with torch.no_grad():
        weight = torch.zeros(cells, units, cells, dtype=torch.float64)   # [cell, unit, input]
        bias = torch.zeros(cells, units, dtype=torch.float64)
        out = torch.zeros(cells, units, dtype=torch.float64)
        eye = torch.eye(cells, dtype=torch.float64)
        weight[:, 0], weight[:, 1] = eye, -eye                 # relu(x), relu(-x)
        out[:, 0], out[:, 1] = slopes[0], -slopes[0]
        for k in range(n_breaks):
            weight[:, 2 + k] = eye
            bias[:, 2 + k] = -breakpoints[k]                   # relu(x - b_k)
            out[:, 2 + k] = slopes[k + 1] - slopes[k]
        offset = -((slopes[1:] - slopes[:-1]) * torch.relu(-breakpoints)).sum()
        first.weight.copy_(weight.reshape(cells * units, cells))
        first.bias.copy_(bias.reshape(-1))
        second.weight.copy_(out.reshape(1, -1) / cells)
        second.bias.fill_(float(offset) / cells)
    return nn.Sequential(first, nn.ReLU(), second).eval()


# ---------------------------------------------------------------------------------------------
# Explaining
# ---------------------------------------------------------------------------------------------
def benchmark_samples(ds: xr.Dataset, n_samples: int) -> xr.Dataset:
    """The first n_samples of the data's test split (the split training used)."""
    from xaibench.studies.data import split

    if isinstance(n_samples, bool) or not isinstance(n_samples, int) or n_samples < 1:
        raise InputError(f"n_samples must be a positive integer, got {n_samples!r}")
    test = split(ds)["test"]
    if test.sizes["sample"] == 0:
        raise InputError(f"the data's test split is empty ({ds.sizes['sample']} samples)")
    return test.isel(sample=slice(0, n_samples))


def explain_benchmark(model_dir, data_path, out_path, n_samples: int = 500, methods: Iterable[str] | None = None,
                      backends: Iterable[str] | None = None, true_function: bool = True,
                      log: Callable[[str], None] | None = None, *, batch_size: int | None = None,
                      chunk: Chunk | str | None = None) -> Path:
    """Explain the first n_samples test samples with every (method, backend) pair on the trained
    network (and with native methods on the true function) in float64, and write one netCDF file:
    relevance [explanation, sample, cell] with coordinates method/backend/model/options per
    explanation, the inputs, the exact attribution, the response and each explanation's output.

    Failures follow xaibench.studies.sweep (native_failure="raise"): a native failure raises
    (every score needs it); a backend that cannot run a pair (not installed, cannot mirror the
    network, ...) or fails otherwise is left out and listed in the file's `skipped` attribute.

    batch_size: samples per explanation call (None: all at once); batches change float rounding
    (BLAS picks kernels by batch size) and SmoothGrad's noise.
    chunk: "I/N": only chunk I of N, whole batches of the samples (xaibench.studies.chunks); the
    file then holds those samples and the attributes chunk ("I/N"), chunk_samples (all of them),
    chunk_batch_size, chunk_rows ([start, stop]) and chunk_runs (JSON [[model, method, backend,
    skipped line or ""], ...] in run order); an empty chunk holds only attributes.
    gather_benchmark merges the N files into what one run without chunk writes."""
    from xaibench import api
    from xaibench.studies import sweep
    from xaibench.studies.data import data_hash
    from xaibench.studies.data.groundtruth import attribution
    from xaibench.studies.models.training import load_trained

    say = log or logger.info
    methods = list(METHODS if methods is None else methods)
    backends = list(api.BACKENDS if backends is None else backends)
    chunks.batches(0, batch_size)   # a bad batch_size or chunk fails before any work
    chunk = None if chunk is None else Chunk.parse(chunk)
    model, metadata = load_trained(model_dir)
    if metadata.get("model") != "groundtruth":
        raise InputError(f"{model_dir} holds the {metadata.get('model')} network, not the ground-truth benchmark's")
    data = read_dataset(data_path)
    if generator_name(data) != "xaibench.studies.data.groundtruth.make_groundtruth":
        raise InputError(f"{data_path} is not ground-truth benchmark data (generator "
                         f"{data.attrs.get('generator')!r}); make it with `xaibench data groundtruth`")
    trained_on = (metadata.get("data") or {}).get("hash")
    if trained_on is not None and trained_on != data_hash(data):
        raise InputError(f"{model_dir} was trained on other data than {data_path}; the test split needs the "
                         "training data")
    samples = benchmark_samples(data, n_samples)
    n = samples.sizes["sample"]
    every = chunks.batches(n, batch_size)
    mine, (start, stop) = (every, (0, n)) if chunk is None else (chunk.batches(n, batch_size),
                                                                  chunk.rows(n, batch_size))
    x = torch.from_numpy(np.asarray(samples["sst_anomaly"].values, dtype=np.float64))
    network = model.double().eval()
    runs = [("trained", network, pair) for pair in sweep.pairs(methods, backends)]
    if true_function:
        runs += [("true_function", true_response_network(data), pair) for pair in sweep.pairs(methods, ["native"])]
    common = {"model_dir": str(model_dir), "data": str(data_path), "data_hash": data_hash(data),
              "test_skill_r2": float(((metadata.get("skill") or {}).get("test") or {}).get("skill", np.nan))}
    chunk_attrs = {} if chunk is None else {
        "chunk": str(chunk), "chunk_samples": n, "chunk_batch_size": batch_size or 0, "chunk_rows": [start, stop]}
    if chunk is not None:
        say(f"chunk {chunk}: samples {start}:{stop} of {n} in {len(mine)} of {len(every)} batches")
    if chunk is not None and not mine:
        say(f"chunk {chunk} is empty: {len(every)} batches of {n} samples fill the chunks before it")
        runs_listed = [[name, method, backend, ""] for name, _, (method, backend) in runs]
        return write_dataset(xr.Dataset(attrs={**common, **chunk_attrs, "chunk_runs": json.dumps(runs_listed)}),
                             out_path)
    part = samples.isel(sample=slice(start, stop))
    truth = attribution(samples)[start:stop]

    relevances, rows, skipped, runs_listed = [], [], [], []
    runner = sweep.Sweep(native_failure="raise")
    for model_name, explained_model, (method, backend) in runs:
        options = sweep.options_for(method, backend, OPTIONS.get(method, {}))
        # a pair that depends on the calls before it runs on every batch, as unchunked (chunks.py)
        whole = chunk is not None and chunks.runs_whole(method, backend)
        started = time.perf_counter()
        outcome = runner.run(method, backend, partial(_explain_rows, explained_model, x, method, backend, options,
                                                      every if whole else mine, (start, stop) if whole else None))
        if not outcome.ok:
            prefix = "" if outcome.status == sweep.SKIPPED else f"{outcome.status}: "
            skipped.append(f"{method}/{backend}: {prefix}{outcome.reason}")
            runs_listed.append([model_name, method, backend, skipped[-1]])
            say(f"{outcome.status} {method} on {backend}: {outcome.reason}")
            continue
        runs_listed.append([model_name, method, backend, ""])
        explanation = outcome.explanation
        seconds = time.perf_counter() - started
        relevance = explanation.relevance.detach().double().reshape((stop - start,) + tuple(x.shape[1:])).numpy()
        if not np.all(np.isfinite(relevance)):
            raise FloatingPointError(f"{method} on {backend} ({model_name}) gave NaN or Inf relevance")
        relevances.append(relevance)
        rows.append({"method": method, "backend": backend, "model": model_name,
                     "options": json.dumps(options, sort_keys=True), "seconds": seconds,
                     "output": explanation.output.detach().double().reshape(-1).numpy()})
        say(f"{model_name:13s} {method:22s} {backend:12s} {seconds:6.2f} s")

    explanation_dim = ("explanation",)
    ds = xr.Dataset(
        {
            "relevance": (("explanation", "sample", "cell"), np.stack(relevances),
                          {"long_name": "relevance of each cell for the network's output", "units": "1"}),
            "output": (("explanation", "sample"), np.stack([row["output"] for row in rows]),
                       {"long_name": "the explained output", "units": "1"}),
            "seconds": (explanation_dim, np.array([row["seconds"] for row in rows]),
                        {"long_name": "wall time of the explanation", "units": "s"}),
            "sst_anomaly": part["sst_anomaly"],
            "attribution": (("sample", "cell"), truth,
                            {"long_name": "exact contribution C_i(X_i)/D (ground truth)", "units": "1"}),
            "response": part["response"],
        },
        coords={
            "method": (explanation_dim, [row["method"] for row in rows]),
            "backend": (explanation_dim, [row["backend"] for row in rows]),
            "model": (explanation_dim, [row["model"] for row in rows]),
            "options": (explanation_dim, [row["options"] for row in rows]),
            "sample": part["sample"], "lat": part["lat"], "lon": part["lon"],
            "lat_grid": part["lat_grid"], "lon_grid": part["lon_grid"],
        },
        attrs={"title": "Explanations of the ground-truth benchmark network and of the true function",
               **common, "skipped": json.dumps(skipped), "synthetic": "true",
               "source": data.attrs.get("source", ""), "data_config": data.attrs.get("config", ""),
               **chunk_attrs, **({} if chunk is None else {"chunk_runs": json.dumps(runs_listed)})},
    )
    return write_dataset(ds, out_path)


def _explain_rows(model, x, method, backend, options, spans, rows):
    """The explanation of the samples in `spans` (one call per batch, concatenated), cut to
    `rows` (start, stop) when given (a pair a chunk runs on every batch)."""
    from xaibench import api

    explanation = chunks.explain_in_batches(
        lambda first, last: api.explain(model, x[first:last], method, target=0, backend=backend, dtype=torch.float64,
                                        **options), spans)
    return explanation if rows is None else chunks.take_rows(explanation, *rows)


def gather_benchmark(chunk_files: Iterable, out_path) -> Path:
    """Merge the files of explain_benchmark(..., chunk="I/N"), I = 1..N in any order, into the
    relevance.nc one run without chunk (and the same batch_size) writes: the same arrays and
    attributes bit for bit, except `seconds`, each explanation's wall time, which is the sum over
    the chunks (a time, never the same twice).

    An explanation is kept when every chunk with samples made it; one that any chunk skipped is
    left out and listed in `skipped` with the first such chunk's line (where an unchunked run
    would stop at the same batch with the same error). Refused with ChunkError naming the file:
    a file that is not a chunk, a chunk missing or given twice, chunks of different runs (other
    samples, batches, runs or data), and files that do not fit together."""
    paths = [Path(path) for path in chunk_files]
    files = [read_dataset(path) for path in paths]
    for path, ds in zip(paths, files):
        missing = [key for key in CHUNK_ATTRS if key not in ds.attrs]
        if missing:
            raise ChunkError(f"{path} is not a chunk of `groundtruth explain --chunk I/N` (no attribute "
                             f"{', '.join(missing)})")
    order = chunks.in_order([Chunk.parse(ds.attrs["chunk"]) for ds in files], [str(path) for path in paths])
    paths, files = [paths[i] for i in order], [files[i] for i in order]
    first = files[0]
    runs = [json.loads(ds.attrs["chunk_runs"]) for ds in files]
    for path, ds, listed in zip(paths, files, runs):
        for key in ("chunk_samples", "chunk_batch_size", "data_hash"):
            if ds.attrs[key] != first.attrs[key]:
                raise ChunkError(f"{path} and {paths[0]} are chunks of different runs: their {key} differ "
                                 f"({ds.attrs[key]!r} and {first.attrs[key]!r})")
        if ds.sizes.get("sample", 0) and first.sizes.get("sample", 0):
            differ = [key for key in set(ds.attrs) | set(first.attrs) if key not in (*CHUNK_ATTRS, "skipped")
                      and repr(ds.attrs.get(key)) != repr(first.attrs.get(key))]
            if differ:
                raise ChunkError(f"{path} and {paths[0]} are chunks of different runs: their attributes "
                                 f"{', '.join(sorted(differ))} differ")
        if [run[:3] for run in listed] != [run[:3] for run in runs[0]]:
            raise ChunkError(f"{path} and {paths[0]} are chunks of different runs: they explain other "
                             "methods, backends or models")
        n, batch_size = int(ds.attrs["chunk_samples"]), int(ds.attrs["chunk_batch_size"]) or None
        expected = list(Chunk.parse(ds.attrs["chunk"]).rows(n, batch_size))
        if [int(row) for row in np.atleast_1d(ds.attrs["chunk_rows"])] != expected:
            raise ChunkError(f"{path}: chunk {ds.attrs['chunk']} holds samples {ds.attrs['chunk_rows']}, not "
                             f"{expected} of {n} samples in batches of {batch_size}")
    filled = [(ds, listed) for ds, listed in zip(files, runs) if ds.sizes.get("sample", 0)]
    if not filled:
        raise ChunkError(f"every chunk is empty ({', '.join(map(str, paths))}): there are no samples to gather")

    kept, skipped = [], []
    for position, run in enumerate(runs[0]):
        lines = [listed[position][3] for _, listed in filled if listed[position][3]]
        if lines:
            skipped.append(lines[0])
        else:
            kept.append(tuple(run[:3]))
    parts = []
    for ds, _ in filled:
        index = {key: i for i, key in enumerate(zip(*(ds[name].values.tolist() for name in ("model", "method",
                                                                                             "backend"))))}
        parts.append(ds.isel(explanation=[index[key] for key in kept]))
    seconds = parts[0]["seconds"].copy(data=sum(part["seconds"].values for part in parts))
    try:
        # the files' attributes differ in chunk* and skipped: checked above, set below
        merged = xr.concat([part.drop_vars("seconds").drop_attrs(deep=False) for part in parts], dim="sample",
                           data_vars="minimal",
                           coords="minimal", compat="identical", join="exact", combine_attrs="identical")
    except (ValueError, xr.MergeError) as error:
        raise ChunkError(f"the chunks {', '.join(map(str, paths))} do not fit together: "
                         f"{' '.join(str(error).split())[:400]}") from None
    merged["seconds"] = seconds
    merged = merged[list(filled[0][0].variables)].drop_encoding()   # the unchunked file's order
    merged.attrs = {key: value for key, value in filled[0][0].attrs.items() if key not in CHUNK_ATTRS}
    merged.attrs["skipped"] = json.dumps(skipped)
    return write_dataset(merged, out_path)


# ---------------------------------------------------------------------------------------------
# Scoring
# ---------------------------------------------------------------------------------------------
def _predictor(module: nn.Module) -> Callable[[np.ndarray], np.ndarray]:
    def predict(inputs: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return module(torch.from_numpy(np.ascontiguousarray(inputs, dtype=np.float64))).reshape(-1).numpy()
    return predict


def _quantile(values: np.ndarray, q: float) -> float:
    finite = values[np.isfinite(values)]
    return float(np.quantile(finite, q)) if finite.size else float("nan")


def score_benchmark(relevance_path, model_dir, data_path, out_dir, seed: int = 0) -> pd.DataFrame:
    """Score every explanation in relevance.nc: correlation with the ground truth per sample and
    the deletion score. Writes correlations.csv (one row per explanation and reference),
    per_sample.csv, faithfulness.csv and correlations.md (with the paper's findings beside ours)
    into out_dir; returns the correlation table."""
    from xaibench import metrics
    from xaibench.studies.models.training import load_trained

    relevance_file = read_dataset(relevance_path)
    model, metadata = load_trained(model_dir)
    data = read_dataset(data_path)
    from xaibench.studies.data import data_hash

    if data_hash(data) != relevance_file.attrs.get("data_hash"):
        raise InputError(f"{relevance_path} was made from other data than {data_path}")
    predictors = {"trained": _predictor(model.double().eval()),
                  "true_function": _predictor(true_response_network(data))}
    inputs = relevance_file["sst_anomaly"].values.astype(np.float64)
    truth = relevance_file["attribution"].values.astype(np.float64)
    positive_truth = np.maximum(truth, 0.0)
    n = inputs.shape[0]

    references = {}   # (model) -> {"ground_truth": aopc per sample, "random": ...}
    for model_name in sorted(set(relevance_file["model"].values.tolist())):
        predict = predictors[model_name]
        scale = float(np.std(predict(inputs))) or 1.0
        random_order = np.random.default_rng(seed).standard_normal(truth.shape)
        references[model_name] = {
            "scale": scale,
            "ground_truth": metrics.deletion_score(metrics.deletion_curve(predict, inputs, truth)) / scale,
            "random": metrics.deletion_score(metrics.deletion_curve(predict, inputs, random_order)) / scale,
        }

    def relative(aopc, model_name):
        ref = references[model_name]
        low, high = np.mean(ref["random"]), np.mean(ref["ground_truth"])
        return float((np.mean(aopc) - low) / (high - low)) if high != low else float("nan")

    rows, per_sample, faithfulness = [], [], []
    for model_name, ref in references.items():
        for ordering in ("ground_truth", "random"):
            faithfulness.append({"method": ordering, "backend": "reference", "model": model_name, "ordering": ordering,
                                 "deletion_aopc": float(np.mean(ref[ordering])),
                                 "faithfulness_relative": relative(ref[ordering], model_name), "n_samples": n})
    for index in range(relevance_file.sizes["explanation"]):
        entry = relevance_file.isel(explanation=index)
        method, backend, model_name = (str(entry[key].values) for key in ("method", "backend", "model"))
        relevance = entry["relevance"].values.astype(np.float64)
        aopc = metrics.deletion_score(metrics.deletion_curve(predictors[model_name], inputs, relevance)) \
            / references[model_name]["scale"]
        faithful = relative(aopc, model_name)
        faithfulness.append({"method": method, "backend": backend, "model": model_name, "ordering": "relevance",
                             "deletion_aopc": float(np.mean(aopc)), "faithfulness_relative": faithful,
                             "n_samples": n})
        targets = [("ground_truth", truth)] + ([("positive_part", positive_truth)] if method in POSITIVE_ONLY else [])
        for reference, target in targets:
            pearson = metrics.pearson(relevance, target)
            spearman = metrics.spearman(relevance, target)
            rows.append({"method": method, "backend": backend, "mean_pearson": float(np.nanmean(pearson)),
                         "median_pearson": float(np.nanmedian(pearson)), "mean_spearman": float(np.nanmean(spearman)),
                         "n_samples": int(np.isfinite(pearson).sum()), "model": model_name, "reference": reference,
                         **{f"q{int(q * 100):02d}_pearson": _quantile(pearson, q) for q in (0.05, 0.25, 0.75, 0.95)},
                         "median_spearman": float(np.nanmedian(spearman)), "deletion_aopc": float(np.mean(aopc)),
                         "faithfulness_relative": faithful, "options": str(entry["options"].values)})
            per_sample.append(pd.DataFrame({"method": method, "backend": backend, "model": model_name,
                                            "reference": reference, "sample": relevance_file["sample"].values,
                                            "pearson": pearson, "spearman": spearman, "deletion_aopc": aopc}))
    table = pd.DataFrame(rows, columns=CORRELATION_COLUMNS)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_csv(table, out / "correlations.csv")
    write_csv(pd.concat(per_sample, ignore_index=True), out / "per_sample.csv")
    write_csv(pd.DataFrame(faithfulness, columns=FAITHFULNESS_COLUMNS), out / "faithfulness.csv")
    write_text(out / "correlations.md", correlations_markdown(table, pd.DataFrame(faithfulness), relevance_file,
                                                               metadata))
    return table


def _best(table: pd.DataFrame, method: str, reference: str = "ground_truth") -> pd.Series | None:
    rows = table[(table["method"] == method) & (table["model"] == "trained") & (table["reference"] == reference)]
    return None if rows.empty else rows.sort_values("mean_pearson", ascending=False).iloc[0]


def paper_comparison(table: pd.DataFrame, test_r2: float) -> list[str]:
    """Lines that put each of the paper's findings beside what this run measured."""
    trained = table[(table["model"] == "trained") & (table["reference"] == "ground_truth")]
    ranking = (trained.groupby("method")["mean_pearson"].max().sort_values(ascending=False))
    lines = ["| method | the paper | this run (best backend, mean Pearson vs ground truth) | rank here |",
             "|---|---|---|---|"]
    for method, finding in PAPER_FINDINGS:
        row = _best(table, method)
        if row is None:
            lines.append(f"| `{method}` | {finding} | not run | - |")
            continue
        text = f"{row['mean_pearson']:.2f} ({row['backend']})"
        if method in POSITIVE_ONLY:
            positive = _best(table, method, "positive_part")
            if positive is not None:
                text += f"; vs the positive part {positive['mean_pearson']:.2f}"
        rank = int(list(ranking.index).index(method)) + 1
        lines.append(f"| `{method}` | {finding} | {text} | {rank} of {len(ranking)} |")
    lines.append("")
    order = ", ".join(f"`{method}` {value:.2f}" for method, value in ranking.items())
    lines.append(f"Ranking here (best backend per method): {order}.")
    lines.append("")
    notes = []
    # five methods can tie within sampling noise: compare groups, not places
    top = [method for method, value in ranking.items() if value >= ranking.iloc[0] - TOP_GROUP_WIDTH]
    expected = [method for method in ("input_x_gradient", "integrated_gradients", "lrp.z") if method in ranking]
    outside = [method for method in expected if method not in top]
    if outside:
        notes.append(f"Unlike the paper, {', '.join(outside)} {'is' if len(outside) == 1 else 'are'} not in the top "
                     f"group (within {TOP_GROUP_WIDTH} of the best: {', '.join(top)}).")
    else:
        notes.append(f"As in the paper, {', '.join(expected)} are in the top group (within {TOP_GROUP_WIDTH} of "
                     f"the best mean correlation: {', '.join(top)}).")
    near_zero = [method for method in ("gradient", "smoothgrad") if method in ranking]
    if near_zero:
        values = ", ".join(f"{method} {ranking[method]:.2f}" for method in near_zero)
        verdict = "as in the paper" if all(abs(ranking[m]) < 0.2 for m in near_zero) else "unlike the paper"
        notes.append(f"The gradient maps are near zero ({values}), {verdict}: a gradient is a sensitivity, not a "
                     "contribution.")
    if np.isfinite(test_r2) and test_r2 < 0.99:
        notes.append(f"The network's test R^2 is {test_r2:.3f}, below the paper's ~0.99 (900k samples x 50 "
                     "epochs): a network that fits F less well can only be explained less well against F's truth, "
                     "so expect somewhat lower correlations than the paper's.")
    true_rows = table[(table["model"] == "true_function") & (table["reference"] == "ground_truth")]
    true_ixg = true_rows[true_rows["method"] == "input_x_gradient"]["mean_pearson"]
    if not true_ixg.empty and "input_x_gradient" in ranking:
        trained_value, true_value = ranking["input_x_gradient"], float(true_ixg.iloc[0])
        relation = "better than" if trained_value > true_value else "no better than"
        notes.append(f"Input x gradient of the trained network ({trained_value:.2f}) does {relation} that of the true "
                     f"function itself ({true_value:.2f}): on F, C_i'(X_i) X_i equals C_i(X_i) only on the pieces "
                     "through 0, while integrated gradients and occlusion are exact there ("
                     + ", ".join(f"{row.method} {row.mean_pearson:.3f}" for row in true_rows.itertuples()
                                 if row.method in ("integrated_gradients", "occlusion")) + ").")
    notes.append("The input correlation comes from 50 Pacific winters of HadISST (450 cells on 5 degrees, "
                 "shrunk toward the identity), not from 70 years of monthly global COBE-SST2 (458 cells); how "
                 "much that changes the scores is not measured here (strongly correlated inputs make cells "
                 "interchangeable to the network, which lowers every method's correlation with the truth).")
    return lines + [" ".join(notes)]


def correlations_markdown(table: pd.DataFrame, faithfulness: pd.DataFrame, relevance_file: xr.Dataset,
                          metadata: dict) -> str:
    test_r2 = float(relevance_file.attrs.get("test_skill_r2", np.nan))
    config = relevance_file.attrs.get("data_config", "")
    n = int(relevance_file.sizes["sample"])
    show = ["method", "backend", "reference", "mean_pearson", "median_pearson", "q05_pearson", "q95_pearson",
            "mean_spearman", "faithfulness_relative"]
    parts = [
        "# Ground-truth attribution benchmark (after Mamalakis, Ebert-Uphoff and Barnes 2022)",
        "",
        f"All data are synthetic: inputs drawn from N(0, S) with S the (shrunk) correlation matrix of the real "
        f"HadISST winter sample shipped with eofs; an additive piecewise-linear response with exact attributions. "
        f"Data: `{config}`. The network (512-256-128-64-32-16-1, ReLU) reaches test R^2 = {test_r2:.4f}. "
        f"Scores over the first {n} test samples; Pearson and Spearman per sample over the cells; "
        "`faithfulness_relative`: the deletion score (AOPC) scaled so that a random ordering of the cells gives 0 "
        "and the ground truth's ordering gives 1.",
        "",
        "## The paper's findings and this run",
        "",
        *paper_comparison(table, test_r2),
        "",
        "## Trained network",
        "",
        table[table["model"] == "trained"][show].to_markdown(index=False, floatfmt=".3f"),
        "",
        "## The true function itself (each method's ceiling)",
        "",
        table[table["model"] == "true_function"][show].to_markdown(index=False, floatfmt=".3f")
        if (table["model"] == "true_function").any() else "(not run)",
        "",
    ]
    skipped = json.loads(relevance_file.attrs.get("skipped", "[]"))
    if skipped:
        parts += ["## Skipped", "", *[f"- {line}" for line in skipped], ""]
    return "\n".join(parts)
