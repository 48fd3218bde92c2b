"""The Snakemake workflow: lint-clean, the configuration validated before any job, and the
quick configuration plans the whole reproduction (a dry run; nothing is computed). Each run sees
exactly one complete configuration file: the schema has no defaults and requires every key, and
a --configfile is not merged into default.yaml."""

from __future__ import annotations

import json
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
    # six networks: enso, convection, radar1-3 and the transformer radar_vit (four radar figures)
    # quick: one explanation chunk per network and the ground truth (cases.explain.chunks = 1), each gathered
    for rule, count in (("data", 4), ("train_model", 6), ("explain_model_chunk", 6), ("gather_explanations", 6),
                        ("explain_groundtruth_chunk", 1), ("groundtruth_gather", 1), ("metrics_model", 6),
                        ("figure_radar", 4), ("receptive_field_measure", 4), ("conformance", 1), ("census", 1),
                        ("bench", 1)):
        assert any(line.split() == [rule, str(count)] for line in plan.splitlines()), (rule, plan[-3000:])


MISSING = object()   # the key left out


@pytest.mark.parametrize("path, value, named", [
    (("cases", "training", "enso", "epochs"), 0, "epochs"),
    (("cases", "explain", "backends"), ["native", "lxt"], "lxt"),
    (("bench", "repeats"), "three", "repeats"),
    (("cases", "explain", "chunks"), 0, "chunks"),
    (("groundtruth", "explain", "batch_size"), MISSING, "batch_size"),
    # default.yaml sets it (cosine): a merge into default.yaml would run the paper-scale value
    (("groundtruth", "training", "lr_schedule"), MISSING, "lr_schedule"),
    (("adjoint", "bogus"), 1, "bogus"),
])
def test_a_bad_configuration_stops_before_any_job_naming_the_key(tmp_path, path, value, named):
    folder = _workflow_copy(tmp_path)
    config = yaml.safe_load((folder / "workflows/config/quick.yaml").read_text())
    node = config
    for key in path[:-1]:
        node = node[key]
    if value is MISSING:
        del node[path[-1]]
    else:
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


@pytest.mark.parametrize("caption", ["radar_relevance.rst", "receptive_fields.rst"])
@pytest.mark.parametrize("model", ["radar1", "radar2", "radar3", "radar_vit"])
def test_the_radar_captions_render_for_every_radar_network(caption, model):
    """They branch on snakemake.wildcards.model (radar_vit has its own text): each branch must be
    valid reStructuredText (radar_vit's left an indented line after its branch: a docutils error
    in the report)."""
    text = _render_caption(ROOT / "workflows" / "report" / caption, {"model": model})
    assert ("radar_vit" in text) == (model == "radar_vit")


def test_the_ground_truth_figure_caption_has_a_text_for_each_figure():
    import re

    constraint = re.search(r'kind="([^"]+)"', (ROOT / "workflows" / "groundtruth.smk").read_text()).group(1)
    kinds = constraint.split("|")
    texts = {kind: _render_caption(ROOT / "workflows" / "report" / "groundtruth_figure.rst", {"kind": kind})
             for kind in kinds}
    assert set(kinds) == {"histograms", "maps", "faithfulness"}
    assert all(len(text) > 200 for text in texts.values()), texts
    assert len(set(texts.values())) == len(kinds)


# --- complete configurations: the schema requires every key, and a run sees one file only -----

CONFIG = ROOT / "workflows" / "config"
SCHEMA = CONFIG / "schema.yaml"


def _load(name):
    return yaml.safe_load((CONFIG / f"{name}.yaml").read_text())


def _validate(config):
    """What the Snakefile does before any job: snakemake.utils.validate against the schema."""
    from snakemake.utils import validate

    validate(config, schema=str(SCHEMA))


def _leaf_paths(node, path=()):
    """Every key of a configuration whose value is not a non-empty mapping (a leaf)."""
    for key, value in node.items():
        if isinstance(value, dict) and value:
            yield from _leaf_paths(value, path + (key,))
        else:
            yield path + (key,)


def _mapping_paths(node, path=()):
    """Every mapping of a configuration (the top level included)."""
    yield path
    for key, value in node.items():
        if isinstance(value, dict):
            yield from _mapping_paths(value, path + (key,))


# collections keyed by name (a new key there is a new data set or evaluation set, not a typo)
NAMED_COLLECTIONS = {("cases", "data")} | {("cases", "training", model, "eval")
                                           for model in _load("quick")["cases"]["training"]}
# collections whose entries are free and optional: the cases the evaluation scores (each with its
# sample count; a name that is no trained model is refused by workflows/evaluation_helpers.smk) and
# the per-metric options (a metric name the registry lacks is refused by the schema's propertyNames)
OPEN_COLLECTIONS = {("evaluation", "cases"), ("evaluation", "options")}


def _inside_open(path) -> bool:
    return any(len(path) > len(open_) and path[:len(open_)] == open_ for open_ in OPEN_COLLECTIONS)


def _keys(config) -> list:
    """The leaf paths a configuration must have: inside an open collection only the collection."""
    leaves = {path for path in _leaf_paths(config) if not _inside_open(path)}
    return sorted(leaves | {path for path in OPEN_COLLECTIONS if path[-1] in _node(config, path[:-1])})


QUICK_LEAVES = [path for path in _leaf_paths(_load("quick")) if not _inside_open(path)]
QUICK_MAPPINGS = [path for path in _mapping_paths(_load("quick"))
                  if path not in NAMED_COLLECTIONS and path not in OPEN_COLLECTIONS and not _inside_open(path)]


def _node(config, path):
    for key in path:
        config = config[key]
    return config


def test_the_schema_holds_no_defaults():
    text = SCHEMA.read_text()
    assert "default:" not in text and "DEFAULTS" not in text


@pytest.mark.parametrize("name", ["default", "quick"])
def test_both_configurations_validate_and_are_left_as_written(name):
    config = _load(name)
    _validate(config)
    assert config == _load(name)   # nothing filled in


def test_the_two_configurations_have_the_same_keys():
    assert _keys(_load("default")) == _keys(_load("quick"))


def test_an_evaluation_option_of_an_unknown_metric_is_refused_and_the_schema_knows_every_metric():
    from snakemake.exceptions import WorkflowError

    from xaibench.metrics.evaluation import metrics

    schema = yaml.safe_load(SCHEMA.read_text())
    named = schema["properties"]["evaluation"]["properties"]["options"]["propertyNames"]["enum"]
    assert sorted(named) == sorted(metrics())
    config = _load("quick")
    config["evaluation"]["options"]["faithfulness_corelation"] = {"runs": 5}
    with pytest.raises(WorkflowError) as refused:
        _validate(config)
    assert "faithfulness_corelation" in str(refused.value)


@pytest.mark.parametrize("path", QUICK_LEAVES, ids=".".join)
def test_a_configuration_missing_any_key_is_refused_naming_it(path):
    from snakemake.exceptions import WorkflowError

    assert len(QUICK_LEAVES) > 80
    config = _load("quick")
    del _node(config, path[:-1])[path[-1]]
    with pytest.raises(WorkflowError) as refused:
        _validate(config)
    assert f"'{path[-1]}' is a required property" in str(refused.value)


@pytest.mark.parametrize("path", QUICK_MAPPINGS, ids=lambda path: ".".join(path) or "top")
def test_an_unknown_key_is_refused_naming_it(path):
    from snakemake.exceptions import WorkflowError

    config = _load("quick")
    _node(config, path)["no_such_setting"] = 1
    with pytest.raises(WorkflowError) as refused:
        _validate(config)
    assert "'no_such_setting' was unexpected" in str(refused.value)


def _shell_commands(*args, folder):
    result = _snakemake("-n", "-p", "--cores", "2", *args, cwd=folder)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    assert "is extended by additional config" not in output and "is replaced by" not in output, output[:2000]
    return [line.split("Shell command: ", 1)[1] for line in result.stdout.splitlines()
            if line.startswith("Shell command: ")]


def _command(commands, start):
    found = [command for command in commands if command.startswith(start)]
    assert len(found) == 1, (start, found)
    return found[0]


def _check_commands_follow(config, commands):
    """The job commands carry config's values (values that differ between the two files)."""
    bench = _command(commands, "xaibench bench ")
    assert f"--repeats {config['bench']['repeats']} " in bench
    assert f"--batch-scale {config['bench']['batch_scale']} " in bench
    training = config["groundtruth"]["training"]
    train = _command(commands, "xaibench train groundtruth ")
    assert f"--epochs {training['epochs']} " in train and f"--lr-schedule {training['lr_schedule']} " in train
    adjoint = _command(commands, "xaibench adjoint ")
    assert json.loads(adjoint.split("--config '", 1)[1].split("' --out", 1)[0]) == config["adjoint"]
    trained = sorted(command.split()[2] for command in commands if command.startswith("xaibench train ")
                     and not command.startswith("xaibench train groundtruth "))
    assert trained == sorted(config["cases"]["training"])
    for model, settings in config["cases"]["training"].items():
        assert f"--epochs {settings['epochs']} " in _command(commands, f"xaibench train {model} ")


def test_the_values_compared_differ_between_the_two_configurations():
    quick, default = _load("quick"), _load("default")
    assert quick["bench"]["repeats"] != default["bench"]["repeats"]
    assert quick["groundtruth"]["training"]["lr_schedule"] != default["groundtruth"]["training"]["lr_schedule"]
    assert quick["adjoint"] != default["adjoint"]
    assert quick["cases"]["training"]["radar1"]["epochs"] != default["cases"]["training"]["radar1"]["epochs"]


def test_the_quick_run_sees_exactly_quick_yaml(tmp_path):
    folder = _workflow_copy(tmp_path)
    commands = _shell_commands("--configfile", "workflows/config/quick.yaml", folder=folder)
    _check_commands_follow(_load("quick"), commands)


def test_a_plain_run_sees_exactly_default_yaml(tmp_path):
    folder = _workflow_copy(tmp_path)
    commands = _shell_commands(folder=folder)
    _check_commands_follow(_load("default"), commands)


def test_a_configfile_is_not_merged_into_default_yaml(tmp_path):
    """A valid configuration that trains fewer networks than default.yaml: a key-by-key merge
    would add default.yaml's radar3 to the plan."""
    folder = _workflow_copy(tmp_path)
    config = _load("quick")
    del config["cases"]["training"]["radar3"]
    del config["evaluation"]["cases"]["radar3"]
    (folder / "two_radars.yaml").write_text(yaml.safe_dump(config))
    commands = _shell_commands("--configfile", "two_radars.yaml", folder=folder)
    _check_commands_follow(config, commands)
    assert not any("radar3" in command for command in commands)


def test_an_evaluated_case_that_is_not_trained_is_refused_naming_it(tmp_path):
    folder = _workflow_copy(tmp_path)
    config = _load("quick")
    del config["cases"]["training"]["radar3"]
    (folder / "untrained.yaml").write_text(yaml.safe_dump(config))
    result = _snakemake("-n", "--cores", "2", "--configfile", "untrained.yaml", cwd=folder)
    assert result.returncode != 0
    assert "evaluation: unknown case(s) radar3" in result.stdout + result.stderr
