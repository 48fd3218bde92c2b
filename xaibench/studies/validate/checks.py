"""`xaibench validate`: check a researcher's own PyTorch model and its explanations before a
relevance map made from them is published.

    report = validate("my_package.models:build_cnn", weights="cnn.safetensors", inputs="test.nc")
    print(report.table()); report.write("validation/")

For each method (default: DEFAULT_METHODS) the native explanation is the reference, and three
checks each get a value, a stated tolerance and PASS / FAIL / SKIPPED (with the reason):

1. conservation (LRP methods): the ledger closes, i.e. sum(relevance) + sum(absorbed) = output,
   as Explanation.relative_conservation_error, the worst sample. With bias=True part of the
   output is absorbed by biases and stabilizers and never reaches the input; the ledger books
   it, so the check is on the closure, not on sum(relevance) == output. The absorbed fraction
   is reported beside it (INFO) so the researcher sees how much of the output the map lacks.
2. agreement[B] for every other backend B in api.BACKENDS that has the method: the worst sample
   of max|R_B - R_native| / sum|R_native|. A backend that is not installed, cannot mirror the
   model (ExportError) or has no rule for one of its layers is SKIPPED, not failed. A
   disagreement the method table documents as the other library's defect (e.g. innvestigate's
   alpha-beta with biases, issue 116) is KNOWN, with the reason, only where the table's control
   earns it: the same comparison with the documented cause removed (e.g. bias=False on both
   sides), or the native engine recomputing what the other library computes (e.g. w^2 against
   native bias=False), must agree within the agreement tolerance; its value is in the detail.
   A control that disagrees too means the documented cause does not explain the difference (a
   bug of the export, the layout or the backend): FAIL.
3. randomization[top k] (Adebayo et al. 2018, "Sanity checks for saliency maps"): the top k
   parameterized layers of a deep copy of the model are re-initialized (their own
   reset_parameters(), seeded), cascading from the top layer down, and the same output is
   explained again. The worst sample's Spearman rank correlation of |relevance| between the
   original and the randomized model must stay below the threshold: a map that does not change
   when the weights that produce the output are replaced does not show what the model learned.
   Some modified-backpropagation rules (z+, alpha1-beta0) are known to be nearly insensitive
   to the top layers (Sixt et al. 2020); this check is where that shows.

Precision: dtype="auto" runs every explanation in float64 when the model runs in float64 (a
copy of it, converted), so that differences measure methods, not rounding; float32 otherwise.
The conservation tolerance depends on it (DEFAULT_TOLERANCES): 1e-10 (float64) or 1e-5
(float32) relative, as the project's conservation tests. Agreement is 1e-4 relative to sum|R| in
both: libraries differ in details that do not matter for a map (where a stabilizer's sign flips,
float32 inside TensorFlow: measured 1e-6 and below), while a different formula or a layer a
library does not see shows at 1e-3 and above. Randomization: Spearman < 0.9 in both.

The user's model is never modified: every explanation runs on deep copies. Loading a weights
file never runs code from it (safetensors, or torch.load(weights_only=True)).

Several inputs: a model whose forward takes several tensors (forward(self, sst, wind)) is
validated on a tuple of inputs, one per forward argument in order (variable=["sst", "wind"]
from one netCDF file, or one file or array per input; inputs.read_input_set). Every
explanation is then a tuple of relevance maps with one ledger across them, and the checks
read them so:
- conservation: over all inputs together (sum over every input's relevance + absorbed = output);
- agreement[B] and randomization: the value is computed over the concatenation of all inputs'
  flattened relevance per sample (max|R_B - R_native| over all inputs / sum|R_native| over all
  inputs; Spearman over all inputs' |R| together: a map that moves relevance from one variable
  to another has changed), and each input's own value is in the row's detail;
- a method or backend that explains only one input tensor (integrated gradients, SmoothGrad,
  occlusion; zennit, innvestigate, captum today) is SKIPPED with its reason: its reference row,
  or its agreement row. It never fails the verdict and never passes silently.
The relevance files then hold one data variable per input, relevance_<input name> (Report.write).

Several outputs: a model returning a tuple or dict is explained for the output chosen with
output= (an index or key; CLI --output); without it the error lists the choices. The
randomization cascade then re-initializes only the layers the chosen output depends on.

Bad input (a file that is missing, a factory that does not exist, weights or inputs that do
not fit the model, NaN/Inf in the inputs) raises InputError before any check runs; the CLI
turns it into one line and exit status 2. Errors of one explanation become report rows: the
explanations run under xaibench.studies.sweep's policy (native_failure="record"); a native
failure of any kind is an ERROR row, another backend's SKIPPABLE error a SKIPPED one.

Progress: each explanation announces itself on stderr ("[3/35] lrp.epsilon: randomization layer
2/5"), rewritten in place, only when stderr is a terminal: never on stdout, never in a log file.

    checks.py   validate() and the checks (conservation, agreement, randomization)
    inputs.py   reading the model, its weights and the inputs; the precision
    report.py   CheckResult, Report, the terminal summary and the verdict files
    page.py     verdict.html
"""

from __future__ import annotations

import copy
import io
import math
import os
from functools import partial

import torch
from torch import nn

from xaibench import targets as targets_module
from xaibench.backends import table as method_table
from xaibench.errors import InputError, OneInputOnlyError
from xaibench.metrics import agreement_per_sample, randomization, spearman_per_sample
from xaibench.metrics.randomization import randomized_copy
from xaibench.progress import TerminalProgress
from xaibench.studies import sweep
from xaibench.studies.sweep import one_line
from xaibench.studies.validate.inputs import (
    apply_weights,
    build_model,
    choose_dtype,
    fit_input_set,
    fit_inputs,
    forward,
    load_weights,
    read_input_set,
    resolve_output,
)
from xaibench.studies.validate.report import ERROR, FAIL, INFO, KNOWN, PASS, SKIPPED, CheckResult, Report

DEFAULT_METHODS = ("lrp.epsilon", "lrp.zplus", "lrp.alpha1beta0", "gradient", "input_x_gradient")

#: per dtype: conservation and agreement are relative errors (<=), randomization is the
#: Spearman rank correlation that must stay below (<) the threshold
DEFAULT_TOLERANCES = {
    torch.float64: {"conservation": 1e-10, "agreement": 1e-4, "randomization": 0.9},
    torch.float32: {"conservation": 1e-5, "agreement": 1e-4, "randomization": 0.9},
}


def validate(model_or_factory, *, weights=None, inputs, variable=None,
             methods=DEFAULT_METHODS, target=None, tolerances: dict | None = None, dtype="auto",
             seed: int = 0, cascade: int | None = None, samples: int | None = None, backends=None,
             factory_kwargs: dict | None = None, method_options: dict | None = None, out=None,
             output=None, metrics: bool | list[str] = False) -> Report:
    """Run the checks of `xaibench validate` (see the module docstring) and return the Report.

    model_or_factory: an nn.Module (never modified), a factory called with factory_kwargs, or
    'module:factory'. weights: a .safetensors/.pt/.pth state dict (loaded strictly into a copy).
    inputs: a netCDF path, an xarray Dataset/DataArray or an array; first dimension = sample.
    variable: the data variable to read (None: the only one). A model with several inputs:
    a list of variables (one per forward argument, in order) and/or a tuple of inputs, one per
    argument (see inputs.read_input_set). output: for a model returning a tuple or dict, the
    output explained (an index or key; '1' is taken as the index 1 of a tuple). methods:
    canonical method names (the native backend must have each). target: as in
    xaibench.explain (None: argmax). tolerances: overrides of DEFAULT_TOLERANCES[dtype]
    (keys conservation, agreement, randomization). cascade: how many layers to re-initialize
    from the top (None: all). samples: use only the first N samples. backends: the backends
    compared with native (None: every other one in api.BACKENDS). method_options: per method,
    options passed to explain (e.g. {"lrp.epsilon": {"epsilon": 0.01}}). out: also write the
    verdict files there (Report.write). metrics: also measure the evaluation metrics of each
    method's native map (True: every one; a list: those names), as skill scores against a random
    map (quality.py; Report.metrics, metrics.csv). They are measurements, not verdicts.
    """
    from xaibench import api
    # the cheap checks of the arguments first, then loading (which may take a while)
    methods = [methods] if isinstance(methods, str) else list(methods)
    native = set(api.methods("native"))
    unknown = [m for m in methods if m not in native]
    if not methods or unknown:
        raise InputError(f"unknown method(s) {', '.join(unknown) or '(none given)'}; the native backend "
                         f"(the reference) has: {', '.join(sorted(native))}")
    method_options = dict(method_options or {})
    others = [b for b in api.BACKENDS if b != "native"]
    if backends is not None:
        backends = [backends] if isinstance(backends, str) else list(backends)
        wrong = [b for b in backends if b not in others]
        if wrong:
            raise InputError(f"unknown backend(s) {', '.join(wrong)} to compare with native; "
                             f"choose from {', '.join(others) or 'none'}")
        others = backends
    unknown = [key for key in (tolerances or {}) if key not in DEFAULT_TOLERANCES[torch.float64]]
    if unknown:
        raise InputError(f"unknown tolerance(s) {', '.join(unknown)}; known: "
                         f"{', '.join(DEFAULT_TOLERANCES[torch.float64])}")

    if isinstance(metrics, str):   # one name
        metrics = [metrics]
    if metrics and metrics is not True:
        from xaibench.metrics.evaluation import metrics as registered

        wrong = [name for name in metrics if name not in registered()]
        if wrong:
            raise InputError(f"unknown evaluation metric(s) {', '.join(wrong)}; metrics: {', '.join(registered())}")

    model, model_name = build_model(model_or_factory, factory_kwargs)
    # everything below runs on copies: the user's weights, hooks and train/eval mode stay as they are
    try:
        working = copy.deepcopy(model)
    except Exception as error:
        raise InputError(f"the model cannot be deep-copied ({one_line(error)}); validate needs copies "
                         "so that it never modifies the model") from None
    if weights is not None:
        apply_weights(working, load_weights(weights), weights)
    arrays, several = read_input_set(inputs, variable, samples)
    if several:
        x, notes = fit_input_set(working, arrays, output)
        input_note = "; ".join(f"{a.name}: {note}" for a, note in zip(arrays, notes) if note)
    else:
        x, input_note = fit_inputs(working, arrays[0], output)
    with torch.no_grad():
        output_value, output = resolve_output(forward(copy.deepcopy(working).eval(), x), output)

    chosen, dtype_note = choose_dtype(working, x, dtype, output)
    limits = dict(DEFAULT_TOLERANCES[chosen])
    for key, value in (tolerances or {}).items():
        if not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
            raise InputError(f"tolerance {key} must be a finite number >= 0, got {value!r}")
        limits[key] = float(value)

    # the target must fit the output before anything is explained (one clear error, exit 2)
    targets_module.resolve(output_value, target)

    layers = parameterized_layers(working, x, output)
    top_down = layers[::-1][: (len(layers) if cascade is None else max(0, cascade))]
    labels = [f"{path} ({type(working.get_submodule(path)).__name__})" for path in top_down]
    randomized_models = {}  # level -> model, built once and shared by all methods

    def randomized(level):
        if level not in randomized_models:
            randomized_models[level] = randomized_copy(working, top_down[:level], seed)
        return randomized_models[level]

    if several:
        shown = inputs if isinstance(inputs, (tuple, list)) else (inputs,)
        described = [str(i) if isinstance(i, (str, os.PathLike)) else type(i).__name__ for i in shown]
        fields = {"inputs": described[0] if len(described) == 1 else described,
                  "variable": [str(a.name) for a in arrays], "samples": int(x[0].shape[0]),
                  "input_dims": [list(map(str, a.dims)) for a in arrays],
                  "model_input_shape": [list(t.shape[1:]) for t in x]}
    else:
        fields = {"inputs": str(inputs) if isinstance(inputs, (str, os.PathLike)) else type(inputs).__name__,
                  "variable": str(arrays[0].name), "samples": int(x.shape[0]),
                  "input_dims": list(map(str, arrays[0].dims)), "model_input_shape": list(x.shape[1:])}
    if output is not None:
        fields["output"] = output
    settings = {
        "model": model_name, "weights": None if weights is None else str(weights), **fields,
        "input_note": input_note, "dtype": str(chosen).replace("torch.", ""), "dtype_note": dtype_note,
        "target": target if target is None or isinstance(target, int) else "per sample",
        "methods": methods, "tolerances": limits, "seed": seed, "layers_top_down": top_down,
        "backends": others, "xaibench_version": _version(),
    }
    report = Report([], settings, inputs=tuple(arrays) if several else arrays[0])
    runner = sweep.Sweep(native_failure="record")   # one sweep: an unavailable backend is asked once
    per_method = 1 + len(others) + max(len(labels), 1)
    progress = TerminalProgress(len(methods) * per_method + bool(metrics))
    try:
        for index, method in enumerate(methods):
            report.checks.extend(_check_method(api, runner, working, x, method, target, chosen, limits,
                                               method_options.get(method, {}), others, labels, randomized,
                                               report, output, progress))
            progress.done = (index + 1) * per_method   # a method that stopped early skips its steps
        if metrics:
            from xaibench.studies.validate.quality import quality_rows

            progress.step("evaluation metrics")
            names = None if metrics is True else list(metrics)
            report.metrics = quality_rows(working, x, report.explanations, chosen, seed, method_options, output,
                                          names)
    finally:
        progress.close()
    if out is not None:
        report.write(out)
    return report


def _version():
    from xaibench import __version__
    return __version__


def _first_sample(relevance):
    """The first sample of a relevance map (or of each of a tuple of maps), detached, on the CPU."""
    if isinstance(relevance, tuple):
        return tuple(_first_sample(r) for r in relevance)
    return relevance.detach()[:1].cpu()


def _check_method(api, runner, model, x, method, target, dtype, limits, options, backends, layers, randomized,
                  report, output=None, progress=None):
    rows = []
    progress = progress or TerminalProgress(0, stream=io.StringIO())   # not a terminal: silent
    several = isinstance(x, tuple)
    names = [str(a.name) for a in report.inputs] if several else []

    def row(check, status, value=None, tolerance=None, comparison="", detail=""):
        rows.append(CheckResult(method, check, status, None if value is None else float(value),
                                tolerance, comparison, detail))

    def run(backend, explain):
        """runner.run, where an explanation that takes one input tensor only is SKIPPED for
        several inputs (with the library's own reason), not an error."""
        one_input_only = []

        def attempt():
            try:
                return explain()
            except OneInputOnlyError as error:
                if several:
                    one_input_only.append(error)
                raise
        outcome = runner.run(method, backend, attempt)
        if one_input_only:
            return sweep.Outcome(method, backend, sweep.SKIPPED,
                                 reason=f"cannot explain {len(x)} inputs: {one_line(one_input_only[0])}")
        return outcome

    progress.step(f"{method}: native explanation")
    outcome = run("native", lambda: api.explain(model, x, method, target=target, dtype=dtype, output=output,
                                                **options))
    if outcome.status == sweep.SKIPPED and several:
        row("reference", SKIPPED, detail=f"skipped: {method} {outcome.reason}")
        return rows
    if not outcome.ok:   # no reference (skippable or not): nothing of this method can be validated
        row("reference", ERROR, detail=f"the native explanation failed: {outcome.reason}")
        return rows
    reference = outcome.explanation
    report.explanations[method] = reference
    sample_dims = reference.output.dim()
    over = f" over all {len(x)} inputs ({', '.join(names)}) together" if several else ""

    # 1. conservation: the ledger closes (relevance + absorbed = output), worst sample
    # (no ledger, no check: integrated gradients carries its completeness residual, a property of
    # the Riemann sum, as conservation_error, but has no ledger to close)
    relative = reference.relative_conservation_error
    if relative is None or reference.ledger is None:
        row("conservation", SKIPPED, detail=f"{method} is not an LRP method: no conservation property")
    else:
        value = float(relative.max())
        row("conservation", PASS if value <= limits["conservation"] else FAIL, value, limits["conservation"], "<=",
            "max over samples of |sum R + absorbed - output| / max(|output|, sum|R|)"
            + (f", sum R{over}" if several else ""))
        row("absorbed", INFO, *_absorbed(reference))

    # 2. agreement with every other backend that has the method
    for backend in backends:
        check = f"agreement[{backend}]"
        progress.step(f"{method}: agreement with {backend}")
        available, reason = _backend_methods(backend)
        if available is None:
            row(check, SKIPPED, detail=f"skipped: {reason}")
            continue
        if method not in available:
            row(check, SKIPPED, detail=f"skipped: {backend} has no {method}")
            continue
        outcome = run(backend, partial(api.explain, model, x, method, target=reference.target, backend=backend,
                                       dtype=dtype, output=output, **options))
        if outcome.status == sweep.SKIPPED:
            row(check, SKIPPED, detail=f"skipped: {outcome.reason}")
            continue
        if not outcome.ok:
            row(check, ERROR, detail=f"{backend} failed: {outcome.reason}")
            continue
        other = outcome.explanation
        if _shapes(other.relevance) != _shapes(reference.relevance):
            row(check, FAIL, math.inf, limits["agreement"], "<=",
                f"relevance shape {_shapes(other.relevance)} vs native {_shapes(reference.relevance)}")
            continue
        report.backend_relevance[(method, backend)] = _first_sample(other.relevance)   # for verdict.html
        value = _worst(agreement_per_sample(*_joined(other.relevance, reference.relevance, sample_dims), 1))
        detail = f"max over samples of max|R_{backend} - R_native| / sum|R_native|{over}"
        if several:
            detail += "; per input: " + ", ".join(
                f"{name} {_worst(agreement_per_sample(a, b, sample_dims)):.3g}"
                for name, a, b in zip(names, other.relevance, reference.relevance))
        known = method_table.documented_differences(backend, method, options, model)
        if value > limits["agreement"] and known:
            status, detail = _documented_or_failed(api, backend, known, model, x, method, options, reference, other,
                                                   dtype, limits["agreement"], output)
            row(check, status, value, limits["agreement"], "<=", detail)
            continue
        fallback = getattr(other, "gradient_fallback", None)
        if value > limits["agreement"] and fallback:
            from xaibench.backends.zennit_backend import fallback_kinds, fallback_note

            detail += (f"; {backend} takes the plain gradient at {len(fallback)} place(s) ({fallback_kinds(fallback)})"
                       f" where it has no {method} rule: its map is not {method}; {fallback_note(fallback)}")
        row(check, PASS if value <= limits["agreement"] else FAIL, value, limits["agreement"], "<=", detail)

    # 3. model randomization, cascading from the top layer down; the same outputs are explained
    if not layers:
        row("randomization", SKIPPED, detail="skipped: the model has no parameterized layers")
        return rows
    for level in range(1, len(layers) + 1):
        check = f"randomization[top {level}]"
        progress.step(f"{method}: randomization layer {level}/{len(layers)}")
        layer_names = ", ".join(layers[:level])
        outcome = run("native", partial(api.explain, randomized(level), x, method, target=reference.target,
                                        dtype=dtype, output=output, **options))
        if not outcome.ok:
            row(check, ERROR, detail=f"re-initialized {layer_names}; explaining failed: {outcome.reason}")
            continue
        after = outcome.explanation
        correlation = spearman_per_sample(*_joined(reference.relevance, after.relevance, sample_dims), 1)
        value = float(correlation.max())
        detail = (f"re-initialized {layer_names}; max over samples of Spearman(|R|, |R_randomized|){over} "
                  f"(mean {float(correlation.mean()):.3g})")
        if several:
            detail += "; per input: " + ", ".join(
                f"{name} {float(spearman_per_sample(a, b, sample_dims).max()):.3g}"
                for name, a, b in zip(names, reference.relevance, after.relevance))
        row(check, PASS if value < limits["randomization"] else FAIL, value, limits["randomization"], "<", detail)
    return rows


def _shapes(relevance):
    """The relevance's shape, or the shapes of a tuple of relevance maps."""
    return tuple(tuple(r.shape) for r in relevance) if isinstance(relevance, tuple) else tuple(relevance.shape)


def _joined(a, b, sample_dims: int):
    """Two relevance maps (tensors, or tuples of one tensor per input) as [rows, features]
    tensors: each input flattened per row (sample, or sample and target) and the inputs
    concatenated, so a metric with sample_dims=1 reads all inputs together."""
    def flat(relevance):
        parts = relevance if isinstance(relevance, tuple) else (relevance,)
        rows = int(math.prod(parts[0].shape[:sample_dims]))
        return torch.cat([r.detach().reshape(rows, -1).to(torch.float64) for r in parts], 1)
    return flat(a), flat(b)


def _worst(per_sample: torch.Tensor) -> float:
    """The worst sample's agreement value; inf if any is not finite."""
    return float(per_sample.max()) if bool(torch.isfinite(per_sample).all()) else math.inf


def _documented_or_failed(api, backend, differences, model, x, method, options, reference, other, dtype,
                          tolerance, output=None):
    """A disagreement for which the method table documents a cause is KNOWN only if the table's
    control (the same comparison with every documented cause removed, or the native engine
    recomputing what the other library computes) agrees within the tolerance; otherwise the
    documented cause does not explain it (a bug of the export, the layout or a backend): FAIL.
    Returns (status, detail)."""
    reasons = "; ".join(d.reason for d in differences)
    controls = " + ".join(d.control.text for d in differences)
    try:
        native_side, other_side = method_table.control(differences, method, options, model, x)
        # the same outputs as the measured comparison, whatever the control model's argmax
        native = api.explain(native_side.model, x, native_side.method, target=reference.target, dtype=dtype,
                             output=output, **native_side.options)
        other_control = other if other_side is None else api.explain(
            other_side.model, x, other_side.method, target=reference.target, backend=backend, dtype=dtype,
            output=output, **other_side.options)
        value = _worst(agreement_per_sample(*_joined(other_control.relevance, native.relevance,
                                                     reference.output.dim()), 1))
    except Exception as error:
        return FAIL, (f"the documented cause is unverified: its control [{controls}] failed: {one_line(error)} "
                      f"(documented: {reasons})")
    if value <= tolerance:
        return KNOWN, f"known difference: {reasons}; control [{controls}] agrees: {value:.3g} <= {tolerance:.3g}"
    return FAIL, (f"the documented cause does not explain the difference: control [{controls}] still differs by "
                  f"{value:.3g} > {tolerance:.3g} (documented: {reasons})")


def _absorbed(explanation):
    """The share of the explained output that never reaches the input, per sample:
    absorbed / |output| (positive: held back by biases/stabilizers; negative: added by them)."""
    output = explanation.output.detach().double()
    scale = output.abs().clamp(min=torch.finfo(torch.float64).tiny)
    kinds = {"bias": "absorbed_bias", "stabilizer": "absorbed_stabilizer", "dropped": "absorbed_dropped",
             "constant": "absorbed_constant"}
    shares = {}
    for label, attribute in kinds.items():
        total = sum((getattr(r, attribute).detach().double() for r in explanation.ledger), torch.zeros_like(output))
        shares[label] = (total / scale).reshape(-1)
    total_share = sum(shares.values())
    parts = ", ".join(f"{label} {float(v.median()):.3g}" for label, v in shares.items() if bool((v != 0).any()))
    detail = (f"median over samples of absorbed / |output| ({parts or 'nothing absorbed'}); range "
              f"[{float(total_share.min()):.3g}, {float(total_share.max()):.3g}]: this share of the output is "
              "not in the map")
    return float(total_share.median()), None, "", detail


def parameterized_layers(model: nn.Module, x, output=None) -> list[str]:
    """Paths of the modules that own parameters, in the order of their last call (the last is the
    top layer; xaibench.metrics.randomization.parameterized_layers). output: for a model with
    several outputs, the one explained; only the layers it depends on are listed."""
    select = None if output is None else (lambda result: resolve_output(result, output)[0])
    return randomization.parameterized_layers(model, x, select)


def _backend_methods(backend: str):
    """The backend's method names, or the reason it cannot say (not installed here, ...)."""
    from xaibench import api
    try:
        return set(api.methods(backend)), ""
    except sweep.SKIPPABLE as error:
        return None, one_line(error)
    except ValueError as error:  # listed in BACKENDS but not (yet) in the methods table
        return None, one_line(error)
