"""Our evaluation metrics against Quantus 0.6.0 on the same work: agreement and time.

    compare(out_dir, cases, samples, seed, repeats) -> DataFrame    quantus.csv and quantus.md

Each case is a trained reference network with its LRP-epsilon map (the cases study's file, or
the ground-truth benchmark's): the same Setting (model, inputs, map, targets, mask, seed, re-explain
function) goes to our metric and to Quantus's (QUANTUS in quantus_faithfulness.py and
quantus_others.py, whose arguments are mapped to our definitions; the randomized metrics replay
Quantus's draws). Per metric and case:
- max_relative_difference: max over samples of |ours - Quantus| / max(|ours|, |Quantus|, 1e-12);
  agrees: at most TOLERANCE (1e-6), or "known difference" where Quantus computes something else
  (KNOWN_DIFFERENCES: its Completeness is a bool, its Sparseness adds 1e-7, ties in top-k, ...);
  ours runs in Quantus's form where our default differs (quantus_form: MPRT over every feature);
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
#: where Quantus 0.6.0 computes something else, by design or by defect (docs/metrics/, the tests named)
KNOWN_DIFFERENCES = {
    "completeness": "Quantus returns a bool (exact float equality), not a residual "
                    "(tests/test_quantus_faithfulness.py)",
    "sparseness": "Quantus adds 1e-7 to every |R|, so its Gini depends on the map's scale "
                  "(tests/test_quantus_others.py)",
    "top_k_intersection": "ties at the k-th value (exact zeros outside a receptive field): Quantus's order among "
                          "them is arbitrary, ours shares the places (docs/metrics/localization.md)",
    "relevance_rank_accuracy": "ties at the K-th value, as top_k_intersection",
    "non_sensitivity": "Quantus sets a feature to the baseline once (misses features already at it); ours "
                       "perturbs at random as the paper does (tests/test_quantus_faithfulness.py)",
}


def quantus_functions() -> dict[str, Callable]:
    from xaibench.studies.evaluation import quantus_faithfulness, quantus_others

    return {**quantus_faithfulness.QUANTUS, **quantus_others.QUANTUS}


def quantus_form() -> dict[str, dict]:
    """{metric: options} under which our metric computes Quantus's definition, where our default
    differs (MPRT: every feature instead of the maps' union support)."""
    from xaibench.studies.evaluation import quantus_others

    return dict(quantus_others.QUANTUS_FORM)


def quantus_options(name: str, setting: E.Setting) -> dict:
    """The options of Quantus's run of metric `name`: the setting's options for it, then the form
    under which it is Quantus's definition (quantus_form)."""
    return {**setting.options.get(name, {}), **quantus_form().get(name, {})}


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
        try:
            ours_seconds, ours = _best_time(lambda metric=metric, options=options: metric(setting, **options).numpy(),
                                            repeats)
        except E.NotApplicable as error:   # e.g. random logit of a one-output regression
            row["note"] = str(error)
            rows.append(row)
            continue
        theirs_options = quantus_options(name, setting)
        try:
            quantus_seconds, theirs = _best_time(
                lambda name=name, theirs_options=theirs_options: np.asarray(functions[name](setting, **theirs_options),
                                                                            float), repeats)
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
        agrees = same_nan and (worst <= TOLERANCE)
        known = KNOWN_DIFFERENCES.get(name, "") if not agrees else ""
        row.update(ours_mean=float(np.nanmean(ours)) if np.isfinite(ours).any() else math.nan,
                   quantus_mean=float(np.nanmean(theirs)) if np.isfinite(theirs).any() else math.nan,
                   max_relative_difference=worst,
                   agrees="known difference" if known else agrees,
                   ours_seconds=ours_seconds, quantus_seconds=quantus_seconds,
                   quantus_over_ours=quantus_seconds / ours_seconds if ours_seconds > 0 else math.nan,
                   note="; ".join(part for part in (
                       "" if not options else "ours with " + ", ".join(f"{k}={v!r}" for k, v in options.items()),
                       "" if same_nan else "NaN in different samples", known) if part))
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
    compared = table[table["agrees"].isin([True, False, "known difference"])]
    agreeing = int((compared["agrees"] == True).sum())  # noqa: E712
    known = int((compared["agrees"] == "known difference").sum())
    lines = ["# Our evaluation metrics against Quantus 0.6.0", "",
             f"Same model, inputs, map, targets, mask and seeds (the randomized metrics replay Quantus's draws); "
             f"times are the best of {repeats} calls at {threads} torch thread(s). A metric agrees when the "
             f"largest relative difference over samples is at most {TOLERANCE:g}: {agreeing} of {len(compared)} "
             f"comparisons do; {known} differ where Quantus computes something else (the note says what).", "",
             "| case | metric | agrees | max rel. difference | ours (s) | Quantus (s) | Quantus / ours | note |",
             "|---|---|---|---|---|---|---|---|"]

    def number(value, spec):
        return "" if value is None or (isinstance(value, float) and math.isnan(value)) else format(value, spec)

    for row in table.itertuples(index=False):
        agreement = {True: "yes", False: "no"}.get(row.agrees, row.agrees if isinstance(row.agrees, str) else "")
        lines.append(f"| {row.case} | {row.metric} | {agreement} | "
                     f"{number(row.max_relative_difference, '.1e')} | {number(row.ours_seconds, '.3f')} | "
                     f"{number(row.quantus_seconds, '.3f')} | {number(row.quantus_over_ours, '.1f')} | {row.note} |")
    return "\n".join(lines) + "\n"
