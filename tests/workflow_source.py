"""Reading the workflow's source in tests: its rule files and the report(...) items in them."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def rule_files() -> list[Path]:
    """The Snakefile and every workflows/*.smk."""
    return [ROOT / "Snakefile", *sorted((ROOT / "workflows").glob("*.smk"))]


def report_calls(path: Path) -> list[str]:
    """The argument text of every report(...) call in a rule file, parentheses balanced."""
    text = path.read_text()
    calls = []
    for match in re.finditer(r"\breport\(", text):
        depth, index = 1, match.end()
        while depth:
            depth += {"(": 1, ")": -1}.get(text[index], 0)
            index += 1
        calls.append(text[match.end():index - 1])
    return calls
