"""The engine benchmark: time and peak memory of LRP against one gradient and the other libraries.

    timing.py     run_benchmark (bench.csv, bench.md)
    commands.py   xaibench bench
"""

from xaibench.studies.bench.timing import run_benchmark

__all__ = ["run_benchmark"]
