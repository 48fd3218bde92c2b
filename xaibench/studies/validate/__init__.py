"""`xaibench validate`: the checks for a researcher's own model (conservation, agreement across
backends, model randomization), with a verdict per check.

    checks.py     validate() and the checks
    inputs.py     reading the model, its weights and the inputs; the precision
    report.py     CheckResult, Report and the verdict files
    commands.py   xaibench validate
"""

from xaibench.studies.validate.checks import DEFAULT_METHODS, DEFAULT_TOLERANCES, validate
from xaibench.studies.validate.report import CheckResult, Report

__all__ = ["DEFAULT_METHODS", "DEFAULT_TOLERANCES", "CheckResult", "Report", "validate"]
