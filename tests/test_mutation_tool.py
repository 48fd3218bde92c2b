"""The mutation check (tools/mutation.py) itself: its mutants still match the code, and it fails
when a mutant survives, so `make mutation` cannot pass by measuring nothing."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _tool():
    spec = importlib.util.spec_from_file_location("mutation_tool", ROOT / "tools" / "mutation.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_every_mutant_matches_the_code_exactly_once():
    """A mutant whose search text is gone (the code moved on) would plant nothing: caught here,
    in the ordinary test run, not only when the mutation check runs."""
    tool = _tool()
    for mutant in tool.MUTANTS:
        text = (ROOT / mutant.path).read_text()
        assert text.count(mutant.search) == 1, f"mutant '{mutant.name}' does not match {mutant.path}"
        assert mutant.replace != mutant.search, mutant.name


def test_a_stale_mutant_stops_the_check_before_any_test_runs(monkeypatch, tmp_path):
    tool = _tool()
    monkeypatch.setattr(tool, "MUTANTS", [tool.Mutant("stale", "xaibench/lrp/stabilizer.py", "no such code", "x")])
    monkeypatch.setattr(tool, "_run_tests", lambda copy: pytest.fail("the tests ran before the mutants were checked"))
    with pytest.raises(SystemExit, match="occurs 0 times"):
        tool.main(["--out", str(tmp_path / "mutation.md")])


def test_the_check_exits_non_zero_when_a_mutant_survives(monkeypatch, tmp_path):
    """One mutant the chosen test kills (sign(0) = -1) and one it cannot see (a changed comment):
    the table says which, and the exit status is 1 because one survived."""
    tool = _tool()
    killed = next(m for m in tool.MUTANTS if m.name == "sign(0) = -1 in the stabilizer")
    harmless = tool.Mutant("a changed comment", "xaibench/lrp/stabilizer.py", '"""Return (stabilized denominator',
                           '"""Return  (stabilized denominator')
    monkeypatch.setattr(tool, "MUTANTS", [killed, harmless])
    monkeypatch.setattr(tool, "TESTS", ["tests/test_ledger.py::test_the_stabilizer_takes_sign_zero_as_plus"])
    out = tmp_path / "mutation.md"
    assert tool.main(["--out", str(out)]) == 1
    table = out.read_text()
    assert f"| {killed.name} | xaibench/lrp/stabilizer.py | yes | tests/test_ledger.py::" in table
    assert "| a changed comment | xaibench/lrp/stabilizer.py | NO | - |" in table
