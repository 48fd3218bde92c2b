"""The engine benchmark: time and peak memory of LRP against one gradient and the other libraries.

    timing.py     run_benchmark (bench.csv, bench.md)
    commands.py   xaibench bench
"""

#: where each public name of the room lives
_SOURCE = {
    "run_benchmark": "xaibench.studies.bench.timing",
}
__all__ = ["run_benchmark"]


def __getattr__(name):   # the names above, imported on first use: `xaibench --help` stays light
    if name in __all__:
        from importlib import import_module

        return getattr(import_module(_SOURCE[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
