"""The reference cases: each trained reference network explained with every method on every
backend, and the metrics per method x backend (docs/papers.md sections 1-3).

    pipeline.py   explain_case, metrics_case and the case definitions
    commands.py   xaibench explain-case | metrics-case | figure | table
"""
