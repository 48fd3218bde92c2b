"""The engine's conformance table: every rule on every layer type against the dense-matrix
reference, and conservation and the ledger's closure on small networks.

    table.py      write_conformance (conformance.csv, conformance_layers.csv, conformance.md)
    commands.py   xaibench conformance
"""

from xaibench.studies.conformance.table import write_conformance

__all__ = ["write_conformance"]
