"""The report of `xaibench validate`: one CheckResult per (method, check) with its verdict, the
Report that holds them (the terminal summary, the JSON form) and the verdict files it writes
(verdict.csv, verdict.json, verdict.html, relevance_<method>.nc).

The terminal shows a summary (Report.table): one row per method and check with its worst value,
the tolerance and the verdict. The cascading randomization, one row per re-initialized layer in
verdict.csv, is one row per method there (SummaryRow: the worst level's value, and the layer at
which the map first changes enough, or that it never does); skipped checks are grouped by their
reason under the table. verdict.csv and verdict.json keep every row (verdict.json adds the
summary's rows under "summary"); verdict.html (page.py) shows the summary, the maps, the
randomization curve and the ledger per layer without Python.

relevance_<method>.nc holds the native (reference) relevance with the input's dimensions and
coordinates: the data variable `relevance` for a model with one input; for a model with several
inputs one data variable per input, relevance_<input name> (e.g. relevance_sst, relevance_wind),
each with that input's dimensions, coordinates and the attributes of the one-input case. Beside
them: `output` (the explained output per sample) and `target` (its flat index), once."""

from __future__ import annotations

import csv
import io
import math
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from xaibench.errors import InputError
from xaibench.io import atomic_path, write_json, write_text

PASS, FAIL, SKIPPED, ERROR, INFO = "PASS", "FAIL", "SKIPPED", "ERROR", "INFO"
KNOWN = "KNOWN"   # a documented disagreement whose control confirms the cause: no verdict
_FAILING = (FAIL, ERROR)


@dataclass
class CheckResult:
    method: str
    check: str            # conservation, absorbed, agreement[zennit], randomization[top 1], reference
    status: str           # PASS, FAIL, SKIPPED, ERROR (counts as a failure) or INFO (no verdict)
    value: float | None = None
    tolerance: float | None = None
    comparison: str = ""  # how value is held against tolerance: "<=" or "<"
    detail: str = ""      # what was measured, or why skipped / what went wrong


@dataclass
class SummaryRow:
    """One row of the summary: a check of verdict.csv, or for the cascading randomization all its
    levels of one method (levels > 1), named "randomization" and shown by the worst level's value
    and tolerance; its detail names the level and layer at which the map first changes enough.
    status: FAIL if any level fails, ERROR if one could not be explained, else PASS."""
    method: str
    check: str
    status: str
    value: float | None = None
    tolerance: float | None = None
    comparison: str = ""
    detail: str = ""      # short: what to read from the row (the full text is in verdict.csv)
    rows: int = 1         # how many rows of verdict.csv it stands for
    #: randomization: the number of levels, and the first level (1 = the top layer alone) and
    #: layer at which the map changes enough (value below the tolerance); None: never
    levels: int | None = None
    first_below_level: int | None = None
    first_below_layer: str | None = None


@dataclass
class Report:
    checks: list[CheckResult]
    settings: dict
    #: method -> the native (reference) explanation; not serialized to JSON
    explanations: dict = field(default_factory=dict, repr=False)
    #: (method, backend) -> the other backend's relevance of the first sample (batch of one; a
    #: tuple for several inputs), for verdict.html; not serialized to JSON
    backend_relevance: dict = field(default_factory=dict, repr=False)
    #: the inputs as read (xarray.DataArray, sample first; a tuple of them for a model with several)
    inputs: object = field(default=None, repr=False)
    #: validate --metrics: one dict per method x evaluation metric (quality.py); no verdict
    metrics: list = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not any(c.status in _FAILING for c in self.checks)

    @property
    def exit_code(self) -> int:
        return 0 if self.passed else 1

    def failures(self) -> list[CheckResult]:
        return [c for c in self.checks if c.status in _FAILING]

    def to_dict(self) -> dict:
        def clean(value):  # JSON has no NaN/Inf
            return None if isinstance(value, float) and not math.isfinite(value) else value

        return {
            "verdict": PASS if self.passed else FAIL,
            "exit_code": self.exit_code,
            "settings": self.settings,
            "checks": [{k: clean(v) for k, v in asdict(c).items()} for c in self.checks],
            "metrics": [{k: clean(v) for k, v in row.items()} for row in self.metrics],
            "summary": [{k: clean(v) for k, v in asdict(row).items()} for row in self.summary()],
        }

    def summary(self) -> list[SummaryRow]:
        """One row per method and check, the randomization levels of a method folded into one
        (in the order of self.checks)."""
        return summarize(self.checks, self.settings.get("layers_top_down") or [])

    def header(self) -> list[str]:
        """What was validated: model, weights, inputs, precision, target, seed."""
        s = self.settings
        if isinstance(self.inputs, tuple):
            shapes = ", ".join(f"{name} {shape}" for name, shape in zip(s["variable"], s["model_input_shape"]))
            model_input = f"model inputs {shapes}"
        else:
            model_input = f"model input {s['model_input_shape']}"
        return [f"xaibench validate: {s['model']}"
                + (f" with weights {s['weights']}" if s.get("weights") else ""),
                f"  inputs {s['inputs']} ({s['samples']} samples, {model_input}"
                f"{', ' + s['input_note'] if s.get('input_note') else ''})"
                + (f"; output {s['output']!r} explained" if s.get("output") is not None else ""),
                f"  precision {s['dtype']}{' (' + s['dtype_note'] + ')' if s.get('dtype_note') else ''};"
                f" target {'argmax of each output' if s['target'] is None else s['target']};"
                f" randomization seed {s['seed']}"]

    def table(self, full: bool = False) -> str:
        """The summary for a terminal: one row per method and check (the randomization cascade one
        row per method), the skipped checks grouped by reason, the verdict and notes. full=True:
        every row of verdict.csv with its whole detail instead."""
        lines = self.header()
        if not full:
            lines.append("  one row per method and check: the worst sample's value (randomization: the level most "
                         "similar to the original map), the tolerance and the verdict; every row in verdict.csv")
        lines.append("")
        header = ("method", "check", "value", "tolerance", "status")
        if full:
            shown = [(c, c.detail) for c in self.checks]
            skipped = []
        else:
            summary = self.summary()
            shown = [(row, row.detail) for row in summary if row.status != SKIPPED]
            skipped = skipped_lines(summary, self.settings.get("methods") or [])
        rows = [(c.method, c.check, _number(c.value),
                 f"{c.comparison} {_number(c.tolerance)}" if c.tolerance is not None else "-", c.status)
                for c, _ in shown]
        widths = [max(len(str(r[i])) for r in rows + [header]) for i in range(len(header))]

        def line(cells, detail=""):
            text = "  ".join(f"{cell:<{w}}" for cell, w in zip(cells, widths))
            return (text + "  " + detail).rstrip()

        lines.append(line(header, "detail"))
        lines.append(line(["-" * w for w in widths], "------"))
        for row, (_, detail) in zip(rows, shown):
            lines.append(line(row, detail))
        if skipped:
            lines += ["skipped (reasons in full in verdict.csv):", *skipped]
        lines.append("")
        failures = self.failures()
        judged = sum(c.status in (PASS, FAIL, ERROR) for c in self.checks)
        if full:
            counts = (f"{judged - len(failures)} checks passed" if not failures
                      else f"{len(failures)} of {judged} checks failed")
        else:   # the summary's rows; each randomization level counted as verdict.csv does, beside
            rows_judged = [row for row in summary if row.status in (PASS, FAIL, ERROR)]
            rows_failed = sum(row.status in _FAILING for row in rows_judged)
            counts = (f"{len(rows_judged)} checks passed" if not failures
                      else f"{rows_failed} of {len(rows_judged)} checks failed")
            if judged != len(rows_judged):
                counts += (f"; each randomization level counted: {judged - len(failures)} passed" if not failures
                           else f"; each randomization level counted: {len(failures)} of {judged}")
        lines.append(f"verdict: {PASS if not failures else FAIL} ({counts})")
        lines += [f"  {note}" for note in self.notes()]
        if self.metrics:
            lines += ["", *self.metrics_table()]
        return "\n".join(lines)

    def notes(self) -> list[str]:
        """What a failed randomization means for the map, per method whose map hardly changes."""
        notes = []
        for method in sorted({c.method for c in self.checks if c.check.startswith("randomization")
                              and c.status == FAIL}):
            first = next(c for c in self.checks if c.method == method and c.check.startswith("randomization")
                         and c.status == FAIL)
            layers = first.detail.split(";")[0].removeprefix("re-initialized ")
            notes.append(
                f"{method}: the relevance hardly changes when the top layer(s) {layers} are re-initialized "
                f"(Spearman {_number(first.value)}, not below {_number(first.tolerance)}). This map does not "
                "show what those weights learned; do not read it as evidence of what the model uses for "
                "this output (Adebayo et al. 2018).")
        return notes

    def metrics_table(self) -> list[str]:
        """validate --metrics: skill score per metric (rows, by category) and method (columns), 1
        the metric's optimum, 0 a uniform random map; measurements, not verdicts."""
        methods = list(dict.fromkeys(row["method"] for row in self.metrics))
        names = list(dict.fromkeys((row["metric"], row.get("category", "")) for row in self.metrics if row["metric"]))
        skill = {(row["method"], row["metric"]): row.get("skill_score") for row in self.metrics}
        width = max([len(f"{category}/{name}") for name, category in names] + [6])
        columns = [max(len(method), 8) for method in methods]
        lines = ["evaluation metrics: skill score against a uniform random map (1 optimum, 0 random, below 0 "
                 "worse; not a verdict; values in metrics.csv, definitions in docs/metrics/)",
                 "  " + " " * width + "  " + "  ".join(f"{method:>{w}}" for method, w in zip(methods, columns))]
        no_optimum = []
        for name, category in names:
            rows = [row for row in self.metrics if row["metric"] == name]
            if all(not _finite(row.get("value")) for row in rows):
                continue   # not computed for any method: the notes below say why
            if not _finite(rows[0].get("optimum")):
                no_optimum.append(name)
                continue
            cells = [_number(skill.get((method, name))) if _finite(skill.get((method, name))) else "-"
                     for method in methods]
            lines.append(f"  {category + '/' + name:<{width}}  " + "  ".join(f"{cell:>{w}}"
                                                                            for cell, w in zip(cells, columns)))
        if no_optimum:
            lines.append(f"  no optimum, so no skill score (values in metrics.csv): {', '.join(no_optimum)}")
        if any(" - " in f" {line} " for line in lines[2:]):
            lines.append("  -: the random map already scores the optimum here, so the skill is undefined")
        notes = sorted({row["note"] for row in self.metrics if row.get("note")})
        lines += [f"  not computed: {note}" for note in notes]
        return lines

    def write(self, out_dir) -> list[Path]:
        """verdict.csv, verdict.html, relevance_<method>.nc per method and verdict.json (last: its
        presence means the set is complete), each written to a temporary file and renamed into place."""
        out = Path(out_dir)
        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise InputError(f"cannot create the output folder {out}: {error.strerror or error}") from None
        written = []
        for method, explanation in self.explanations.items():
            dataset = self.relevance_dataset(method, explanation)
            path = out / f"relevance_{method}.nc"
            with atomic_path(path) as temporary:   # plain netCDF: the researcher's file, no attribute encoding
                dataset.to_netcdf(temporary, engine="h5netcdf")
            written.append(path)
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=list(CheckResult.__dataclass_fields__), lineterminator="\n")
        writer.writeheader()
        for check in self.checks:
            writer.writerow(asdict(check))
        write_text(out / "verdict.csv", buffer.getvalue())
        from xaibench.studies.validate.page import verdict_html

        write_text(out / "verdict.html", verdict_html(self))
        written.append(out / "verdict.html")
        if self.metrics:
            columns = list(dict.fromkeys(key for row in self.metrics for key in row))
            buffer = io.StringIO()
            writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
            writer.writeheader()
            writer.writerows(self.metrics)
            write_text(out / "metrics.csv", buffer.getvalue())
            written.append(out / "metrics.csv")
        write_json(out / "verdict.json", self.to_dict(), indent=2)
        return written + [out / "verdict.csv", out / "verdict.json"]

    def relevance_dataset(self, method: str, explanation):
        """The reference relevance with the input's dimensions and coordinates: `relevance`, or
        one relevance_<input name> per input for a model with several inputs."""
        import xarray as xr

        several = isinstance(self.inputs, tuple)
        arrays = self.inputs if several else (self.inputs,)
        maps = explanation.relevance if several else (explanation.relevance,)
        output = explanation.output.detach().cpu().numpy()
        variables, output_dims, taken = {}, None, {}
        for array, relevance in zip(arrays, maps):
            data, dims = self._relevance_array(method, array, relevance.detach().cpu().numpy())
            output_dims = output_dims or dims
            if several:   # a dimension another input has with another size or coordinate gets the input's name
                renames = {}
                for dim in data.dims[1:]:
                    size, values = data.sizes[dim], data[dim].values if dim in data.coords else None
                    held = taken.setdefault(dim, (size, values))
                    if held[0] != size or (held[1] is not None and values is not None
                                           and not np.array_equal(held[1], values)):
                        renames[dim] = f"{dim}_{array.name}"
                data = data.rename(renames) if renames else data
            variables[f"relevance_{array.name}" if several else "relevance"] = data
        variables["output"] = xr.DataArray(output, dims=output_dims,
                                           attrs={"long_name": "explained output value (softmax stripped)"})
        target = explanation.target
        if torch.is_tensor(target) and target.dtype != torch.bool and tuple(target.shape) == output.shape:
            variables["target"] = xr.DataArray(target.cpu().numpy(), dims=output_dims,
                                               attrs={"long_name": "flat index of the explained output"})
        dataset = xr.Dataset(variables)
        dataset.attrs = {"title": f"xaibench validate: {method} relevance",
                         "model": str(self.settings.get("model")),
                         "weights": str(self.settings.get("weights")),
                         "inputs": str(self.settings.get("inputs")),
                         "dtype": str(self.settings.get("dtype"))}
        if self.settings.get("output") is not None:
            dataset.attrs["explained_output"] = str(self.settings["output"])
        return dataset

    @staticmethod
    def _relevance_array(method: str, array, relevance):
        """One input's relevance as a DataArray with the input's dimensions and coordinates, and
        the dimensions of the output per sample."""
        import xarray as xr

        if relevance.size == array.size:
            # the model's shape may have an added channel axis or be flattened: back to the file's
            data = xr.DataArray(relevance.reshape(array.shape), dims=array.dims, coords=array.coords)
            output_dims = (array.dims[0],)
        else:  # several targets per sample: [sample, target, ...]
            data = xr.DataArray(relevance.reshape((array.shape[0], -1) + array.shape[1:]),
                                dims=(array.dims[0], "target") + array.dims[1:], coords=array.coords)
            output_dims = (array.dims[0], "target")
        # no CF `units`: they are those of the model's output (per unit of input for a gradient),
        # which the model does not declare
        data.attrs = {
            "long_name": f"relevance of the explained output ({method}, native backend)",
            "comment": "in units of the explained output" if method != "gradient"
            else "in units of the explained output per unit of input",
            "method": method,
            "explained_variable": str(array.name),
        }
        return data, output_dims


def _finite(value) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def _number(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float) and math.isnan(value):
        return "nan"
    return f"{value:.3g}"


# --- the summary ------------------------------------------------------------------------------
#: the longest skip reason the terminal summary shows (the whole text is in verdict.csv)
SHORT = 160


def summarize(checks: list[CheckResult], layers_top_down=()) -> list[SummaryRow]:
    """The summary's rows: each check of `checks` as it is (with a short detail), except the
    randomization levels of a method, folded into one row (randomization_row)."""
    rows, levels = [], {}
    for check in checks:
        if check.check.startswith("randomization[top "):
            if check.method not in levels:
                levels[check.method] = []
                rows.append(levels[check.method])   # a placeholder, in the order of the first level
            levels[check.method].append(check)
        else:
            rows.append(SummaryRow(check.method, check.check, check.status, check.value, check.tolerance,
                                   check.comparison, _short_detail(check)))
    return [randomization_row(row, list(layers_top_down)) if isinstance(row, list) else row for row in rows]


def randomization_row(levels: list[CheckResult], layers_top_down: list[str]) -> SummaryRow:
    """One method's cascade as one row: the worst level (highest similarity; a NaN first), the
    first level whose value is below the tolerance and its layer, and how many levels fail."""
    def badness(check):
        if check.value is None:
            return -math.inf
        return math.inf if math.isnan(check.value) else check.value

    worst = max(levels, key=badness)   # max keeps the first of equals: the topmost level
    statuses = [c.status for c in levels]
    status = FAIL if FAIL in statuses else ERROR if ERROR in statuses else PASS
    first = next((k for k, c in enumerate(levels, 1) if c.status == PASS), None)
    layer = layers_top_down[first - 1] if first is not None and first <= len(layers_top_down) else None
    tolerance = _number(worst.tolerance)
    failing, errors = sum(s in _FAILING for s in statuses), statuses.count(ERROR)
    if first is not None:
        detail = f"first below {tolerance} at top {first}: {_layer_label(levels[first - 1], layer)}"
        detail += (f"; below at all {len(levels)} levels" if not failing
                   else f"; {failing} of {len(levels)} levels fail")
    else:
        deepest = layers_top_down[len(levels) - 1] if len(levels) <= len(layers_top_down) else None
        detail = (f"never below {tolerance}, not even with {len(levels)} layer(s) re-initialized"
                  + (f" (down to {_layer_label(levels[-1], deepest)})" if deepest else ""))
    if errors:
        detail += f"; {errors} level(s) could not be explained"
    return SummaryRow(worst.method, "randomization", status, worst.value, worst.tolerance, worst.comparison, detail,
                      rows=len(levels), levels=len(levels), first_below_level=first, first_below_layer=layer)


def _layer_label(check: CheckResult, path: str | None) -> str:
    """'path (Type)' as the level's detail names it, else the path."""
    if path is None:
        return "?"
    found = re.search(rf"(?:^re-initialized |, ){re.escape(path)} \(([^)]*)\)", check.detail)
    return f"{path} ({found.group(1)})" if found else path


def _short_detail(check: CheckResult) -> str:
    """What the summary shows of a check's detail: nothing that the column headers already say."""
    detail = check.detail
    if check.status == SKIPPED:   # shortened where grouped (skipped_lines)
        return detail.removeprefix("skipped: ")
    if check.check == "absorbed":
        parts = re.search(r"\(([^)]*)\)", detail)
        return f"{parts.group(1)}: share of |output| not in the map" if parts else detail
    if detail.startswith("max over samples of"):   # what was measured: the legend says; keep the rest
        # a gradient fallback's list of places stays in verdict.csv; its count and meaning are shown
        return detail.partition("; ")[2].split("; zennit gradient fallback: ")[0]
    return detail   # an error, a known difference, a failed control: what to act on, in full


def _shorten(text: str, limit: int = SHORT) -> str:
    return text if len(text) <= limit else text[: limit - 3].rstrip() + "..."


def skipped_lines(summary: list[SummaryRow], methods: list[str], limit: int | None = SHORT) -> list[str]:
    """The skipped checks, one line per check and reason (cut to `limit` characters; None: whole),
    listing the methods it applies to."""
    groups: dict[tuple[str, str], list[str]] = {}
    for row in summary:
        if row.status == SKIPPED:
            reason = (row.detail.replace(f"has no {row.method}", "lacks the method")
                      .replace(f"{row.method} is not an LRP method", "not an LRP method"))
            groups.setdefault((row.check, reason), []).append(row.method)
    lines = []
    for (check, reason), which in groups.items():
        named = "all methods" if len(which) > 1 and set(which) == set(methods) else ", ".join(which)
        lines.append(f"  {check} ({named}): {reason if limit is None else _shorten(reason, limit)}")
    return lines
