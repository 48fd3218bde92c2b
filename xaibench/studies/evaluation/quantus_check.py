"""Our evaluation metrics against Quantus 0.6.0 on the same work: agreement and time.

    compare(out_dir, cases, samples, seed, repeats) -> DataFrame    quantus.csv and quantus.md

Each case is a trained reference network with its LRP-epsilon map (the cases study's file, or
the ground-truth benchmark's): the same Setting (model, inputs, map, targets, mask, seed, re-explain
function) goes to our metric and to Quantus's (QUANTUS in quantus_faithfulness.py and
quantus_others.py, whose arguments are mapped to our definitions). Per metric and case:
- max_relative_difference: max over samples of |ours - Quantus| / max(|ours|, |Quantus|, 1e-12);
  deterministic metrics must agree to 1e-6 (tests/test_quantus_*.py hold that on small models);
  randomized ones agree where the draws are reproduced and otherwise within the Monte Carlo error
  docs/metrics/ states;
- ours_seconds, quantus_seconds: the best of `repeats` calls at one torch thread, and their ratio.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from xaibench.metrics import evaluation as E
from xaibench.studies import sweep

COLUMNS = ("case", "metric", "category", "deterministic", "samples", "ours_mean", "quantus_mean",
           "max_relative_difference", "agrees", "ours_seconds", "quantus_seconds", "quantus_over_ours", "note")
#: the agreement a deterministic metric must reach
TOLERANCE = 1e-6


def quantus_functions() -> dict[str, Callable]:
    from xaibench.studies.evaluation import quantus_faithfulness, quantus_others

    return {**quantus_faithfulness.QUANTUS, **quantus_others.QUANTUS}


def quantus_form() -> dict[str, dict]:
    """{metric: options} under which our metric computes Quantus's definition, where our default
    differs (MPRT: every feature instead of the maps' union support)."""
    from xaibench.studies.evaluation import quantus_others

    return dict(quantus_others.QUANTUS_FORM)


def _best_time(function, repeats: int):
    best, result = math.inf, None
    for _ in range(repeats):
        start = time.perf_counter()
        result = function()
        best = min(best, time.perf_counter() - start)
    return best, result


def compare_setting(case: str, setting: E.Setting, repeats: int = 3, names: Iterable[str] | None = None,
                    log: Callable[[str], None] | None = None) -> list[dict]:
    """Rows of COLUMNS for every metric Quantus has, on one Setting."""
    registry = E.metrics()
    functions = quantus_functions()
    form = quantus_form()
    rows = []
    for name in (names or functions):
        metric = registry[name]
        row = {"case": case, "metric": name, "category": metric.category, "deterministic": metric.deterministic,
               "samples": int(setting.x.shape[0]), "note": ""}
        if not metric.available(setting):
            row["note"] = f"needs {'+'.join(metric.needs)}"
            rows.append(row)
            continue
        options = form.get(name, {})
        ours_seconds, ours = _best_time(lambda metric=metric, options=options: metric(setting, **options).numpy(),
                                        repeats)
        try:
            quantus_seconds, theirs = _best_time(lambda name=name: np.asarray(functions[name](setting), float),
                                                 repeats)
        except Exception as error:   # Quantus's limits are a row, not the end of the comparison
            row.update(ours_mean=float(np.nanmean(ours)), ours_seconds=ours_seconds,
                       note=f"Quantus failed: {sweep.one_line(error, 200)}")
            rows.append(row)
            continue
        scale = np.maximum(np.maximum(np.abs(ours), np.abs(theirs)), 1e-12)
        difference = np.abs(ours - theirs) / scale
        both = np.isfinite(ours) & np.isfinite(theirs)
        same_nan = bool(np.array_equal(np.isnan(ours), np.isnan(theirs)))
        worst = float(difference[both].max()) if both.any() else math.nan
        row.update(ours_mean=float(np.nanmean(ours)) if np.isfinite(ours).any() else math.nan,
                   quantus_mean=float(np.nanmean(theirs)) if np.isfinite(theirs).any() else math.nan,
                   max_relative_difference=worst,
                   agrees=(same_nan and (worst <= TOLERANCE)) if metric.deterministic else "",
                   ours_seconds=ours_seconds, quantus_seconds=quantus_seconds,
                   quantus_over_ours=quantus_seconds / ours_seconds if ours_seconds > 0 else math.nan,
                   note="; ".join(part for part in (
                       "" if not options else "ours with " + ", ".join(f"{k}={v!r}" for k, v in options.items()),
                       "" if same_nan else "NaN in different samples") if part))
        rows.append(row)
        if log:
            log(f"  {case:12s} {name:28s} max rel diff {worst:.2e}  ours {ours_seconds:.3f} s  "
                f"Quantus {quantus_seconds:.3f} s")
    return rows


def compare(out_dir, cases: dict[str, E.Setting], repeats: int = 3, log: Callable[[str], None] | None = None,
            threads: int = 1) -> pd.DataFrame:
    """quantus.csv and quantus.md in out_dir for the given {case: Setting}, timed at `threads`."""
    from xaibench.io import write_csv, write_text

    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        rows = [row for case, setting in cases.items() for row in compare_setting(case, setting, repeats, log=log)]
    finally:
        torch.set_num_threads(previous)
    table = pd.DataFrame(rows, columns=list(COLUMNS))
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_csv(table, out / "quantus.csv")
    write_text(out / "quantus.md", _markdown(table, threads, repeats))
    return table


def _markdown(table: pd.DataFrame, threads: int, repeats: int) -> str:
    deterministic = table[(table["deterministic"] == True) & table["agrees"].isin([True, False])]  # noqa: E712
    lines = ["# Our evaluation metrics against Quantus 0.6.0", "",
             f"Same model, inputs, map, targets, mask and seeds; times are the best of {repeats} calls at "
             f"{threads} torch thread(s). Deterministic metrics agree when the largest relative difference "
             f"over samples is at most {TOLERANCE:g}: {int((deterministic['agrees'] == True).sum())} of "  # noqa: E712
             f"{len(deterministic)} do. Randomized metrics draw their perturbations as docs/metrics/ says.", "",
             "| case | metric | deterministic | max rel. difference | ours (s) | Quantus (s) | Quantus / ours | note |",
             "|---|---|---|---|---|---|---|---|"]

    def number(value, spec):
        return "" if value is None or (isinstance(value, float) and math.isnan(value)) else format(value, spec)

    for row in table.itertuples(index=False):
        lines.append(f"| {row.case} | {row.metric} | {'yes' if row.deterministic else 'no'} | "
                     f"{number(row.max_relative_difference, '.1e')} | {number(row.ours_seconds, '.3f')} | "
                     f"{number(row.quantus_seconds, '.3f')} | {number(row.quantus_over_ours, '.1f')} | {row.note} |")
    return "\n".join(lines) + "\n"
