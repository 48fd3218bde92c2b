"""The rooms' import rules (docs/architecture.md, "Rooms"), read from the source so that a wrong
import fails here and not in a reader's head:

- the library (xaibench/ outside xaibench/studies/) never imports a study;
- a study never imports another room's private names (a leading underscore), and only the
  shared rooms (data, models, report, sweep, chunks, networks, arguments) and its own room's modules
  from the studies;
- cli.py is the one assembly point: it reaches the studies only through COMMAND_MODULES.
"""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "xaibench"
SHARED = {"data", "models", "report", "sweep", "chunks", "networks", "arguments"}


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path):
    """(imported module, [names]) for every import in the file, relative ones made absolute."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = _module_name(path) if path.name == "__init__.py" else _module_name(path).rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, []
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            yield module, [alias.name for alias in node.names]


def _files(where: Path):
    return sorted(p for p in where.rglob("*.py") if "natural_earth" not in p.parts)


def _room(module: str) -> str | None:
    parts = module.split(".")
    return parts[2] if len(parts) > 2 and parts[:2] == ["xaibench", "studies"] else None


LIBRARY = [p for p in _files(PACKAGE) if "studies" not in p.relative_to(PACKAGE).parts]
STUDIES = _files(PACKAGE / "studies")


@pytest.mark.parametrize("path", LIBRARY, ids=lambda p: str(p.relative_to(PACKAGE.parent)))
def test_the_library_never_imports_a_study(path):
    if path.name == "cli.py":   # the assembly point: it imports COMMAND_MODULES from the studies' registry
        allowed = {"xaibench.studies"}
    else:
        allowed = set()
    offending = [module for module, names in _imports(path)
                 if (module == "xaibench.studies" or module.startswith("xaibench.studies.")) and module not in allowed
                 or (module == "xaibench" and "studies" in names)]
    assert not offending, f"{path.name} imports the studies: {offending}"


@pytest.mark.parametrize("path", STUDIES, ids=lambda p: str(p.relative_to(PACKAGE.parent)))
def test_a_study_imports_only_shared_rooms_and_public_names(path):
    own = _room(_module_name(path)) if path.name != "__init__.py" or path.parent != PACKAGE / "studies" else None
    problems = []
    for module, names in _imports(path):
        room = _room(module)
        if room is None or room == own:
            continue
        if room not in SHARED and module.rpartition(".")[2] != "commands":
            problems.append(f"{module} (another study's room; move what both need to the library or a shared room)")
        private = [name for name in names if name.startswith("_")]
        if private:
            problems.append(f"{module}: private name(s) {private}")
    assert not problems, f"{path.relative_to(PACKAGE.parent)}: " + "; ".join(problems)


def test_every_command_module_adds_its_commands_and_no_two_rooms_clash():
    from xaibench import cli
    from xaibench.studies import COMMAND_MODULES

    parser, handlers = cli.build_parser()
    for name in COMMAND_MODULES:
        assert callable(getattr(importlib.import_module(name), "add_commands", None)), name
    assert {"methods", "validate", "train", "data", "explain-case", "census", "conformance", "bench",
            "groundtruth", "adjoint", "receptive-field", "regression"} <= set(handlers)


def _package(module: str) -> str:
    parts = module.split(".")
    return ".".join(parts[:2]) if len(parts) > 2 else module


@pytest.mark.parametrize("path", LIBRARY, ids=lambda p: str(p.relative_to(PACKAGE.parent)))
def test_library_packages_use_each_others_public_names_only(path):
    own = _package(_module_name(path))
    private = [(module, name) for module, names in _imports(path) if module.startswith("xaibench")
               and _package(module) != own for name in names if name.startswith("_") and name != "__version__"]
    assert not private, f"{path.name} imports private names of another package: {private}"


def test_building_the_command_line_loads_no_study_work():
    """Every workflow job starts `xaibench`, which builds the parser with every room's commands:
    a room's commands.py and its package must not import the study's heavy modules at import
    time (data generators with scipy, xarray, pandas, matplotlib); handlers import them."""
    import subprocess
    import sys

    heavy = ("pandas", "xarray", "scipy", "matplotlib", "cartopy", "h5netcdf", "zennit", "snakemake")
    code = ("import sys, xaibench.cli as c; c.build_parser(); "
            f"print(','.join(m for m in {heavy!r} if m in sys.modules))")
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert not loaded, f"building the parser imported {loaded}"
