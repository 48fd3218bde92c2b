"""The engine's conformance table: every rule on every layer type against the dense-matrix
reference, and conservation and the ledger's closure on small networks.

    table.py      write_conformance (conformance.csv, conformance_layers.csv, conformance.md)
    commands.py   xaibench conformance
"""

from xaibench.studies import lazy_exports

__all__ = ["write_conformance"]
__getattr__ = lazy_exports(__name__, {
    "write_conformance": "xaibench.studies.conformance.table",
})
