"""The engine's conformance table (xaibench/studies/conformance/table.py): what
write_conformance writes. (Its numbers are compared with the committed baseline by
tests/test_baseline.py; the rules against the dense reference are tests/test_rules.py.)

One run of the quick configuration (seconds on one thread) checks the three documented files:
conformance.csv (methods x networks), conformance_layers.csv (rules x layers) and conformance.md.
"""

from __future__ import annotations

import pandas as pd

import xaibench
from xaibench.studies.conformance import table

NETWORK_COLUMNS = ["network", "method", "conservation_error_f64", "relative_conservation_error_f32",
                   "ledger_row_residual_f64", "median_absorbed_share", "zennit_max_relative_difference"]
LAYER_COLUMNS = ["layer", "rule", "bias", "max_error_vs_reference"]


def test_quick_conformance_writes_the_documented_files_and_columns(tmp_path):
    table.write_conformance(tmp_path, quick=True)
    assert sorted(path.name for path in tmp_path.iterdir()) == [
        "conformance.csv", "conformance.md", "conformance_layers.csv"]
    networks = pd.read_csv(tmp_path / "conformance.csv")
    assert list(networks.columns) == NETWORK_COLUMNS
    lrp_methods = [m for m in xaibench.methods("native") if m.startswith("lrp.")]
    assert len(networks) == len(table.NETWORKS) * len(lrp_methods)
    assert set(networks["network"]) == set(table.NETWORKS) and set(networks["method"]) == set(lrp_methods)
    layers = pd.read_csv(tmp_path / "conformance_layers.csv")
    assert list(layers.columns) == LAYER_COLUMNS
    assert len(layers) == 2 * len(table.LAYERS) * len(table.RULES) + len(table.PARAMETER_FREE)
    assert set(layers["layer"]) == set(table.LAYERS) | set(table.PARAMETER_FREE)
    assert layers["max_error_vs_reference"].notna().all()
    text = (tmp_path / "conformance.md").read_text()
    for heading in ("# Engine conformance", "## Rules against the dense-matrix float64 reference",
                    "## Methods over the test networks", "## Per network"):
        assert heading in text
