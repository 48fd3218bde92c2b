"""Regression checks: compare freshly computed metrics tables with the committed baselines.

The baseline lives in results/baseline/ (committed; everything else under results/ is not):

    results/baseline/tolerances.yaml          which files are checked, and how (the spec, edited by hand)
    results/baseline/engine/conformance.csv   one baseline table per checked file, at the same relative
    results/baseline/census/agreement.csv     path as the file the workflow writes under results/

    xaibench regression check  --results results --baseline results/baseline   # exit 1 on drift
    xaibench regression update --results results --baseline results/baseline [--file engine/bench.csv ...]

`update` rewrites the baseline tables from the current results and never touches the spec. A
baseline table holds only the key, metric and exact columns of the results table (sorted by key),
so timings and free-text notes never churn the committed files.

The spec (tolerances.yaml):

    version: 1
    configuration: workflows/config/quick.yaml    # what the baseline was computed with (a note)
    files:
      engine/conformance.csv:                     # path relative to --results and --baseline
        description: ...                          # optional note
        key: [network, method]                    # columns that identify a row (compared as text)
        metrics:                                  # numeric columns, each with a tolerance
          conservation_error_f64: {abs: 1.0e-12, why: "float64 identity: rounding only"}
          median_absorbed_share:  {abs: 1.0e-12, rel: 1.0e-6}
        exact: [dtype]                            # columns that must match as text
        ignore: [median_s]                        # columns deliberately not checked (timings)
        overrides:                                # other tolerances for some rows
          - where: {method: smoothgrad}           # column: value, or column: [values] (any of)
            why: Monte Carlo noise
            metrics: {max_relative_difference: {abs: 0.05}}
            ignore: [median_relative_difference]

A metric drifts when |new - baseline| > abs + rel * |baseline| (the absent one counts 0; the
numpy.isclose rule). NaN equals NaN; a NaN where the baseline has a number and a number where the
baseline has NaN are drifts (the row's status changed). A row of the baseline missing from the
results, a missing results file and a missing column are drifts. Rows of the results that the
baseline lacks are reported as new, and are not failures: `update` adopts them. Columns the spec
does not name are reported too (so that a new metric gets a tolerance), and are not failures.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

from xaibench.errors import XaibenchError
from xaibench.io import write_csv

if TYPE_CHECKING:   # pandas is imported where tables are read, so that `xaibench --help` stays fast
    import pandas as pd

SPEC_NAME = "tolerances.yaml"
SPEC_VERSION = 1

_SPEC_KEYS = {"version", "configuration", "description", "files"}
_FILE_KEYS = {"description", "key", "metrics", "exact", "ignore", "overrides"}
_METRIC_KEYS = {"abs", "rel", "why"}
_OVERRIDE_KEYS = {"where", "why", "metrics", "ignore"}


class RegressionSpecError(XaibenchError, ValueError):
    """The tolerance spec or a baseline table is malformed; the message names the place."""


# --- the spec ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Tolerance:
    """|new - baseline| <= abs + rel * |baseline|."""

    abs: float = 0.0
    rel: float = 0.0

    def allows(self, baseline: float, new: float) -> bool:
        if math.isnan(baseline) or math.isnan(new):
            return math.isnan(baseline) and math.isnan(new)
        if math.isinf(baseline) or math.isinf(new):
            return baseline == new
        return abs(new - baseline) <= self.abs + self.rel * abs(baseline)

    def __str__(self) -> str:
        parts = [f"abs {self.abs:g}"] if self.abs or not self.rel else []
        parts += [f"rel {self.rel:g}"] if self.rel else []
        return " + ".join(parts)


@dataclass(frozen=True)
class Override:
    where: Mapping[str, tuple[str, ...]]
    metrics: Mapping[str, Tolerance]
    ignore: frozenset[str]

    def matches(self, row: Mapping[str, str]) -> bool:
        return all(row.get(column) in values for column, values in self.where.items())


@dataclass(frozen=True)
class FileSpec:
    path: str                      # relative, POSIX
    key: tuple[str, ...]
    metrics: Mapping[str, Tolerance]
    exact: tuple[str, ...] = ()
    ignore: tuple[str, ...] = ()
    overrides: tuple[Override, ...] = ()

    @property
    def kept_columns(self) -> list[str]:
        """The columns a baseline table holds."""
        return [*self.key, *self.metrics, *self.exact]

    def tolerances_for(self, row: Mapping[str, str]) -> dict[str, Tolerance | None]:
        """Per metric, the tolerance for this row (None: not checked here); the last matching override wins."""
        tolerances: dict[str, Tolerance | None] = dict(self.metrics)
        for override in self.overrides:
            if override.matches(row):
                tolerances.update(override.metrics)
                tolerances.update({column: None for column in override.ignore})
        return tolerances


@dataclass(frozen=True)
class Spec:
    files: Mapping[str, FileSpec]
    configuration: str | None = None


def _check_keys(value, allowed: set[str], place: str, source: str) -> None:
    if not isinstance(value, Mapping):
        raise RegressionSpecError(f"{source}: {place}: expected a mapping, got {type(value).__name__}")
    unknown = sorted(set(map(str, value)) - allowed)
    if unknown:
        raise RegressionSpecError(
            f"{source}: {place}: unknown key(s) {', '.join(map(repr, unknown))} "
            f"(allowed: {', '.join(sorted(allowed))})")


def _names(value, place: str, source: str, allow_empty: bool = True) -> tuple[str, ...]:
    if value is None:
        value = []
    if not isinstance(value, list) or not all(isinstance(item, str) and item for item in value):
        raise RegressionSpecError(f"{source}: {place}: expected a list of column names, got {value!r}")
    if not value and not allow_empty:
        raise RegressionSpecError(f"{source}: {place}: must name at least one column")
    if len(set(value)) != len(value):
        raise RegressionSpecError(f"{source}: {place}: a column is named twice in {value!r}")
    return tuple(value)


def _number(value, place: str, source: str) -> float:
    # PyYAML reads 1e-12 (no dot) as a string; accept it rather than make every author write 1.0e-12.
    if isinstance(value, bool):
        raise RegressionSpecError(f"{source}: {place}: expected a number, got {value!r}")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise RegressionSpecError(f"{source}: {place}: expected a number, got {value!r}") from None
    if not math.isfinite(number) or number < 0:
        raise RegressionSpecError(f"{source}: {place}: must be a finite number >= 0, got {value!r}")
    return number


def _tolerance(value, place: str, source: str) -> Tolerance:
    _check_keys(value, _METRIC_KEYS, place, source)
    if "abs" not in value and "rel" not in value:
        raise RegressionSpecError(f"{source}: {place}: give abs and/or rel (abs: 0 for exact equality)")
    if "why" in value and not isinstance(value["why"], str):
        raise RegressionSpecError(f"{source}: {place}.why: expected text")
    return Tolerance(abs=_number(value.get("abs", 0.0), f"{place}.abs", source),
                     rel=_number(value.get("rel", 0.0), f"{place}.rel", source))


def _metrics(value, place: str, source: str) -> dict[str, Tolerance]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise RegressionSpecError(f"{source}: {place}: expected a mapping of column: tolerance")
    return {str(column): _tolerance(tolerance, f"{place}.{column}", source)
            for column, tolerance in value.items()}


def _relative_path(path, source: str) -> str:
    text = str(path)
    posix = PurePosixPath(text)
    if not text or posix.is_absolute() or ".." in posix.parts or "\\" in text or posix.name == SPEC_NAME:
        raise RegressionSpecError(
            f"{source}: files: {text!r} must be a relative path below the results folder, e.g. engine/conformance.csv")
    if posix.suffix != ".csv":
        raise RegressionSpecError(f"{source}: files: {text!r}: only .csv tables can be checked")
    return posix.as_posix()


def _file_spec(path: str, value, source: str) -> FileSpec:
    place = f"files.{path}"
    _check_keys(value, _FILE_KEYS, place, source)
    if "description" in value and not isinstance(value["description"], str):
        raise RegressionSpecError(f"{source}: {place}.description: expected text")
    key = _names(value.get("key"), f"{place}.key", source, allow_empty=False)
    metrics = _metrics(value.get("metrics"), f"{place}.metrics", source)
    exact = _names(value.get("exact"), f"{place}.exact", source)
    ignore = _names(value.get("ignore"), f"{place}.ignore", source)
    seen: dict[str, str] = {}
    for role, columns in (("key", key), ("metrics", tuple(metrics)), ("exact", exact), ("ignore", ignore)):
        for column in columns:
            if column in seen:
                raise RegressionSpecError(
                    f"{source}: {place}: column {column!r} is in both {seen[column]} and {role}")
            seen[column] = role
    raw_overrides = value.get("overrides") or []
    if not isinstance(raw_overrides, list):
        raise RegressionSpecError(f"{source}: {place}.overrides: expected a list")
    overrides = []
    for index, raw in enumerate(raw_overrides):
        where_place = f"{place}.overrides[{index}]"
        _check_keys(raw, _OVERRIDE_KEYS, where_place, source)
        where = raw.get("where")
        if not isinstance(where, Mapping) or not where:
            raise RegressionSpecError(f"{source}: {where_place}.where: expected a mapping column: value(s)")
        conditions = {}
        for column, values in where.items():
            values = values if isinstance(values, list) else [values]
            if column not in seen or not values or any(isinstance(v, (Mapping, list)) for v in values):
                raise RegressionSpecError(
                    f"{source}: {where_place}.where.{column}: must be a column the spec names, "
                    f"with a value or a list of values")
            conditions[str(column)] = tuple(_text(v) for v in values)
        override_metrics = _metrics(raw.get("metrics"), f"{where_place}.metrics", source)
        override_ignore = _names(raw.get("ignore"), f"{where_place}.ignore", source)
        for column in (*override_metrics, *override_ignore):
            if column not in metrics:
                raise RegressionSpecError(
                    f"{source}: {where_place}: {column!r} is not one of the file's metrics "
                    f"({', '.join(metrics) or 'none'})")
        if not override_metrics and not override_ignore:
            raise RegressionSpecError(f"{source}: {where_place}: give metrics and/or ignore")
        overrides.append(Override(where=conditions, metrics=override_metrics, ignore=frozenset(override_ignore)))
    return FileSpec(path=path, key=key, metrics=metrics, exact=exact, ignore=ignore, overrides=tuple(overrides))


def parse_spec(document, source: str = SPEC_NAME) -> Spec:
    """Validate a loaded tolerance document; every error names the file and the place in it."""
    _check_keys(document, _SPEC_KEYS, "top level", source)
    if document.get("version") != SPEC_VERSION:
        raise RegressionSpecError(f"{source}: version: expected {SPEC_VERSION}, got {document.get('version')!r}")
    files = document.get("files")
    if not isinstance(files, Mapping) or not files:
        raise RegressionSpecError(f"{source}: files: expected a mapping of path: spec with at least one file")
    parsed = {}
    for path, value in files.items():
        relative = _relative_path(path, source)
        if relative in parsed:
            raise RegressionSpecError(f"{source}: files: {relative!r} is given twice")
        parsed[relative] = _file_spec(relative, value, source)
    configuration = document.get("configuration")
    if configuration is not None and not isinstance(configuration, str):
        raise RegressionSpecError(f"{source}: configuration: expected text")
    return Spec(files=parsed, configuration=configuration)


def load_spec(baseline_dir: str | os.PathLike) -> Spec:
    import yaml

    path = Path(baseline_dir) / SPEC_NAME
    if not path.is_file():
        raise RegressionSpecError(f"no tolerance spec at {path} (its format: xaibench/studies/regression/gate.py)")
    try:
        document = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        raise RegressionSpecError(f"{path}: not valid YAML ({error})") from None
    return parse_spec(document, source=str(path))


# --- reading tables ---------------------------------------------------------------------------
def _text(value) -> str:
    """How a cell reads as text, whatever type YAML or pandas gave it (True -> 'True', 1.0 -> '1.0')."""
    return str(value).strip()


def _read_table(path: Path) -> pd.DataFrame:
    import pandas as pd

    # Everything as text: keys compare as written (bias=True, batch=64), numbers are parsed per column.
    return pd.read_csv(path, dtype=str, keep_default_na=False).map(str.strip)


def _as_number(text: str) -> float | None:
    """The cell as a float; NaN for an empty cell; None when it is not a number."""
    if text == "" or text.lower() in ("nan", "na", "none", "null"):
        return math.nan
    try:
        return float(text)
    except ValueError:
        return None


def _indexed(table: pd.DataFrame, spec: FileSpec, where: str) -> dict[tuple[str, ...], dict[str, str]]:
    missing = [column for column in spec.key if column not in table.columns]
    if missing:
        raise RegressionSpecError(f"{where}: key column(s) {', '.join(missing)} missing (spec key: {list(spec.key)})")
    rows: dict[tuple[str, ...], dict[str, str]] = {}
    for record in table.to_dict("records"):
        key = tuple(record[column] for column in spec.key)
        if key in rows:
            raise RegressionSpecError(
                f"{where}: two rows with the key {_format_key(spec.key, key)}; the spec's key "
                f"{list(spec.key)} must identify a row")
        rows[key] = record
    return rows


def _format_key(columns: Iterable[str], key: Iterable[str]) -> str:
    return ", ".join(f"{column}={value}" for column, value in zip(columns, key))


# --- checking ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Drift:
    """One way the results differ from the baseline beyond tolerance (a failure)."""

    file: str
    reason: str                                  # beyond tolerance | NaN | not a number | missing row | ...
    key: tuple[tuple[str, str], ...] | None = None   # ((column, value), ...) of the row; None: the whole file
    metric: str | None = None
    baseline: float | str | None = None
    new: float | str | None = None
    tolerance: str | None = None

    def __str__(self) -> str:
        where = self.file
        if self.key is not None:
            where += " [" + ", ".join(f"{column}={value}" for column, value in self.key) + "]"
        if self.metric is not None:
            where += f" {self.metric}"
        text = f"{where}: {self.reason}"
        if self.metric is not None:
            text += f": baseline {self.baseline!r}, new {self.new!r}"
            if self.tolerance:
                text += f", tolerance {self.tolerance}"
                if isinstance(self.baseline, float) and isinstance(self.new, float) and \
                        math.isfinite(self.baseline) and math.isfinite(self.new):
                    text += f" (|difference| {abs(self.new - self.baseline):.3g})"
        return text


@dataclass(frozen=True)
class Note:
    """Something reported that is not a failure: a new row, a column the spec does not name."""

    file: str
    message: str

    def __str__(self) -> str:
        return f"{self.file}: {self.message}"


@dataclass
class Report:
    drifts: list[Drift] = field(default_factory=list)
    notes: list[Note] = field(default_factory=list)
    checked: dict[str, int] = field(default_factory=dict)   # file -> baseline rows compared

    @property
    def ok(self) -> bool:
        return not self.drifts

    def summary(self) -> list[str]:
        """What drifted, one item per metric (file:metric), missing rows (counted) or missing file."""
        counts: dict[str, int] = {}
        for drift in self.drifts:
            if drift.metric is not None:
                item = f"{drift.file}:{drift.metric}"
            elif drift.key is not None:
                item = f"{drift.file} (missing rows)"
            else:
                item = f"{drift.file} ({drift.reason.split(':')[0].split(' (')[0]})"
            counts[item] = counts.get(item, 0) + 1
        return [item if count == 1 else f"{item} x{count}" for item, count in counts.items()]

    def text(self) -> str:
        lines = []
        for path, rows in self.checked.items():
            count = sum(1 for drift in self.drifts if drift.file == path)
            lines.append(f"{path}: {rows} baseline rows, {count} drift(s)")
        if self.drifts:
            lines += ["", f"DRIFT ({len(self.drifts)}):"] + [f"  {drift}" for drift in self.drifts]
        if self.notes:
            lines += ["", "not failures:"] + [f"  {note}" for note in self.notes]
        if self.drifts:
            lines += ["", "drifted: " + ", ".join(self.summary())]
        else:
            lines += ["", "no drift"]
        return "\n".join(lines)


def _compare_file(spec: FileSpec, results_dir: Path, baseline_dir: Path, report: Report) -> None:
    baseline_path = baseline_dir / spec.path
    results_path = results_dir / spec.path
    if not baseline_path.is_file():
        report.drifts.append(Drift(spec.path, f"no baseline table at {baseline_path} (run `xaibench regression "
                                              f"update --file {spec.path}` and commit it)"))
        return
    if not results_path.is_file():
        report.drifts.append(Drift(spec.path, f"results file missing: {results_path}"))
        return
    old_table = _read_table(baseline_path)
    new_table = _read_table(results_path)
    baseline = _indexed(old_table, spec, str(baseline_path))
    results = _indexed(new_table, spec, str(results_path))
    report.checked[spec.path] = len(baseline)
    columns = set(new_table.columns)

    absent = [column for column in (*spec.metrics, *spec.exact) if column not in columns]
    for column in absent:
        report.drifts.append(Drift(spec.path, "column missing from the results", metric=column))
    # A spec column the baseline lacks: the spec was edited and the baseline not updated.
    stale = [column for column in (*spec.metrics, *spec.exact)
             if column not in old_table.columns and column not in absent]
    for column in stale:
        report.drifts.append(Drift(spec.path, f"column missing from the baseline (run `xaibench regression "
                                              f"update --file {spec.path}`)", metric=column))
    absent += stale
    named = {*spec.key, *spec.metrics, *spec.exact, *spec.ignore}
    unnamed = sorted(columns - named)
    if unnamed:
        report.notes.append(Note(spec.path, f"column(s) not in the spec, not checked: {', '.join(unnamed)}"))

    for key, base_row in baseline.items():
        key_pairs = tuple(zip(spec.key, key))
        new_row = results.get(key)
        if new_row is None:
            report.drifts.append(Drift(spec.path, "row missing from the results", key=key_pairs))
            continue
        for column in spec.exact:
            if column in absent:
                continue
            if base_row[column] != new_row[column]:
                report.drifts.append(Drift(spec.path, "text differs", key=key_pairs, metric=column,
                                           baseline=base_row[column], new=new_row[column], tolerance="exact"))
        for column, tolerance in spec.tolerances_for(new_row).items():
            if tolerance is None or column in absent:
                continue
            old, new = _as_number(base_row[column]), _as_number(new_row[column])
            if old is None or new is None:
                report.drifts.append(Drift(spec.path, "not a number", key=key_pairs, metric=column,
                                           baseline=base_row[column], new=new_row[column], tolerance=str(tolerance)))
            elif not tolerance.allows(old, new):
                if math.isnan(new):
                    reason = "NaN where the baseline has a number"
                elif math.isnan(old):
                    reason = "a number where the baseline has NaN"
                else:
                    reason = "beyond tolerance"
                report.drifts.append(Drift(spec.path, reason, key=key_pairs, metric=column,
                                           baseline=old, new=new, tolerance=str(tolerance)))
    new_keys = [key for key in results if key not in baseline]
    if new_keys:
        shown = "; ".join(_format_key(spec.key, key) for key in new_keys[:5])
        more = f" and {len(new_keys) - 5} more" if len(new_keys) > 5 else ""
        report.notes.append(Note(spec.path, f"{len(new_keys)} new row(s) not in the baseline "
                                            f"(not a failure; `update` adopts them): {shown}{more}"))


def compare(results_dir: str | os.PathLike = "results",
            baseline_dir: str | os.PathLike = "results/baseline") -> Report:
    """Compare every file the spec names; drifts (failures) and notes (new rows, unnamed columns)."""
    spec = load_spec(baseline_dir)
    report = Report()
    for file_spec in spec.files.values():
        _compare_file(file_spec, Path(results_dir), Path(baseline_dir), report)
    return report


def check(results_dir: str | os.PathLike = "results",
          baseline_dir: str | os.PathLike = "results/baseline") -> list[Drift]:
    """The drifts of the results from the baseline; empty when everything is within tolerance."""
    return compare(results_dir, baseline_dir).drifts


# --- updating ---------------------------------------------------------------------------------
def baseline_table(spec: FileSpec, results_path: Path) -> pd.DataFrame:
    """The baseline for one results table: key, metric and exact columns, sorted by key, cells as written."""
    table = _read_table(results_path)
    _indexed(table, spec, str(results_path))   # the key must identify rows
    missing = [column for column in spec.kept_columns if column not in table.columns]
    if missing:
        raise RegressionSpecError(f"{results_path}: column(s) {', '.join(missing)} named by the spec are missing")
    for column in spec.metrics:
        bad = [text for text in table[column] if _as_number(text) is None]
        if bad:
            raise RegressionSpecError(f"{results_path}: metric {column!r} has values that are not numbers: {bad[:3]}")
    return table[spec.kept_columns].sort_values(list(spec.key), kind="stable").reset_index(drop=True)


def update(results_dir: str | os.PathLike = "results", baseline_dir: str | os.PathLike = "results/baseline",
           files: Iterable[str] | None = None) -> list[Path]:
    """Copy the current metrics into the baseline (all files of the spec, or those named); return what was written.

    Every table is read and validated before any is written, and each is replaced atomically, so
    a failed update leaves the baseline as it was. The spec (tolerances.yaml) is not touched.
    """
    spec = load_spec(baseline_dir)
    if files is None:
        chosen = list(spec.files)
    else:
        chosen = [PurePosixPath(str(name)).as_posix() for name in files]
        unknown = [name for name in chosen if name not in spec.files]
        if unknown:
            raise RegressionSpecError(
                f"not in {Path(baseline_dir) / SPEC_NAME}: {', '.join(unknown)} (files: {', '.join(spec.files)})")
    missing = [name for name in chosen if not (Path(results_dir) / name).is_file()]
    if missing:
        raise RegressionSpecError(
            f"results missing in {results_dir}: {', '.join(missing)} (run the workflow first, or name the files "
            f"to update with --file)")
    tables = {name: baseline_table(spec.files[name], Path(results_dir) / name) for name in chosen}
    written = []
    for name, table in tables.items():
        target = Path(baseline_dir) / name
        write_csv(table, target)
        written.append(target)
    return written


# --- the command ------------------------------------------------------------------------------
