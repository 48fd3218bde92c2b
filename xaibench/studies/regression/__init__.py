"""The regression gate: the metrics tables compared with the committed results/baseline/.

    gate.py       load_spec, compare, update (tolerances in results/baseline/tolerances.yaml)
    commands.py   xaibench regression check | update
"""

from xaibench.studies import lazy_exports

__all__ = ["RegressionSpecError", "compare", "load_spec", "update"]
__getattr__ = lazy_exports(__name__, {
    "RegressionSpecError": "xaibench.studies.regression.gate",
    "compare": "xaibench.studies.regression.gate",
    "load_spec": "xaibench.studies.regression.gate",
    "update": "xaibench.studies.regression.gate",
})
