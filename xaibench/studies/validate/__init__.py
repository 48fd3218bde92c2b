"""`xaibench validate`: the checks for a researcher's own model (conservation, agreement across
backends, model randomization), with a verdict per check.

    checks.py     validate() and the checks
    inputs.py     reading the model, its weights and the inputs; the precision
    report.py     CheckResult, Report and the verdict files
    commands.py   xaibench validate
"""

#: where each public name of the room lives
_SOURCE = {
    "DEFAULT_METHODS": "xaibench.studies.validate.checks",
    "DEFAULT_TOLERANCES": "xaibench.studies.validate.checks",
    "validate": "xaibench.studies.validate.checks",
    "CheckResult": "xaibench.studies.validate.report",
    "Report": "xaibench.studies.validate.report",
}
__all__ = ["DEFAULT_METHODS", "DEFAULT_TOLERANCES", "CheckResult", "Report", "validate"]


def __getattr__(name):   # the names above, imported on first use: `xaibench --help` stays light
    if name in __all__:
        from importlib import import_module

        return getattr(import_module(_SOURCE[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
