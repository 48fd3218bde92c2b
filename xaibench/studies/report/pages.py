"""The workflow's tables as standalone HTML pages, so that `snakemake --report` shows them.

    markdown_html(text) -> str                       the project's markdown as an HTML fragment
    csv_html(csv_path, floatfmt=".4g") -> str        a CSV as an HTML fragment (a note and a table)
    table_page(source, title=None) -> str            either one as a whole page
    write_table_page(source, out_path, title=None)   that page, written atomically

Snakemake's report shows an .html item in the page (in an iframe); any other file, .md and .csv
included, is only a download link. So each table the workflow writes (.md or .csv) gets an .html
twin beside it (`xaibench report-table`), and the report item is the twin.

The markdown is the subset the project's tables use (tabulate's pipe tables and the studies'
notes): ATX headings (# to ######), paragraphs (lines joined up to a blank line), pipe tables with
a |---| line whose colons set each column's alignment, and `code` spans. Everything else is
text: every character of the source is escaped, nothing in it becomes markup by accident.

The page is self-contained (one inline style sheet; no script, font or image from elsewhere) and
deterministic (no dates), like the figures.
"""

from __future__ import annotations

import html
import re
from pathlib import Path

from xaibench.errors import InputError
from xaibench.io import write_text

#: light and readable inside the report's iframe: wide tables scroll sideways, the header row
#: stays in view while a long table scrolls, numbers line up in their columns
STYLE = """
:root { color-scheme: light; }
body { margin: 1rem 1.25rem; color: #1f2328; background: #fff;
       font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif; }
h1 { font-size: 1.35rem; margin: 0 0 0.6rem; }
h2 { font-size: 1.12rem; margin: 1.4rem 0 0.5rem; padding-bottom: 0.2rem; border-bottom: 1px solid #d8dee4; }
h3, h4, h5, h6 { font-size: 1rem; margin: 1.1rem 0 0.4rem; }
p { margin: 0.4rem 0 0.7rem; max-width: 72rem; }
code { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; font-size: 0.9em;
       background: #f3f4f6; padding: 0.05em 0.3em; border-radius: 3px; }
.table { overflow-x: auto; margin: 0.5rem 0 1rem; }
table { border-collapse: collapse; font-size: 13px; }
th, td { padding: 0.25rem 0.6rem; border-bottom: 1px solid #e3e6ea; white-space: nowrap; text-align: left; }
th { position: sticky; top: 0; background: #eef1f4; border-bottom: 2px solid #c9d1d9; font-weight: 600; }
tbody tr:nth-child(even) { background: #f8f9fb; }
tbody tr:hover { background: #fff6d6; }
.right { text-align: right; font-variant-numeric: tabular-nums; }
.center { text-align: center; }
.note { color: #57606a; }
"""

_HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
_SEPARATOR_CELL = re.compile(r"^:?-+:?$")
_CODE = re.compile(r"`([^`]+)`")


def _escape(text: str) -> str:
    return html.escape(text, quote=True)


def inline_html(text: str) -> str:
    """One line of markdown text: escaped, with `code` spans as <code>."""
    parts = _CODE.split(text)   # odd positions: the code spans' contents
    return "".join(f"<code>{_escape(part)}</code>" if index % 2 else _escape(part) for index, part in enumerate(parts))


def _cells(line: str) -> list[str]:
    """The cells of a pipe-table line (outer bars optional; \\| is a bar inside a cell)."""
    line = line.strip()
    if line.startswith("|"):
        line = line[1:]
    if line.endswith("|") and not line.endswith("\\|"):
        line = line[:-1]
    return [cell.strip().replace("\\|", "|") for cell in re.split(r"(?<!\\)\|", line)]


def _alignments(line: str) -> list[str] | None:
    """The columns' alignments ("", "right", "center") of a |---| line; None if it is not one."""
    if "-" not in line or "|" not in line:
        return None
    cells = _cells(line)
    if not all(_SEPARATOR_CELL.match(cell) for cell in cells):
        return None
    return ["center" if cell.startswith(":") and cell.endswith(":") else "right" if cell.endswith(":") else ""
            for cell in cells]


def _cell(tag: str, text: str, align: str, inline=inline_html) -> str:
    return f"<{tag} class=\"{align}\">{inline(text)}</{tag}>" if align else f"<{tag}>{inline(text)}</{tag}>"


def table_html(header: list[str], rows: list[list[str]], alignments: list[str] | None = None,
               inline=inline_html) -> str:
    """An HTML table (escaped; inside a sideways-scrolling box). A row shorter than the header is
    padded, a longer one keeps its extra cells."""
    alignments = list(alignments or [])
    width = max([len(header), *map(len, rows)])
    alignments += [""] * (width - len(alignments))
    head = "".join(_cell("th", text, alignments[index], inline) for index, text in enumerate(header))
    body = ["<tr>" + "".join(_cell("td", text, alignments[index], inline)
                             for index, text in enumerate(row + [""] * (len(header) - len(row)))) + "</tr>"
            for row in rows]
    return ("<div class=\"table\"><table>\n<thead><tr>" + head + "</tr></thead>\n<tbody>\n" + "\n".join(body)
            + ("\n" if body else "") + "</tbody>\n</table></div>")


def markdown_html(text: str) -> str:
    """The project's markdown (headings, paragraphs, pipe tables, `code`) as an HTML fragment."""
    lines = text.splitlines()
    blocks, paragraph = [], []

    def end_paragraph():
        if paragraph:
            blocks.append("<p>" + inline_html(" ".join(line.strip() for line in paragraph)) + "</p>")
            paragraph.clear()

    index = 0
    while index < len(lines):
        line = lines[index]
        heading = _HEADING.match(line)
        alignments = _alignments(lines[index + 1]) if index + 1 < len(lines) and "|" in line else None
        if not line.strip():
            end_paragraph()
        elif heading:
            end_paragraph()
            level = len(heading.group(1))
            blocks.append(f"<h{level}>{inline_html(heading.group(2))}</h{level}>")
        elif alignments is not None:
            end_paragraph()
            header, rows = _cells(line), []
            index += 2
            while index < len(lines) and lines[index].strip() and "|" in lines[index]:
                rows.append(_cells(lines[index]))
                index += 1
            blocks.append(table_html(header, rows, alignments))
            continue
        else:
            paragraph.append(line)
        index += 1
    end_paragraph()
    return "\n".join(blocks) + "\n"


def csv_html(csv_path, floatfmt: str = ".4g") -> str:
    """The CSV at csv_path as an HTML fragment: a note naming the file and the rounding, then the
    table (floats to floatfmt, a missing value empty, numeric columns aligned right)."""
    import pandas as pd

    from xaibench.studies.report.tables import read_table

    table = read_table(csv_path)
    columns, alignments = [], []
    for name in table.columns:
        values = table[name]
        if pd.api.types.is_float_dtype(values):
            text = [format(value, floatfmt) if pd.notna(value) else "" for value in values]
        else:
            text = ["" if pd.isna(value) else str(value) for value in values]
        columns.append(text)
        alignments.append("right" if pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values)
                          else "")
    rows = [list(row) for row in zip(*columns)] if columns else []
    digits = re.fullmatch(r"\.(\d+)g", floatfmt)
    rounding = f"{digits.group(1)} significant digits" if digits else f"the format {floatfmt!r}"
    note = (f"<p class=\"note\">{len(rows)} rows, {len(table.columns)} columns; decimals shown to "
            f"{_escape(rounding)} ({_escape(Path(csv_path).name)} holds every digit).</p>")
    return note + "\n" + table_html([str(name) for name in table.columns], rows, alignments, inline=_escape) + "\n"


def _first_heading(text: str) -> str | None:
    for line in text.splitlines():
        heading = _HEADING.match(line)
        if heading:
            return _CODE.sub(r"\1", heading.group(2))
    return None


def page_html(title: str, body: str, heading: bool = False) -> str:
    """A whole HTML page around an HTML fragment; heading: put the title above the body as <h1>."""
    return ("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
            f"<title>{_escape(title)}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n"
            + (f"<h1>{_escape(title)}</h1>\n" if heading else "") + body + "</body>\n</html>\n")


def table_page(source, title: str | None = None) -> str:
    """The table file at source (.md or .csv) as a whole HTML page. title: the page's title
    (default: the markdown's first heading, else the file's name); a CSV, which has no heading,
    gets the title as its <h1>."""
    source = Path(source)
    suffix = source.suffix.lower()
    if not source.is_file():
        raise InputError(f"table file not found: {source}")
    if suffix in (".md", ".markdown"):
        text = source.read_text(encoding="utf-8")
        return page_html(title or _first_heading(text) or source.name, markdown_html(text))
    if suffix == ".csv":
        return page_html(title or source.name, csv_html(source), heading=True)
    raise InputError(f"{source}: a table page is made from a .md or .csv file, not '{source.suffix}'")


def write_table_page(source, out_path, title: str | None = None) -> Path:
    """Write table_page(source, title) to out_path (an .html file), atomically."""
    out_path = Path(out_path)
    if out_path.suffix.lower() not in (".html", ".htm"):
        raise ValueError(f"table page {out_path}: give an .html file")
    return write_text(out_path, table_page(source, title))
