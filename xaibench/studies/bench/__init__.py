"""The engine benchmark: time and peak memory of LRP against one gradient and the other libraries.

    timing.py     run_benchmark (bench.csv, bench.md)
    commands.py   xaibench bench
"""

from xaibench.studies import lazy_exports

__all__ = ["run_benchmark"]
__getattr__ = lazy_exports(__name__, {
    "run_benchmark": "xaibench.studies.bench.timing",
})
