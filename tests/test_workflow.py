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
