"""The regression gate: the metrics tables compared with the committed results/baseline/.

    gate.py       load_spec, compare, update (tolerances in results/baseline/tolerances.yaml)
    commands.py   xaibench regression check | update
"""

#: where each public name of the room lives
_SOURCE = {
    "RegressionSpecError": "xaibench.studies.regression.gate",
    "compare": "xaibench.studies.regression.gate",
    "load_spec": "xaibench.studies.regression.gate",
    "update": "xaibench.studies.regression.gate",
}
__all__ = ["RegressionSpecError", "compare", "load_spec", "update"]


def __getattr__(name):   # the names above, imported on first use: `xaibench --help` stays light
    if name in __all__:
        from importlib import import_module

        return getattr(import_module(_SOURCE[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
