"""The cross-library agreement census: every method on every backend against the native engine.

    agreement.py  run_census (agreement.csv, agreement.md)
    commands.py   xaibench census
"""

from xaibench.studies import lazy_exports

__all__ = ["run_census"]
__getattr__ = lazy_exports(__name__, {
    "run_census": "xaibench.studies.census.agreement",
})
