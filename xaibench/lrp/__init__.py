"""The native LRP engine: rules, composites, canonization, the graph walk and the ledger."""

from .composites import PRESETS, Composite, composite
from .engine import explain_lrp
from .ledger import Ledger, LedgerRow
from .rules import AlphaBeta, Epsilon, Flat, Gamma, Rule, WSquare, Z, ZBox, ZPlus

__all__ = ["PRESETS", "Composite", "composite", "explain_lrp", "Ledger", "LedgerRow", "Rule", "Z",
           "Epsilon", "Gamma", "AlphaBeta", "ZPlus", "ZBox", "WSquare", "Flat"]
