"""`xaibench validate` as a researcher reads it (issue 20): a short console summary on a real
model (torchvision's resnet18), the details in verdict.csv / verdict.json, a self-contained
verdict.html beside them, and progress on stderr only for a terminal.

One validate run of resnet18 (random weights, one 3 x 32 x 32 sample, the default methods and
backends, the cascade cut to a few layers for speed) is shared by the tests of this module; it
runs in process (xaibench.cli.main), as tests/test_validate.py's bad-input tests do.
"""

from __future__ import annotations

import base64
import contextlib
import csv
import io
import json
import sys
from html.parser import HTMLParser

import numpy as np
import pytest
import torch
import xarray as xr
from safetensors.torch import save_file
from torch import nn

from xaibench import cli
from xaibench.studies.validate import DEFAULT_METHODS, validate

torchvision = pytest.importorskip("torchvision")

CASCADE = 4
#: a user string with markup in it: the folder of the model, weights and inputs
MARKUP = 'run<em>&amp;"'
FACTORY = """import torchvision


def build():
    return torchvision.models.resnet18(weights=None).eval()
"""


@pytest.fixture(scope="module")
def resnet(tmp_path_factory):
    """The CLI on resnet18: its exit status, stdout and stderr, and the output folder."""
    folder = tmp_path_factory.mktemp("summary") / MARKUP
    folder.mkdir()
    (folder / "factory.py").write_text(FACTORY)
    torch.manual_seed(0)
    save_file(torchvision.models.resnet18(weights=None).state_dict(), folder / "resnet18.safetensors")
    values = np.random.default_rng(0).normal(size=(1, 3, 32, 32)).astype(np.float32)
    xr.Dataset({"image": (("sample", "channel", "y", "x"), values)}).to_netcdf(folder / "image.nc",
                                                                             engine="h5netcdf")
    out = folder / "verdict"
    stdout, stderr = io.StringIO(), io.StringIO()
    threads = torch.get_num_threads()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        torch.set_num_threads(1)   # restored below: the same work, less contention on a small machine
        try:
            code = cli.main(["validate", f"{folder / 'factory.py'}:build", "--weights",
                             str(folder / "resnet18.safetensors"), "--inputs", str(folder / "image.nc"),
                             "--cascade", str(CASCADE), "--out", str(out)])
        finally:
            torch.set_num_threads(threads)
    return {"code": code, "stdout": stdout.getvalue(), "stderr": stderr.getvalue(), "out": out}


def _summary_rows(stdout: str) -> list[list[str]]:
    """The table rows of the summary: lines that start with a method name."""
    return [line.split() for line in stdout.splitlines() if line.split()[:1] and line.split()[0] in DEFAULT_METHODS]


def test_resnet18_summary_fits_a_screen_with_one_randomization_row_per_method(resnet):
    lines = resnet["stdout"].splitlines()
    assert len(lines) <= 40, resnet["stdout"]
    assert resnet["code"] == 1   # z+ and alpha1-beta0 do not change with the top layers (Sixt et al. 2020)
    assert "verdict: FAIL" in resnet["stdout"]
    rows = _summary_rows(resnet["stdout"])
    randomization = [row for row in rows if row[1].startswith("randomization")]
    assert sorted(row[0] for row in randomization) == sorted(DEFAULT_METHODS), resnet["stdout"]
    for row in rows:   # one row per method and check
        assert sum(other[:2] == row[:2] for other in rows) == 1, row
    # the row says where the map first changes enough, or that it never does
    for row in randomization:
        text = " ".join(row)
        assert "first below 0.9 at top" in text or "never below 0.9" in text, text
    assert "verdict.html" in resnet["stdout"]
    assert resnet["stderr"] == ""   # no progress when stderr is not a terminal


class _Page(HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags, self.images, self.text = [], [], []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        if tag == "img":
            self.images.append(dict(attrs))

    def handle_data(self, data):
        self.text.append(data)


def test_verdict_html_is_one_self_contained_readable_page(resnet):
    path = resnet["out"] / "verdict.html"
    page_text = path.read_text(encoding="utf-8")
    assert path.stat().st_size < 1_500_000
    page = _Page()
    page.feed(page_text)
    page.close()
    assert "script" not in page.tags and "link" not in page.tags
    assert "table" in page.tags
    for image in page.images:   # every image is embedded: nothing to fetch
        assert image["src"].startswith("data:image/png;base64,")
        assert base64.b64decode(image["src"].split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n"
    alts = [image.get("alt", "") for image in page.images]

    verdict = json.loads((resnet["out"] / "verdict.json").read_text())
    explained = {(c["method"], c["check"][len("agreement["):-1]) for c in verdict["checks"]
                 if c["check"].startswith("agreement[") and c["status"] in ("PASS", "FAIL", "KNOWN")}
    explained |= {(method, "native") for method in DEFAULT_METHODS}
    assert ("lrp.epsilon", "zennit") in explained and ("gradient", "captum") in explained
    for method, backend in explained:
        assert sum(alt == f"relevance map: {method}, {backend}" for alt in alts) == 1, (method, backend, alts)
    assert sum(alt.startswith("relevance map:") for alt in alts) == len(explained)
    assert "randomization curve" in alts
    assert "ledger: conservation residual per layer" in alts

    # the user's strings are text, never markup
    assert MARKUP not in page_text
    assert "run&lt;em&gt;&amp;amp;&quot;" in page_text
    assert "em" not in page.tags
    assert any(MARKUP in text for text in page.text)


def test_verdict_files_keep_every_randomization_layer(resnet):
    """verdict.csv/json hold one row per re-initialized layer (their columns and keys as before);
    verdict.json's summary holds the console's rows, each randomization row drawn from them."""
    verdict = json.loads((resnet["out"] / "verdict.json").read_text())
    layers = verdict["settings"]["layers_top_down"]
    assert layers[:2] == ["fc", "layer4.1.bn2"] and len(layers) == CASCADE
    with open(resnet["out"] / "verdict.csv", newline="") as file:
        table = list(csv.DictReader(file))
    assert list(table[0]) == ["method", "check", "status", "value", "tolerance", "comparison", "detail"]
    assert len(table) == len(verdict["checks"])
    for method in DEFAULT_METHODS:
        rows = [row for row in table if row["method"] == method and row["check"].startswith("randomization")]
        assert [row["check"] for row in rows] == [f"randomization[top {k}]" for k in range(1, CASCADE + 1)]
        for k, row in enumerate(rows, 1):
            assert row["detail"].startswith(f"re-initialized {layers[0]} (")
            assert all(f"{path} (" in row["detail"] for path in layers[:k])

        summary = [row for row in verdict["summary"] if row["method"] == method
                   and row["check"].startswith("randomization")]
        assert len(summary) == 1
        values = [float(row["value"]) for row in rows]
        below = [k for k, value in enumerate(values, 1) if value < 0.9]
        assert summary[0]["value"] == pytest.approx(max(values))
        assert summary[0]["levels"] == CASCADE
        assert summary[0]["first_below_level"] == (below[0] if below else None)
        assert summary[0]["first_below_layer"] == (layers[below[0] - 1] if below else None)
        assert summary[0]["status"] == ("PASS" if len(below) == CASCADE else "FAIL")
    assert verdict["exit_code"] == resnet["code"]


class _Terminal(io.StringIO):
    def isatty(self):
        return True


def test_progress_goes_to_a_terminal_stderr_only(monkeypatch, tmp_path):
    """Progress lines on stderr when it is a terminal, nothing on stdout; a 1-D input gets its
    maps drawn as lines in verdict.html."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(12, 8), nn.ReLU(), nn.Linear(8, 3)).eval()
    x = torch.randn(2, 12, generator=torch.Generator().manual_seed(0))
    terminal = _Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    report = validate(model, inputs=x, methods=["lrp.epsilon", "gradient"], backends=["zennit"], out=tmp_path)
    progress = terminal.getvalue()
    assert "[1/" in progress and "lrp.epsilon: randomization layer 2/2" in progress, progress
    assert report.exit_code in (0, 1)
    page = _Page()
    page.feed((tmp_path / "verdict.html").read_text(encoding="utf-8"))
    alts = [image.get("alt", "") for image in page.images]
    assert {"relevance map: lrp.epsilon, native", "relevance map: gradient, zennit"} <= set(alts)

    quiet = io.StringIO()   # not a terminal: nothing
    monkeypatch.setattr(sys, "stderr", quiet)
    validate(model, inputs=x, methods=["gradient"], backends=[])
    assert quiet.getvalue() == ""


def test_a_disagreement_from_zennits_gradient_fallback_names_the_fallback(resnet):
    """zennit has no rule for resnet18's functional residual sums and takes the plain gradient
    there (the census's 'zennit gradient fallback'): the FAIL says so, in the summary and in
    verdict.csv, instead of a bare number."""
    rows = {(row[0], row[1]): row for row in _summary_rows(resnet["stdout"])}
    failing = [key for key, row in rows.items() if key[1] == "agreement[zennit]" and row[5] == "FAIL"]
    assert ("lrp.epsilon", "agreement[zennit]") in failing
    for method, check in failing:
        line = next(line for line in resnet["stdout"].splitlines() if line.split()[:2] == [method, check])
        assert "zennit takes the plain gradient at 8 place(s) (8 operator.add) where it has no" in line, line
        assert len(line) < 200, line   # the list of places is in verdict.csv
    with open(resnet["out"] / "verdict.csv", newline="") as file:
        table = {(row["method"], row["check"]): row for row in csv.DictReader(file)}
    assert "zennit gradient fallback: " in table[("lrp.epsilon", "agreement[zennit]")]["detail"]
    # where zennit agrees, nothing is said of a fallback
    assert "fallback" not in table[("gradient", "agreement[zennit]")]["detail"]
