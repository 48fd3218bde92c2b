"""The cross-library agreement census: every method on every backend against the native engine.

    agreement.py  run_census (agreement.csv, agreement.md)
    commands.py   xaibench census
"""

#: where each public name of the room lives
_SOURCE = {
    "run_census": "xaibench.studies.census.agreement",
}
__all__ = ["run_census"]


def __getattr__(name):   # the names above, imported on first use: `xaibench --help` stays light
    if name in __all__:
        from importlib import import_module

        return getattr(import_module(_SOURCE[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
