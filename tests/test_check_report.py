"""The report's browser check (tools/check_report.py, `make check-report`): the parts that need no
browser. The check itself runs Chromium on a built report; its run and the defects it was shown to
catch (a corrupted figure, a table item without rows, a category missing, a figure whose top cannot
be scrolled to, a console error) are described in README "Workflow, regression gate, cluster"."""

from __future__ import annotations

import base64
import importlib.util
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _tool():
    if "check_report" not in sys.modules:   # registered first: its dataclass looks itself up there
        spec = importlib.util.spec_from_file_location("check_report", ROOT / "tools" / "check_report.py")
        sys.modules["check_report"] = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(sys.modules["check_report"])
    return sys.modules["check_report"]


def test_markdown_tables_counts_the_rows_of_each_pipe_table():
    tool = _tool()
    text = ("# Title\n\nsome text | with a bar\n\n| a | b |\n|---|--:|\n| 1 | 2 |\n| 3 | 4 |\n\n"
            "| only | header |\n| :--- | --- |\n\nafter\n")
    assert tool.markdown_tables(text) == [2, 0]
    assert tool.markdown_tables("no table here\n|---|\n") == []


def test_a_table_item_without_rows_fails_and_names_the_item():
    tool = _tool()
    findings = tool.Findings()
    tool.check_table_file("results/x.md", "text/markdown", b"# x\n\nnothing computed\n", findings)
    tool.check_table_file("results/y.csv", "text/csv", b"a,b\n", findings)
    tool.check_table_file("results/z.csv", "text/csv", b"a,b\n1,2\n3\n", findings)
    tool.check_table_file("results/ok.csv", "text/csv", b"a,b\n1,2\n", findings)
    assert findings.tables_ok == 1
    assert [failure.split(":")[0] for failure in findings.failures] == ["results/x.md", "results/y.csv",
                                                                       "results/z.csv"]


def test_data_uris_decode_as_the_report_embeds_them():
    tool = _tool()
    payload = b"| a |\n|---|\n| 1 |\n"
    uri = "data:text/markdown;charset=utf8;filename=t.md;base64," + base64.b64encode(payload).decode()
    assert tool.decode_data_uri(uri) == payload
    assert tool.decode_data_uri("data:text/plain,a%20b") == b"a b"


def test_the_categories_the_workflow_declares_are_read_without_subcategories():
    declared = _tool().workflow_categories(ROOT / "workflows")
    assert {"Adjoint", "Relevance", "Metrics", "Engine", "Census", "Evaluation", "Ground truth",
            "Receptive fields"} <= set(declared)
    assert not {"maps", "ENSO", "radar", "convection"} & set(declared)   # subcategory="..." values


def _dry_run(*args):
    return subprocess.run(["make", "-n", "-B", "--no-print-directory", *args], cwd=ROOT, capture_output=True,
                          text=True, check=True).stdout.replace("\\\n", " ")


def test_check_report_builds_a_missing_report_as_reproduce_does_and_installs_chromium_when_missing():
    report = [line for line in _dry_run("-o", ".venv/.stamp-editable", "results/report.html").splitlines()
              if "snakemake" in line]
    reproduce = [line for line in _dry_run("-o", "setup", "reproduce").splitlines() if "--report" in line]
    assert len(report) == 1 and [" ".join(line.split()) for line in report] == \
        [" ".join(line.split()) for line in reproduce]
    assert "--report-stylesheet workflows/report/report.css" in report[0]
    assert (ROOT / "workflows" / "report" / "report.css").is_file()
    check = _dry_run("-o", ".venv/.stamp-report", "-o", "results/report.html", "check-report")
    assert "apt-get install -y -qq chromium chromium-driver" in check
    assert "tools/check_report.py results/report.html" in check
