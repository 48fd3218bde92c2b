"""The report's tables as pages (xaibench.studies.report.pages, `xaibench report-table`).

Snakemake's report shows an .html item in the page and any other file (.md, .csv) only as a
download link: every table the workflow puts in the report is therefore its .html page, made from
the .md or .csv the workflow writes (which stays the output other rules and the regression gate
read). Here: the markdown subset and the CSV become HTML tables with their header and every row,
text is escaped, and every table item of the workflow is an .html page.
"""

from __future__ import annotations

import html.parser
import re
from pathlib import Path

import pytest
from workflow_source import report_calls, rule_files

from xaibench.errors import InputError
from xaibench.studies.report.pages import csv_html, markdown_html, table_page, write_table_page

ROOT = Path(__file__).resolve().parents[1]


class _Tables(html.parser.HTMLParser):
    """The tables of an HTML text as lists of rows of (tag, text, class) cells, and every tag seen."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.tables, self.tags, self._cell = [], [], None

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        if tag == "table":
            self.tables.append([])
        elif tag == "tr":
            self.tables[-1].append([])
        elif tag in ("td", "th"):
            self._cell = [tag, "", dict(attrs).get("class", "")]

    def handle_endtag(self, tag):
        if tag in ("td", "th"):
            self.tables[-1][-1].append(tuple(self._cell))
            self._cell = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell[1] += data


def _parse(text: str) -> _Tables:
    parser = _Tables()
    parser.feed(text)
    parser.close()
    return parser


MARKDOWN = """# Engine <conformance> & more

Computed by `xaibench conformance`; a note on
two lines with a | bar.

## Per network

| network   | method    |   error | note        |
|:----------|:----------|--------:|:-----------:|
| dense     | lrp.z     | 1.5e-16 | a < b & c   |
| conv2d    | `lrp.eps` |     nan | <b>bold</b> |

after the table
"""


def test_a_markdown_table_becomes_an_html_table_with_its_header_every_row_and_alignment():
    fragment = markdown_html(MARKDOWN)
    parsed = _parse(fragment)
    (table,) = parsed.tables
    assert [cell[:2] for cell in table[0]] == [("th", "network"), ("th", "method"), ("th", "error"), ("th", "note")]
    assert [[cell[1] for cell in row] for row in table[1:]] == [["dense", "lrp.z", "1.5e-16", "a < b & c"],
                                                              ["conv2d", "lrp.eps", "nan", "<b>bold</b>"]]
    assert [cell[2] for cell in table[1]] == ["", "", "right", "center"]   # from the |---:| line's colons
    assert "<h1>Engine &lt;conformance&gt; &amp; more</h1>" in fragment
    assert "<h2>Per network</h2>" in fragment
    # a paragraph's lines are joined; its bar is text; `code` is <code>
    assert "<p>Computed by <code>xaibench conformance</code>; a note on two lines with a | bar.</p>" in fragment
    assert "<p>after the table</p>" in fragment


def test_markdown_text_is_escaped_and_never_becomes_markup():
    fragment = markdown_html(MARKDOWN)
    assert "a &lt; b &amp; c" in fragment and "&lt;b&gt;bold&lt;/b&gt;" in fragment
    assert "<b>" not in fragment and "<conformance>" not in fragment
    assert set(_parse(fragment).tags) <= {"h1", "h2", "p", "code", "div", "table", "thead", "tbody", "tr", "th", "td"}
    assert markdown_html("| a |\n|---|\n| `<script>x</script>` |\n").count("<script>") == 0


def test_a_header_only_table_and_a_bar_in_a_paragraph():
    (table,) = _parse(markdown_html("| only | header |\n| :--- | --- |\n\nsome | text\n")).tables
    assert len(table) == 1
    assert _parse(markdown_html("some text | with a bar\n\n")).tables == []


def test_a_csv_becomes_an_html_table_with_its_header_every_row_and_escaped_text(tmp_path):
    source = tmp_path / "comparison.csv"
    source.write_text('name,value,count,note\n<a>,0.123456789,3,x & y\nb,,4,"c, ""d"""\n')
    fragment = csv_html(source)
    (table,) = _parse(fragment).tables
    assert [cell[1] for cell in table[0]] == ["name", "value", "count", "note"]
    assert [[cell[1] for cell in row] for row in table[1:]] == [["<a>", "0.1235", "3", "x & y"],
                                                              ["b", "", "4", 'c, "d"']]
    assert [cell[2] for cell in table[1]] == ["", "right", "right", ""]   # numbers to the right
    assert "&lt;a&gt;" in fragment and "x &amp; y" in fragment and "<a>" not in fragment
    assert "2 rows, 4 columns" in fragment and "4 significant digits" in fragment


def test_a_page_is_standalone_and_self_contained(tmp_path):
    source = tmp_path / "table.md"
    source.write_text(MARKDOWN)
    out = write_table_page(source, tmp_path / "table.html")
    text = out.read_text()
    assert text.startswith("<!DOCTYPE html>") and text.rstrip().endswith("</html>")
    assert "<title>Engine &lt;conformance&gt; &amp; more</title>" in text   # the first heading
    assert "<style>" in text
    assert not re.search(r"<script|<link|@import|url\(|https?://", text)
    assert len(_parse(text).tables) == 1
    csv = tmp_path / "t.csv"
    csv.write_text("a,b\n1,2\n")
    assert "<h1>t.csv</h1>" in table_page(csv) and "<title>My &lt;table&gt;</title>" in table_page(csv, "My <table>")


def test_a_missing_or_unknown_source_is_refused_naming_it(tmp_path):
    with pytest.raises(InputError, match="absent.md"):
        table_page(tmp_path / "absent.md")
    (tmp_path / "t.txt").write_text("x")
    with pytest.raises(InputError, match="t.txt"):
        table_page(tmp_path / "t.txt")
    (tmp_path / "t.md").write_text("| a |\n|---|\n| 1 |\n")
    with pytest.raises(ValueError, match="html"):
        write_table_page(tmp_path / "t.md", tmp_path / "t.md.txt")


def test_the_command_writes_the_page(tmp_path):
    from xaibench import cli

    source = tmp_path / "t.md"
    source.write_text(MARKDOWN)
    assert cli.main(["report-table", str(source), "--out", str(tmp_path / "t.html")]) == 0
    assert len(_parse((tmp_path / "t.html").read_text()).tables) == 1


# --- every table item of the report is a page -----------------------------------------------------

TABLE_SUFFIXES = (".md", ".markdown", ".csv", ".tsv", ".txt")


def _report_paths() -> list[tuple[str, str]]:
    """(rule file, path) of every report(...) item whose first argument is a string."""
    items = []
    for path in rule_files():
        for call in report_calls(path):
            first = re.match(r"""\s*(?:expand\(\s*)?["']([^"']+)["']""", call)
            if first:
                items.append((path.name, first.group(1)))
    return items


def test_every_table_item_of_the_report_is_an_html_page():
    items = _report_paths()
    downloads = [(smk, path) for smk, path in items if path.lower().endswith(TABLE_SUFFIXES)]
    assert not downloads, ("the report shows these tables only as download links; make an .html page of each "
                           f"(xaibench report-table) and point report(...) at it: {downloads}")
    pages = [path for _, path in items if path.endswith(".html")]
    # the twelve tables: metrics, conformance, agreement, zoo, bench, bench_targets, correlations,
    # evaluation summary and quantus, the adjoint's two, the receptive fields
    assert len(pages) >= 12, pages


def test_each_page_is_made_from_its_table_beside_it_by_report_table():
    """A page's rule reads the .md or .csv of the same name in the same folder and runs
    `xaibench report-table`: the page shows the table the workflow wrote, not another."""
    pages = 0
    for path in rule_files():
        for rule in re.split(r"\n(?=rule |use rule )", path.read_text()):
            page = re.search(r"""report\(\s*["']([^"']+\.html)["']""", rule)
            if not page:
                continue
            pages += 1
            stem = page.group(1)[:-len(".html")]
            sources = [source for source in re.findall(r"""["']([^"']+\.(?:md|csv))["']""", rule)
                       if source.rsplit(".", 1)[0] == stem]
            assert sources, f"{path.name}: the rule of {page.group(1)} reads no {stem}.md or {stem}.csv"
            assert "xaibench report-table" in rule, f"{path.name}: {page.group(1)} is not made by report-table"
    assert pages >= 12, pages


# --- every table the README quotes is in the report -------------------------------------------------

#: tables the README names that are deliberately not report items, and why
NOT_IN_REPORT = {
    "results/engine/bench.csv": "the raw timings; the report shows bench.md, their table",
    "results/engine/bench_cuda.csv": "written by make bench-gpu on a GPU machine, outside the workflow",
    "results/evaluation/scores.csv": "one row per map and metric (thousands); the report shows summary.md",
    "results/mutation.md": "written by make test's mutation check, outside the workflow",
}


def test_every_table_the_readme_quotes_is_a_page_of_the_report():
    """A headline table the README points readers to (results/<folder>/<name>.md or .csv) is in
    the report as the page beside it, unless NOT_IN_REPORT says why not."""
    quoted = set(re.findall(r"results/[\w/.-]+\.(?:md|csv)", (ROOT / "README.md").read_text()))
    pages = {path for _, path in _report_paths() if path.endswith(".html")}
    missing = sorted(path for path in quoted - set(NOT_IN_REPORT)
                     if path.rsplit(".", 1)[0] + ".html" not in pages)
    assert not missing, f"the README quotes these tables, but the report does not hold them: {missing}"
    assert quoted >= set(NOT_IN_REPORT), sorted(set(NOT_IN_REPORT) - quoted)   # no stale exceptions
