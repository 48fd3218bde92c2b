"""The Snakemake workflow: lint-clean, the configuration validated before any job, and the
quick configuration plans the whole reproduction (a dry run; nothing is computed)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
SNAKEMAKE = Path(sys.executable).with_name("snakemake")

pytestmark = pytest.mark.skipif(not SNAKEMAKE.exists(), reason="snakemake is installed by make setup")


def _snakemake(*args, cwd=ROOT):
    env = {**os.environ, "PATH": f"{SNAKEMAKE.parent}{os.pathsep}{os.environ['PATH']}"}
    return subprocess.run([str(SNAKEMAKE), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def _workflow_copy(tmp_path):
    """The workflow files (and the committed baseline the regression rule reads) in a scratch
    folder, so a dry run never touches results/ here."""
    for name in ("Snakefile", "workflows", "results/baseline"):
        source = ROOT / name
        if source.is_dir():
            shutil.copytree(source, tmp_path / name)   # creates results/ for the baseline
        else:
            shutil.copy(source, tmp_path / name)
    return tmp_path


def test_lint_is_clean():
    result = _snakemake("--lint", "--configfile", "workflows/config/quick.yaml")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Congratulations" in result.stdout + result.stderr


def test_quick_configuration_plans_the_whole_reproduction(tmp_path):
    folder = _workflow_copy(tmp_path)
    result = _snakemake("-n", "--cores", "2", "--configfile", "workflows/config/quick.yaml", cwd=folder)
    assert result.returncode == 0, result.stderr[-2000:]
    plan = result.stdout
    for rule, count in (("data", 4), ("train_model", 5), ("explain_model", 5), ("metrics_model", 5),
                        ("figure_radar", 3), ("conformance", 1), ("census", 1), ("bench", 1)):
        assert any(line.split() == [rule, str(count)] for line in plan.splitlines()), (rule, plan[-3000:])


@pytest.mark.parametrize("path, value, named", [
    (("cases", "training", "enso", "epochs"), 0, "epochs"),
    (("cases", "explain", "backends"), ["native", "captum"], "captum"),
    (("bench", "repeats"), "three", "repeats"),
])
def test_a_bad_configuration_stops_before_any_job_naming_the_key(tmp_path, path, value, named):
    folder = _workflow_copy(tmp_path)
    config = yaml.safe_load((folder / "workflows/config/quick.yaml").read_text())
    node = config
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    (folder / "bad.yaml").write_text(yaml.safe_dump(config))
    result = _snakemake("-n", "--cores", "1", "--configfile", "bad.yaml", cwd=folder)
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert named in output and "Job stats" not in output, output[-2000:]
    assert [path.name for path in (folder / "results").iterdir()] == ["baseline"]   # no job ran


def _captions():
    """(rule file, caption path) of every report(...) output: `snakemake --report` reads them
    only after the whole reproduction ran, so a broken one would fail `make reproduce` last."""
    import re

    found = []
    for smk in sorted((ROOT / "workflows").glob("*.smk")):
        for caption in re.findall(r'caption="([^"]+)"', smk.read_text()):
            found.append((smk.name, caption))
    return found


def _render_caption(path, wildcards):
    """What snakemake does with a caption: a Jinja template (with `snakemake.wildcards`), then
    reStructuredText to HTML; here any docutils warning or error raises."""
    from types import SimpleNamespace

    import jinja2
    from docutils.core import publish_parts

    template = jinja2.Environment(undefined=jinja2.StrictUndefined).from_string(path.read_text())
    text = template.render(snakemake=SimpleNamespace(wildcards=SimpleNamespace(**wildcards)))
    return publish_parts(text, writer_name="html",
                         settings_overrides={"halt_level": 2, "report_level": 5})["body"]


def test_every_report_caption_exists_and_renders_without_warnings():
    captions = _captions()
    assert len(captions) >= 10, captions
    for smk, caption in captions:
        # snakemake does not fill wildcards into the caption's path: one file per rule, which
        # branches on snakemake.wildcards inside (groundtruth_figure.rst)
        assert "{" not in caption, f"{smk}: caption path {caption!r} has a wildcard"
        path = ROOT / "workflows" / caption
        assert path.is_file(), f"{smk}: caption {caption} is missing"
        if "snakemake.wildcards" not in path.read_text():
            assert _render_caption(path, {}).strip(), caption


def test_the_ground_truth_figure_caption_has_a_text_for_each_figure():
    import re

    constraint = re.search(r'kind="([^"]+)"', (ROOT / "workflows" / "groundtruth.smk").read_text()).group(1)
    kinds = constraint.split("|")
    texts = {kind: _render_caption(ROOT / "workflows" / "report" / "groundtruth_figure.rst", {"kind": kind})
             for kind in kinds}
    assert set(kinds) == {"histograms", "maps", "faithfulness"}
    assert all(len(text) > 200 for text in texts.values()), texts
    assert len(set(texts.values())) == len(kinds)


def test_the_quick_configuration_sets_every_key_the_default_one_sets():
    """snakemake merges --configfile into the Snakefile's default.yaml key by key: a key only
    default.yaml sets would silently run the paper-scale value in the quick reproduction (it
    happened: a cosine learning-rate schedule leaked into the quick ground-truth training)."""
    default = yaml.safe_load((ROOT / "workflows" / "config" / "default.yaml").read_text())
    quick = yaml.safe_load((ROOT / "workflows" / "config" / "quick.yaml").read_text())

    def leaks(full, small, path=()):
        for key, value in full.items():
            if key not in small:
                yield ".".join(path + (key,))
            elif isinstance(value, dict) and isinstance(small[key], dict):
                yield from leaks(value, small[key], path + (key,))

    assert not list(leaks(default, quick)), "set in default.yaml but not in quick.yaml"
