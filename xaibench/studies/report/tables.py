"""Tables for the report: a CSV written by the workflow, as Markdown or HTML.

    write_table(csv_path, out_path, floatfmt=".4g", title=None, columns=None)

The format follows out_path's suffix (.md or .html). Output is deterministic (no dates, no
index column) and written atomically, like the figures.
"""

from __future__ import annotations

import html
from pathlib import Path

import pandas as pd

from xaibench.errors import InputError
from xaibench.io import write_text

FORMATS = {".md": "markdown", ".markdown": "markdown", ".html": "html", ".htm": "html"}


def read_table(csv_path) -> pd.DataFrame:
    """A CSV as a DataFrame; InputError naming the file when it is missing, empty or not CSV."""
    csv_path = Path(csv_path)
    if not csv_path.is_file():
        raise InputError(f"table file not found: {csv_path}")
    try:
        table = pd.read_csv(csv_path)
    except (pd.errors.EmptyDataError, pd.errors.ParserError, UnicodeDecodeError) as error:
        raise InputError(f"cannot read {csv_path} as CSV ({type(error).__name__}: {error})") from error
    return table


def table_text(table: pd.DataFrame, fmt: str = "markdown", floatfmt: str = ".4g", title: str | None = None) -> str:
    """A DataFrame as Markdown (pipe table) or an HTML fragment (a <table>, no index)."""
    if fmt == "markdown":
        text = table.to_markdown(index=False, floatfmt=floatfmt)
        return (f"## {title}\n\n" if title else "") + text + "\n"
    if fmt == "html":
        formatted = table.copy()
        for column in formatted.columns:
            if pd.api.types.is_float_dtype(formatted[column]):
                formatted[column] = formatted[column].map(lambda value: format(value, floatfmt))
        text = formatted.to_html(index=False, border=0, classes="xaibench-table", na_rep="")
        return (f"<h2>{html.escape(title)}</h2>\n" if title else "") + text + "\n"
    raise ValueError(f"unknown table format '{fmt}'; known: markdown, html")


def write_table(csv_path, out_path, floatfmt: str = ".4g", title: str | None = None, columns=None) -> Path:
    """Write the CSV at csv_path as a Markdown (.md) or HTML (.html) table at out_path.
    columns: the columns to keep, in order (None: all); a missing one raises InputError."""
    out_path = Path(out_path)
    if out_path.suffix.lower() not in FORMATS:
        raise ValueError(f"table output {out_path}: unknown suffix '{out_path.suffix}'; use {', '.join(FORMATS)}")
    table = read_table(csv_path)
    if columns is not None:
        missing = [c for c in columns if c not in table.columns]
        if missing:
            raise InputError(f"{csv_path}: no column(s) {missing}; it has {list(table.columns)}")
        table = table[list(columns)]
    text = table_text(table, FORMATS[out_path.suffix.lower()], floatfmt, title)
    write_text(out_path, text)
    return out_path
