"""The engine's conformance table: every rule on every layer type against the dense-matrix
reference, and conservation and the ledger's closure on small networks.

    table.py      write_conformance (conformance.csv, conformance_layers.csv, conformance.md)
    commands.py   xaibench conformance
"""

#: where each public name of the room lives
_SOURCE = {
    "write_conformance": "xaibench.studies.conformance.table",
}
__all__ = ["write_conformance"]


def __getattr__(name):   # the names above, imported on first use: `xaibench --help` stays light
    if name in __all__:
        from importlib import import_module

        return getattr(import_module(_SOURCE[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
