"""The regression gate: the metrics tables compared with the committed results/baseline/.

    gate.py       load_spec, compare, update (tolerances in results/baseline/tolerances.yaml)
    commands.py   xaibench regression check | update
"""

from xaibench.studies.regression.gate import RegressionSpecError, compare, load_spec, update

__all__ = ["RegressionSpecError", "compare", "load_spec", "update"]
