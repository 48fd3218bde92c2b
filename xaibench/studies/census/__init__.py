"""The cross-library agreement census: every method on every backend against the native engine.

    agreement.py  run_census (agreement.csv, agreement.md)
    commands.py   xaibench census
"""

from xaibench.studies.census.agreement import run_census

__all__ = ["run_census"]
