"""The native LRP engine: rules, composites, canonization, the graph walk and the ledger.

Composites sit in an open registry: register_composite("lrp.my_rule", builder) adds a
method (builder: options dict -> Composite) that xaibench.explain and xaibench.methods see.
"""

from .composites import REGISTRY, Composite, composite, register_composite, unregister_composite
from .engine import explain_lrp
from .ledger import Ledger, LedgerRow
from .rules import AlphaBeta, Epsilon, Flat, Gamma, Rule, WSquare, Z, ZBox, ZPlus

__all__ = ["REGISTRY", "Composite", "composite", "register_composite", "unregister_composite", "explain_lrp",
           "Ledger", "LedgerRow", "Rule", "Z", "Epsilon", "Gamma", "AlphaBeta", "ZPlus", "ZBox", "WSquare", "Flat"]
