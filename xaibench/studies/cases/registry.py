"""The registry of reference cases: every case of every module in MODULES, by name.

    CASES                {name: Case}, in MODULES order
    get_case(name)       the Case (InputError naming the known ones otherwise); a Case passes through
    register(case)       add one (a module's CASES are registered on import)
"""

from __future__ import annotations

from importlib import import_module

from xaibench.errors import InputError
from xaibench.studies.cases.case import Case

#: one line per case module (xaibench/studies/cases/<module>.py, defining CASES: a tuple of Case)
MODULES = ("enso", "convection", "radar")

CASES: dict[str, Case] = {}


def register(case: Case, *, replace: bool = False) -> Case:
    """Add a case under its name; a taken name raises InputError unless replace."""
    if not isinstance(case, Case):
        raise InputError(f"a case must be a xaibench.studies.cases.case.Case, got {type(case).__name__}")
    if case.name in CASES and not replace:
        raise InputError(f"case name '{case.name}' is taken")
    CASES[case.name] = case
    return case


def get_case(case: str | Case) -> Case:
    if isinstance(case, Case):
        return case
    if case not in CASES:
        raise InputError(f"unknown case '{case}'; cases: {', '.join(CASES)}")
    return CASES[case]


for _module in MODULES:
    for _case in import_module(f"{__package__}.{_module}").CASES:
        register(_case)
