"""`xaibench validate`: the checks for a researcher's own model (conservation, agreement across
backends, model randomization), with a verdict per check.

    checks.py     validate() and the checks
    inputs.py     reading the model, its weights and the inputs; the precision
    report.py     CheckResult, Report, the console summary and the verdict files
    page.py       verdict.html: the verdict, maps, randomization curve and ledger as one page
    commands.py   xaibench validate
"""

from xaibench.studies import lazy_exports

__all__ = ["CheckResult", "DEFAULT_METHODS", "DEFAULT_TOLERANCES", "Report", "validate"]
__getattr__ = lazy_exports(__name__, {
    "DEFAULT_METHODS": "xaibench.studies.validate.checks",
    "DEFAULT_TOLERANCES": "xaibench.studies.validate.checks",
    "validate": "xaibench.studies.validate.checks",
    "CheckResult": "xaibench.studies.validate.report",
    "Report": "xaibench.studies.validate.report",
})
