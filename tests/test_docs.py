"""Every document the repository's text cites is in the repository.

A docstring, comment, caption or README that sends the reader to a document the checkout does
not contain is a dead end (issue 14, item 12: the code cited two design notes kept outside the
repository). Scanned: the tracked and not-ignored files ending in .py, .md, .smk, .rst, .yaml,
except virtual environments and results/ (workflow output; what it names is generated there).

A citation is a token ending in ".md" that is
- an upper-case document name (README, CHANGELOG, ...: the stem has no lower-case letter), or
- a path whose first folder is a folder of the repository (docs/..., env/..., workflows/...),
  except results/ (file names the workflow writes).
Lower-case bare names (bench.md, agreement.md) and placeholders (OUT/bench.md, a metavar such
as FILE.md: PLACEHOLDERS) are files the code writes, not documents it cites. A citation resolves
when the path exists from the repository root or from the citing file's folder. This file is not
scanned: its examples are not citations.

Section references are checked too: a numbered one ("<document> section 6", "sections 2 and 4",
"sections 1-3") needs a heading starting "6." there, a named one ('<document>, "Public API"' or
'<document>, section "Public API"') a heading "Public API".
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SUFFIXES = {".py", ".md", ".smk", ".rst", ".yaml"}
SKIPPED_FOLDERS = {"results", ".git", ".snakemake", "__pycache__", ".pytest_cache", ".hypothesis",
                   ".ruff_cache", "build", "dist"}

TOKEN = re.compile(r"(?<![A-Za-z0-9_./-])([A-Za-z0-9_./-]*[A-Za-z0-9_-]\.md)(?![A-Za-z0-9_])")
# "<doc>.md section 6", "sections 2 and 4", "sections 1-3"; a comment may break the line
NUMBERED = re.compile(r"([A-Za-z0-9_./-]+\.md),?\s+(?:#\s*)?sections?\s+"
                      r"(\d+(?:\s*(?:-|,|and|(?:#\s*))\s*\d+)*)")
NAMED = re.compile(r"([A-Za-z0-9_./-]+\.md)(?:,\s+(?:#\s*)?|,?\s+(?:#\s*)?section\s+(?:#\s*)?)\"([^\"]+)\"")
#: upper-case stems that stand for a file the user names (argparse metavars), not a document
PLACEHOLDERS = {"FILE", "PATH", "NAME", "OUT", "DIR"}
SELF = Path(__file__).resolve().relative_to(ROOT)


def _skipped(relative: Path) -> bool:
    return any(part in SKIPPED_FOLDERS or part.startswith(".venv") or part.endswith(".egg-info")
               for part in relative.parts[:-1])


def text_files() -> list[Path]:
    """Repository-relative paths of the files to scan (git's view when there is a checkout)."""
    names = None
    if (ROOT / ".git").exists():
        try:
            listed = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
                                    cwd=ROOT, capture_output=True, check=True, timeout=60)
            names = [name for name in listed.stdout.decode().split("\0") if name]
        except (OSError, subprocess.SubprocessError):
            names = None
    if names is None:  # a copy without git: walk the tree
        names = []
        for folder, subfolders, files in os.walk(ROOT):
            relative_folder = Path(folder).relative_to(ROOT)
            subfolders[:] = [s for s in subfolders if not _skipped(relative_folder / s / "x")]
            names += [str(relative_folder / f) for f in files]
    paths = [Path(name) for name in names]
    return sorted(p for p in paths if p.suffix in SUFFIXES and not _skipped(p) and (ROOT / p).is_file())


def _repository_folders() -> set[str]:
    return {p.name for p in ROOT.iterdir() if p.is_dir() and p.name not in SKIPPED_FOLDERS
            and not p.name.startswith(".")}


def is_document_citation(token: str, folders: set[str]) -> bool:
    path = Path(token)
    if "/" not in token:
        return not any(c.islower() for c in path.stem) and path.stem not in PLACEHOLDERS
    first = token.split("/")[0]
    return first in folders


def resolve(token: str, citing: Path) -> Path | None:
    for base in (ROOT, ROOT / citing.parent):
        candidate = (base / token).resolve()
        if candidate.is_file() and (candidate == ROOT or ROOT in candidate.parents):
            return candidate
    return None


def citations():
    """(citing file, line number, cited token) for every document citation."""
    folders = _repository_folders()
    for relative in text_files():
        if relative == SELF:
            continue
        text = (ROOT / relative).read_text(encoding="utf-8", errors="replace")
        for number, line in enumerate(text.splitlines(), start=1):
            for match in TOKEN.finditer(line):
                if is_document_citation(match.group(1), folders):
                    yield relative, number, match.group(1)


def _headings(document: Path) -> list[str]:
    return [line.lstrip("#").strip() for line in document.read_text(encoding="utf-8").splitlines()
            if line.startswith("#")]


def _section_numbers(text: str) -> list[int]:
    numbers = []
    for part in re.split(r"\s*(?:,|and|#)\s*", text.strip()):
        if "-" in part:
            low, high = (int(v) for v in part.split("-"))
            numbers += range(low, high + 1)
        elif part.strip():
            numbers.append(int(part))
    return numbers


def test_scan_sees_the_repository():
    files = {str(p) for p in text_files()}
    assert "README.md" in files and "tests/test_docs.py" in files
    assert not any(f.startswith(("results/", ".venv")) for f in files)


def test_citation_rule():
    folders = {"docs", "env", "workflows"}
    assert is_document_citation("README.md", folders)
    assert is_document_citation("CONTRIBUTING.md", folders)
    assert is_document_citation("docs/papers.md", folders)
    assert is_document_citation("env/README.md", folders)
    assert not is_document_citation("bench.md", folders)            # a file the code writes
    assert not is_document_citation("results/census/agreement.md", folders)
    assert not is_document_citation("OUT/bench.md", folders)        # a placeholder
    assert not is_document_citation("FILE.md", folders)             # a metavar
    assert [m.group(1) for m in TOKEN.finditer("see `docs/x.md`, (A_B.md) and f'{out}/c.md'")] == \
        ["docs/x.md", "A_B.md", "/c.md"]
    assert _section_numbers("1-3") == [1, 2, 3] and _section_numbers("2 and 4") == [2, 4]
    numbered = NUMBERED.search("(docs/papers.md\n# sections 2 and 4): the")
    assert numbered.groups() == ("docs/papers.md", "2 and 4")
    assert NAMED.search('(docs/a.md,\n    "Public API")').groups() == ("docs/a.md", "Public API")
    assert NAMED.search('docs/a.md section "Layout"').groups() == ("docs/a.md", "Layout")
    assert NAMED.search('["docs/a.md", "docs/b.md"]') is None


def test_cited_documents_exist():
    missing = [f"{path}:{line}: {token}" for path, line, token in citations() if resolve(token, path) is None]
    assert not missing, ("these files cite documents the repository does not contain "
                         "(bring the document into docs/ or fix the reference):\n" + "\n".join(missing))


def test_cited_sections_exist():
    problems = []
    for relative in text_files():
        if relative == SELF:
            continue
        text = (ROOT / relative).read_text(encoding="utf-8", errors="replace")
        for pattern, kind in ((NUMBERED, "numbered"), (NAMED, "named")):
            for match in pattern.finditer(text):
                token = match.group(1)
                if not is_document_citation(token, _repository_folders()):
                    continue
                document = resolve(token, relative)
                if document is None:
                    continue  # reported by test_cited_documents_exist
                line = text.count("\n", 0, match.start()) + 1
                headings = _headings(document)
                if kind == "numbered":
                    wanted = [str(n) for n in _section_numbers(match.group(2))]
                    absent = [w for w in wanted if not any(h.startswith(f"{w}. ") for h in headings)]
                else:
                    absent = [] if match.group(2) in headings else [match.group(2)]
                if absent:
                    problems.append(f"{relative}:{line}: {token} has no section {', '.join(absent)}")
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("document", ["docs/architecture.md", "docs/papers.md", "docs/methods.md"])
def test_docs_are_present(document):
    assert (ROOT / document).is_file()
