"""`xaibench validate`: the checks for a researcher's own model (conservation, agreement across
backends, model randomization), with a verdict per check.

    checks.py     validate() and the Report it returns
    commands.py   xaibench validate
"""

from xaibench.studies.validate.checks import DEFAULT_METHODS, validate

__all__ = ["DEFAULT_METHODS", "validate"]
