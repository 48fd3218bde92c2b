"""The cross-library agreement census: every method on every backend against the native engine.

For each method a backend has (zennit, innvestigate; xaibench/backends/table.py) and each model
of a fixed, seeded set (a few random dense and conv nets, and the benchmark's reference
networks at a small size with random weights), the census explains the same inputs and targets
on the backend and on the native engine and records, per model and bias setting:

- conservation_residual_max / _median: over samples, |sum(R) - output| / |output| of that
  backend's map (LRP-type methods; NaN for gradient, input x gradient, integrated gradients and
  SmoothGrad, which have no conservation property);
- ledger_closure_max (native rows): the worst sample of the native ledger's closure,
  |sum R + absorbed - output| / max(|output|, sum|R|): where the output went that is not in the map;
- max_relative_difference / median_relative_difference: over samples, max|R_b - R_native| /
  sum|R_native| (the project's agreement metric, xaibench.metrics.agreement_per_sample).

Columns of agreement.csv: method, backend, reference (the native method compared with), model,
bias, n_samples, dtype (the backend's float type), conservation_residual_max/_median,
ledger_closure_max, max_relative_difference/median_relative_difference, status (ok /
skipped: reason / error: message) and note (how a row was compared, and "known:" reasons).

bias=true runs the model as built and the methods with bias=True; bias=false runs a copy of the
model with every bias set to zero (and bias=False), so that methods whose bias handling differs
between libraries, or that have no bias option at all (deep_taylor, innvestigate's presets),
are compared on the same function. The census is where the known defects of docs/papers.md section 7
show as numbers.

Choices, and why:
- float64 everywhere it runs, so differences measure methods, not rounding. innvestigate falls
  back to float32 where TensorFlow has no float64 kernel (3D pooling on CPU); the dtype column
  says so, and its differences then include float32 rounding (~1e-7).
- stabilizer = 1e-12: the native engine and zennit add stabilizer * sign(z) to every
  denominator, innvestigate divides by z unchanged except where z == 0 (safe_divide); a
  stabilizer far below any z makes the two the same formula.
- Explicit bounds for z^B (low/high = the input domain, the same scalars for every backend):
  innvestigate bakes one pair per batch into its analyzer, zennit and native default to
  per-sample min/max. Every input sample is rescaled to span exactly that domain, so batch-wide
  and per-sample ranges coincide (innvestigate's SmoothGrad noise scale is batch-wide, the
  native one per sample).
- deep_taylor and deep_taylor.bounded exist only in innvestigate; they are compared with the
  nearest native method (table.NEAREST_NATIVE: lrp.zplus, lrp.zbox), and the reference column
  says so. innvestigate's deep Taylor uses w^2 on layers not followed by a ReLU (the output
  layer), so a difference is expected there.
- integrated gradients: a left Riemann sum from a zero baseline on both backends (points
  k/steps, k = 0..steps-1: the only rule innvestigate has; native rule="riemann_left").
- SmoothGrad is compared statistically, not sample by sample: TensorFlow and torch draw
  different noise, so two maps agree only up to the Monte Carlo error. Both run with many
  noisy copies; the note gives the Monte Carlo floor, the difference between two native runs
  with different seeds and the same number of copies. A difference of the same order as the
  floor is agreement. innvestigate 2.1.2's SmoothGrad ignores its noise scale (the noise has
  standard deviation 1); the note gives the difference to a native run with that noise too.
- The note column gives the documented reasons a backend cannot agree on that model
  (table.known_differences, each pinned in tests/test_innvestigate_agreement.py), prefixed "known:";
  "zennit gradient fallback: <paths and types>" where zennit has no rule for a module or a
  functional step and uses the plain gradient there (the Explanation's gradient_fallback,
  xaibench/backends/zennit_backend.py; fallback_note); and "no native reference: <error>" where
  the native engine cannot explain the model (the backend's own measures are still filled in,
  the differences stay NaN).
- A backend that is not installed, or cannot mirror a model (ExportError), gives rows with
  status "skipped: reason"; any other failure gives "error: message". lxt (LXT 2.1) explains
  torchvision's VisionTransformer only: its rows here are skipped (UnsupportedLayerError, before
  lxt is imported); its rows on a ViT are in the zoo (zoo.py, architecture "vit"). Nothing crashes the census:
  every row runs under xaibench.studies.sweep's policy with native_failure="record".

    xaibench census --out results/census [--quick]
"""

from __future__ import annotations

import copy
import math
import statistics
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch

from xaibench.backends import table
from xaibench.backends.zennit_backend import FALLBACK, FALLBACK_LISTED, fallback_note  # noqa: F401 - the census notes
from xaibench.errors import ExportError
from xaibench.io import write_csv, write_text
from xaibench.metrics import agreement_per_sample
from xaibench.progress import Progress
from xaibench.studies import sweep
from xaibench.studies.networks import (  # noqa: F401 - the census's names for the shared networks
    CENSUS_MODELS,
    RADAR_SIZE,
    CensusModel,
    bias_free_copy,
    census_seed,
)
from xaibench.studies.networks import census_inputs as inputs
from xaibench.studies.networks import census_model as build
from xaibench.studies.networks import randomize_he as randomize  # noqa: F401

COLUMNS = ["method", "backend", "reference", "model", "bias", "n_samples", "dtype",
           "conservation_residual_max", "conservation_residual_median", "ledger_closure_max",
           "max_relative_difference", "median_relative_difference", "status", "note"]
STABILIZER = 1e-12
EPSILON = 0.1
ALPHA_BETA = {"alpha": 3.0, "beta": 2.0}   # lrp.alpha_beta: a pair no named preset covers
STATUS_LIMIT = 300   # characters of a skip or error reason in the status column


@dataclass(frozen=True)
class Settings:
    """How large a census run is."""

    models: tuple[str, ...]
    n_samples: int
    smoothgrad_samples: int
    integrated_gradients_steps: int


# --- the models ------------------------------------------------------------------------------
# The models, their seeded weights and inputs live with the other test networks
# (xaibench/studies/networks.py: CENSUS_MODELS, census_model, census_inputs); imported above
# under the census's names (MODELS, build, inputs, randomize, bias_free_copy).
MODELS = CENSUS_MODELS

#: the quick set: a minute or two on two cores. innvestigate builds each analyzer graph once per model
#: (0.1-1 s on small nets, 2-20 s on the convection CNN and the deeper radar nets), so the deeper
#: reference networks are in the full census only.
QUICK = Settings(models=("dense", "conv2d", "conv_transposed", "residual", "unet_skips", "enso", "radar1"),
                 n_samples=4, smoothgrad_samples=64, integrated_gradients_steps=32)
DEFAULT = Settings(models=tuple(MODELS), n_samples=16, smoothgrad_samples=512, integrated_gradients_steps=64)


# --- what is compared ------------------------------------------------------------------------
def pairs(backends: Iterable[str] | None = None, methods: Iterable[str] | None = None) -> list[tuple[str, str, str]]:
    """(method, backend, reference) triples: every method a non-native backend has (sweep.pairs;
    default: every backend of sweep.backends()), and a native row for every native method one of
    them is compared with."""
    known = sweep.backends()
    backends = list(known if backends is None else backends)
    chosen = list(table.METHODS) if methods is None else list(dict.fromkeys(methods))
    others = [b for b in backends if b != "native"]
    compared = [(method, backend, table.NEAREST_NATIVE.get(method, method))
                for method, backend in sweep.pairs(chosen, others) if method != "occlusion"]
    native = sorted({reference for _, _, reference in compared})
    rows = [(m, "native", m) for m in native] if "native" in backends else []
    rows += compared
    order = {m.name: i for i, m in enumerate(table.METHODS.values())}
    return sorted(rows, key=lambda r: (order.get(r[0], 999), known.index(r[1]) if r[1] in known else 9))


def method_options(method: str, backend: str, bias: bool, domain: tuple[float, float], settings: Settings,
                   seed: int = 0) -> dict:
    """The options of one explanation, the same on every backend except those only the native
    engine honours (sweep.options_for: SmoothGrad's noise level and seed, which innvestigate 2.1.2
    ignores; see smoothgrad_note)."""
    entry = table.METHODS[method]
    options: dict = {}
    if method.startswith("lrp."):
        options.update(stabilizer=STABILIZER, bias=bias)
    if "epsilon" in entry.options:
        options["epsilon"] = EPSILON
    if method == "lrp.alpha_beta":
        options.update(ALPHA_BETA)
    if "low" in entry.options:
        options["low"], options["high"] = domain
    if method == "integrated_gradients":
        options.update(steps=settings.integrated_gradients_steps, baseline="zeros", rule="riemann_left")
    if method == "smoothgrad":
        options.update(samples=settings.smoothgrad_samples, noise_level=0.1, seed=seed)
    return sweep.options_for(method, backend, options)


# --- notes -----------------------------------------------------------------------------------
NO_NATIVE = "no native reference"
# --- measures --------------------------------------------------------------------------------
def _per_sample(values: torch.Tensor) -> torch.Tensor:
    return values.reshape(values.shape[0], -1)


def conservation_residual(relevance: torch.Tensor, output: torch.Tensor) -> torch.Tensor:
    """|sum(R) - output| / |output| per sample."""
    total = _per_sample(relevance.double()).sum(1)
    output = output.double().reshape(-1)
    return (total - output).abs() / output.abs().clamp(min=torch.finfo(torch.float64).tiny)


def relative_difference(relevance: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """max|R - R_ref| / sum|R_ref| per sample (zero where both maps are zero)."""
    return agreement_per_sample(relevance, reference, 1)


def _stats(values: torch.Tensor) -> tuple[float, float]:
    """(max, median) over samples."""
    numbers = [float(v) for v in values.reshape(-1)]
    return max(numbers), statistics.median(numbers)


# --- the census ------------------------------------------------------------------------------
class CensusRun:
    """One census run: caches native explanations; its sweep (native_failure="record": every
    failure is a row) remembers unavailable backends."""

    def __init__(self, settings: Settings, seed: int, log, progress: Progress | None = None):
        import xaibench

        self.xaibench = xaibench
        self.settings = settings
        self.seed = seed
        self.log = log
        self.progress = progress
        self.sweep = sweep.Sweep(native_failure="record")

    def model_rows(self, spec: CensusModel, triples) -> list[dict]:
        model = build(spec, self.seed)
        x = inputs(spec, self.settings.n_samples, self.seed)
        rows = []
        for bias in (True, False):
            variant = model if bias else bias_free_copy(model)
            with torch.no_grad():
                output = variant(x)
            target = spec.target if spec.target is not None else output.reshape(len(x), -1).argmax(1)
            native: dict[str, object] = {}
            done = {}
            for triple in triples:
                method, backend, reference = triple
                started = time.perf_counter()
                row = done[triple] = self.row(spec, variant, x, target, bias, method, backend, reference, native)
                counted = self.progress.step() if self.progress else ""
                self.log(f"{counted} {spec.name:16s} bias={str(bias):5s} {method:26s} {backend:12s} "
                         f"diff {row['max_relative_difference']:9.2e} cons {row['conservation_residual_max']:9.2e}"
                         f"  {time.perf_counter() - started:5.2f} s  {row['status']}")
            rows += [done[triple] for triple in triples]
        return rows

    def native(self, cache, variant, x, target, method, options):
        """The native explanation, computed once per options; a failure is remembered and raised again."""
        key = (method, tuple(sorted((k, str(v)) for k, v in options.items())))
        if key not in cache:
            try:
                cache[key] = self.xaibench.explain(variant, x, method, target=target, **options)
            except Exception as error:
                cache[key] = error
        if isinstance(cache[key], Exception):
            raise cache[key]
        return cache[key]

    def row(self, spec, variant, x, target, bias, method, backend, reference, cache) -> dict:
        row = {"method": method, "backend": backend, "reference": reference, "model": spec.name, "bias": bias,
               "n_samples": len(x), "dtype": "float64", "conservation_residual_max": math.nan,
               "conservation_residual_median": math.nan, "ledger_closure_max": math.nan,
               "max_relative_difference": math.nan, "median_relative_difference": math.nan,
               "status": "ok", "note": ""}
        notes = []   # stays empty for a backend found unavailable before (compare is not called)
        outcome = self.sweep.run(method, backend, lambda: self.compare(spec, variant, x, target, bias, method,
                                                                       backend, reference, cache, row, notes))
        if not outcome.ok:
            row["status"] = f"{outcome.status}: {outcome.reason[:STATUS_LIMIT]}"
        row["note"] = "; ".join(notes)
        return row

    def compare(self, spec, variant, x, target, bias, method, backend, reference, cache, row, notes):
        """Fill the row's measures and notes (in place: what a failure leaves is kept); the explanation."""
        if reference != method:
            notes.append(f"{method} exists only in {backend}; compared with the nearest native method {reference}")
        reference_options = method_options(reference, "native", bias, spec.domain, self.settings, self.seed)
        options = method_options(method, backend, bias, spec.domain, self.settings, self.seed)
        if backend == "native":
            explanation = expected = self.native(cache, variant, x, target, reference, reference_options)
            if explanation.conservation_error is not None:
                row["ledger_closure_max"] = float(explanation.relative_conservation_error.max())
                if not table.METHODS[method].lrp:
                    notes.append("ledger_closure_max: the completeness residual of the Riemann sum, "
                                 "|sum R - (f(x) - f(baseline))| relative")
        else:
            try:
                expected = self.native(cache, variant, x, target, reference, reference_options)
            except Exception as error:   # the backend's own numbers are still measured (its native row says why)
                expected = None
                notes.append(f"{NO_NATIVE}: {sweep.one_line(error, STATUS_LIMIT)}")
            explanation, dtype_note = self.explain_on(backend, variant, x, target, method, options)
            row["dtype"] = "float32" if dtype_note else "float64"
            notes += [dtype_note] if dtype_note else []
            fallback = getattr(explanation, "gradient_fallback", None)
            if fallback:
                notes.append(fallback_note(fallback))
            if expected is not None:
                per_sample = relative_difference(explanation.relevance, expected.relevance)
                row["max_relative_difference"], row["median_relative_difference"] = _stats(per_sample)
            if method == "smoothgrad" and expected is not None:
                notes.append(self.smoothgrad_note(cache, variant, x, target, reference_options, spec.domain,
                                                  explanation, row["max_relative_difference"]))
        if table.METHODS[method].lrp:
            residual = conservation_residual(explanation.relevance, explanation.output)
            row["conservation_residual_max"], row["conservation_residual_median"] = _stats(residual)
        else:
            notes.append("not a conservation method: no residual")
        if backend != "native":
            notes += [f"known: {reason}" for reason in table.known_differences(backend, method, options, variant)]
        return explanation

    def explain_on(self, backend, variant, x, target, method, options):
        """The backend's explanation in float64, or in float32 where TensorFlow has no float64 kernel."""
        try:
            return self.xaibench.explain(variant, x, method, target=target, backend=backend, **options), ""
        except ExportError as error:
            if backend != "innvestigate" or "float64" not in str(error):
                raise
        explanation = self.xaibench.explain(copy.deepcopy(variant).float(), x.float(), method, target=target,
                                            backend=backend, **options)
        return explanation, "innvestigate ran in float32 (TensorFlow has no float64 3D pooling on CPU)"

    def smoothgrad_floor(self, cache, variant, x, target, options):
        """The Monte Carlo floor: max over samples of the difference between two native runs
        with different seeds and the same number of noisy copies; and the first run."""
        first = self.native(cache, variant, x, target, "smoothgrad", options)
        other = self.native(cache, variant, x, target, "smoothgrad", {**options, "seed": options["seed"] + 1})
        return _stats(relative_difference(other.relevance, first.relevance))[0], first

    def smoothgrad_note(self, cache, variant, x, target, options, domain, explanation, difference) -> str:
        floor, _ = self.smoothgrad_floor(cache, variant, x, target, options)
        note = (f"statistical comparison ({options['samples']} noisy copies, different random noise): Monte Carlo "
                f"floor {floor:.2e} (two native runs, seeds {options['seed']} and {options['seed'] + 1}); "
                f"difference / floor = {difference / floor:.2f}")
        if explanation.backend == "innvestigate":
            # innvestigate 2.1.2 builds its noise layer as AddGaussianNoise() without the noise scale:
            # the noise has standard deviation 1 whatever is asked. The control: native with std 1.
            control_options = {**options, "noise_level": 1.0 / (domain[1] - domain[0])}
            control_floor, control = self.smoothgrad_floor(cache, variant, x, target, control_options)
            control_difference = _stats(relative_difference(explanation.relevance, control.relevance))[0]
            note += (f"; known: innvestigate 2.1.2's SmoothGrad ignores noise_scale (its AddGaussianNoise layer "
                     f"keeps stddev 1.0): against native with noise std 1.0 the difference is "
                     f"{control_difference:.2e}, floor {control_floor:.2e}, "
                     f"ratio {control_difference / control_floor:.2f}")
        return note


def checked_backends(backends: Iterable[str] | None) -> list[str]:
    """The backends asked for (None: every one of sweep.backends()); an unknown one is a ValueError."""
    known = sweep.backends()
    chosen = list(known if backends is None else backends)
    bad = [b for b in chosen if b not in known]
    if bad:
        raise ValueError(f"unknown backend(s) {bad}; backends: {', '.join(known)}")
    return chosen


def run_census(out_dir: str | Path | None = "results/census", quick: bool = True, seed: int = 0,
               settings: Settings | None = None, backends: Iterable[str] | None = None,
               methods: Iterable[str] | None = None, log: Callable[[str], None] | None = print) -> pd.DataFrame:
    """Run the census; write agreement.csv and agreement.md to out_dir (if given); return the table."""
    log = log or (lambda message: None)
    settings = settings or (QUICK if quick else DEFAULT)
    unknown = [m for m in settings.models if m not in MODELS]
    if unknown:
        raise ValueError(f"unknown census model(s) {unknown}; models: {', '.join(MODELS)}")
    backends = checked_backends(backends)
    triples = pairs(backends, methods)
    run = CensusRun(settings, seed, log, Progress(len(settings.models) * 2 * len(triples)))
    started = time.perf_counter()
    rows = []
    for name in settings.models:
        spec = MODELS[name]
        log(f"{name}: {spec.description}, {settings.n_samples} samples")
        rows += run.model_rows(spec, triples)
    census = pd.DataFrame(rows, columns=COLUMNS)
    log(f"census took {time.perf_counter() - started:.1f} s")
    if out_dir is not None:
        write_tables(census, out_dir, settings)
    return census


# --- tables ----------------------------------------------------------------------------------
def headline(census: pd.DataFrame) -> pd.DataFrame:
    """Per method and backend: the worst difference to native and the worst conservation residual
    over models, with and without biases (ok rows only), and how many models were compared."""
    records = []
    for (method, backend, reference), part in census.groupby(["method", "backend", "reference"], sort=False):
        ok = part[part["status"] == "ok"]
        record = {"method": method, "backend": backend, "reference": reference}
        for bias, label in ((True, "bias"), (False, "no_bias")):
            chosen = ok[ok["bias"] == bias]
            record[f"max_relative_difference_{label}"] = _worst(chosen["max_relative_difference"])
            record[f"conservation_residual_{label}"] = _worst(chosen["conservation_residual_max"])
        record["ledger_closure"] = _worst(ok["ledger_closure_max"])
        record["models_ok"] = f"{ok['model'].nunique()}/{part['model'].nunique()}"
        known = ok["note"].fillna("").str.contains("known:", regex=False)
        record["known_difference"] = f"{int(known.sum())}/{len(ok)} rows" if backend != "native" else ""
        records.append(record)
    return pd.DataFrame.from_records(records)


def _worst(values: pd.Series) -> float:
    values = values.dropna()
    return float(values.max()) if len(values) else math.nan


def write_tables(census: pd.DataFrame, out_dir: str | Path, settings: Settings | None = None):
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_csv(census, out / "agreement.csv")
    models = ", ".join(f"{name} ({MODELS[name].description})" for name in dict.fromkeys(census["model"])
                       if name in MODELS)
    size = "" if settings is None else (
        f" SmoothGrad: {settings.smoothgrad_samples} noisy copies; integrated gradients: "
        f"{settings.integrated_gradients_steps} steps.")
    skipped = census[census["status"].str.startswith("skipped")]
    errors = census[census["status"].str.startswith("error")]
    text = [
        "# Cross-library agreement census",
        "",
        "Computed by `xaibench census`; random weights and inputs from fixed seeds, no data involved. "
        f"Models: {models}.{size}",
        "",
        "Difference: max over samples of max|R_backend - R_native| / sum|R_native| (per sample). "
        "Conservation residual: max over samples of |sum(R) - output| / |output| of the backend's own map "
        "(with biases it includes what biases and epsilon absorb: a rule's property, not an error); "
        "ledger closure (native): the worst sample of |sum R + absorbed - output| / max(|output|, sum|R|). "
        "no_bias: a copy of the model with every bias set to zero. float64 throughout, stabilizer 1e-12 "
        "(innvestigate divides by z unchanged except where z == 0; a stabilizer far below every z makes "
        "the libraries' formulas the same); z^B with explicit bounds (the input domain). "
        "SmoothGrad is compared statistically: see the note of its rows for the Monte Carlo floor.",
        "",
        "known_difference: rows whose note names a documented reason the backend cannot agree "
        "(xaibench.backends.table.known_differences, pinned in tests/test_innvestigate_agreement.py; "
        "innvestigate's SmoothGrad noise scale: this census).",
        "",
        "## Headline (worst over models)",
        "",
        headline(census).to_markdown(index=False, floatfmt=".2e"),
        "",
        f"Rows skipped: {len(skipped)} (a backend not installed, or a model it cannot mirror); "
        f"rows with errors: {len(errors)}.",
        "",
        "## All rows",
        "",
        census.to_markdown(index=False, floatfmt=".2e"),
        "",
    ]
    write_text(out / "agreement.md", "\n".join(text))
