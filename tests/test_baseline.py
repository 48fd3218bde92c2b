"""CI's regression gate on the engine: the quick conformance table and the quick census are
recomputed and compared with the committed baseline (results/baseline/, tolerances in its
tolerances.yaml). A failure names the file, the row and the metric; after an intended change,
`make update-baseline` takes the new numbers. (The benchmark's timings are never compared;
the reference cases' metrics are checked by `make check-baseline`, which retrains the models.)"""

from __future__ import annotations

from pathlib import Path

import pytest

from xaibench.studies.census.agreement import run_census
from xaibench.studies.conformance.table import write_conformance
from xaibench.studies.regression.gate import compare

BASELINE = Path(__file__).resolve().parents[1] / "results" / "baseline"


@pytest.mark.tf
def test_quick_engine_metrics_match_the_committed_baseline(tmp_path, innvestigate_worker):
    results = tmp_path / "results"
    write_conformance(results / "engine", quick=True)
    run_census(results / "census", quick=True, seed=0, log=None)
    recomputed = {"engine/conformance.csv", "engine/conformance_layers.csv", "census/agreement.csv"}
    report = compare(results, BASELINE)
    drifts = [drift for drift in report.drifts if drift.file in recomputed]
    assert not drifts, "drifted from results/baseline:\n" + "\n".join(str(drift) for drift in drifts)
