"""`xaibench validate` on a model defined outside xaibench (tests/external_model), as a
researcher runs it before publishing a relevance map.

The end-to-end tests start the real command in a subprocess from tests/ (so that
`external_model.my_cnn:build` imports as the researcher's package would); the many bad-input
cases call xaibench.cli.main in process, which is the same code without the 4 s import.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import xarray as xr
from external_model import my_cnn, two_inputs
from safetensors.torch import save_file
from strategies import batchnorm_cnn, documented_difference_examples, full_snapshot, unchanged, upsampling_cnn

from xaibench import api, cli
from xaibench.errors import BackendUnavailableError, ExportError, InputError, UnsupportedLayerError
from xaibench.metrics import spearman_per_sample
from xaibench.studies.validate import DEFAULT_METHODS, validate

TESTS = Path(__file__).resolve().parent
SAMPLES = 5


def _inputs(path, values, name="sst"):
    samples = values.shape[0]
    dataset = xr.Dataset(
        {name: (("time", "lat", "lon"), values, {"units": "K", "long_name": "sea surface temperature anomaly"})},
        coords={"time": np.arange(samples), "lat": np.linspace(-17.5, 17.5, values.shape[1]),
                "lon": np.linspace(150.0, 185.0, values.shape[2])})
    dataset.to_netcdf(path, engine="h5netcdf")
    return path


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("validate")
    torch.manual_seed(0)
    model = my_cnn.build()
    torch.manual_seed(1)
    calibrated = my_cnn.build_calibrated()
    values = np.random.default_rng(0).normal(size=(SAMPLES, 8, 8)).astype(np.float32)
    with_nan = values.copy()
    with_nan[3, 2, 5] = np.nan
    paths = {
        "weights": folder / "cnn.safetensors",
        "checkpoint": folder / "cnn.pt",
        "calibrated": folder / "calibrated.safetensors",
        "softshrink": folder / "softshrink.safetensors",
        "other_model": folder / "other.safetensors",
        "inputs": _inputs(folder / "sst.nc", values),
        "nan_inputs": _inputs(folder / "sst_nan.nc", with_nan),
        "wrong_shape": _inputs(folder / "sst_7x7.nc", values[:, :7, :7]),
    }
    save_file(model.state_dict(), paths["weights"])
    torch.save({"state_dict": model.state_dict(), "epoch": 3}, paths["checkpoint"])  # a usual checkpoint
    save_file(calibrated.state_dict(), paths["calibrated"])
    save_file(my_cnn.build_with_softshrink().state_dict(), paths["softshrink"])
    save_file(my_cnn.build(hidden=8).state_dict(), paths["other_model"])
    return paths


def _run(*args, cwd=TESTS):
    """The command as a researcher runs it, from the folder that holds their package."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "xaibench.cli", "validate", *map(str, args)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600)


def _sha256(path):
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


# --- end to end --------------------------------------------------------------------------------
def test_cli_passes_on_a_small_cnn_and_writes_the_verdict(files, tmp_path):
    """Every backend in BACKENDS is tried (a backend not installed here is SKIPPED, not failed);
    methods that are sensitive to the top layers pass all checks: exit 0."""
    before = _sha256(files["inputs"])
    out = tmp_path / "verdict"
    result = _run("external_model.my_cnn:build", "--weights", files["weights"], "--inputs", files["inputs"],
                  "--method", "lrp.epsilon", "gradient", "--method", "input_x_gradient", "--out", out)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "verdict: PASS" in result.stdout
    assert _sha256(files["inputs"]) == before  # the input file is only read

    verdict = json.loads((out / "verdict.json").read_text())
    assert verdict["verdict"] == "PASS" and verdict["exit_code"] == 0
    assert verdict["settings"]["dtype"] == "float64"
    assert verdict["settings"]["input_note"].startswith("a channel axis")
    checks = {(c["method"], c["check"]): c for c in verdict["checks"]}
    for method in ("lrp.epsilon", "gradient", "input_x_gradient"):
        for backend in api.BACKENDS[1:]:
            assert checks[(method, f"agreement[{backend}]")]["status"] in ("PASS", "SKIPPED")
        assert checks[(method, "agreement[zennit]")]["status"] == "PASS"
        assert checks[(method, "randomization[top 1]")]["status"] == "PASS"
        assert (method, "randomization[top 4]") in checks  # the cascade reaches conv1
    epsilon = checks[("lrp.epsilon", "conservation")]
    assert epsilon["status"] == "PASS" and epsilon["value"] <= 1e-10 and epsilon["tolerance"] == 1e-10
    absorbed = checks[("lrp.epsilon", "absorbed")]
    assert absorbed["status"] == "INFO" and "bias" in absorbed["detail"]
    assert checks[("gradient", "conservation")]["status"] == "SKIPPED"

    lines = (out / "verdict.csv").read_text().splitlines()
    assert lines[0] == "method,check,status,value,tolerance,comparison,detail"
    assert len(lines) == 1 + len(verdict["checks"])

    # relevance maps carry the input's dimensions and coordinates, not the model's channel axis
    with xr.open_dataset(files["inputs"], engine="h5netcdf") as original, \
            xr.open_dataset(out / "relevance_lrp.epsilon.nc", engine="h5netcdf") as maps:
        assert maps["relevance"].dims == ("time", "lat", "lon")
        np.testing.assert_array_equal(maps["lat"].values, original["lat"].values)
        assert maps["output"].dims == ("time",) and maps["target"].dims == ("time",)
        assert np.isfinite(maps["relevance"].values).all()
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]  # atomic: no leftovers


def test_cli_fails_when_randomizing_the_top_layer_cannot_change_the_map(files):
    """The calibrated model's top layer is a positive affine map of one value: re-initializing
    it only rescales every attribution, so the Spearman correlation is 1 and the check fails
    (exit 1) for every method; one layer further down, the maps change."""
    result = _run("external_model.my_cnn:build_calibrated", "--weights", files["calibrated"], "--inputs",
                  files["inputs"], "--backends", "zennit", "--cascade", "2")
    assert result.returncode == 1, result.stdout + result.stderr
    assert "verdict: FAIL" in result.stdout
    table = [line.split() for line in result.stdout.splitlines()]
    cascade = {row[0]: row for row in table if len(row) > 4 and row[1] == "randomization"}
    assert set(cascade) == set(DEFAULT_METHODS)
    # one row per method: the most similar level's value (1), the verdict, where the map first changes
    assert all(row[2] == "1" and row[5] == "FAIL" and " ".join(row[6:9]) == "first below 0.9"
               and " ".join(row[9:11]) == "at top" and row[11] == "2:" for row in cascade.values()), cascade
    assert "hardly changes when the top layer(s) 5 (BatchNorm1d) are re-initialized" in result.stdout
    assert result.stderr == ""


def test_cli_bad_input_is_one_line_and_status_2(files, tmp_path):
    result = _run("external_model.my_cnn:build", "--weights", tmp_path / "missing.safetensors",
                  "--inputs", files["inputs"])
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0, result.stderr
    assert "weights file" in result.stderr and "missing.safetensors" in result.stderr
    assert "Traceback" not in result.stderr


def test_cli_imports_a_factory_from_a_python_file(files, tmp_path):
    """MODULE may be a path to a .py file; here run from an unrelated folder, with a .pt
    checkpoint ({'state_dict': ...}) and factory keyword arguments."""
    code = cli.main(["validate", f"{TESTS / 'external_model' / 'my_cnn.py'}:build", "--weights",
                     str(files["checkpoint"]), "--inputs", str(files["inputs"]), "--method", "gradient",
                     "--backends", "zennit", "--factory-kwargs", '{"hidden": 16}', "--samples", "2",
                     "--dtype", "float32"])
    assert code == 0


def test_cli_metrics_adds_the_skill_table_and_metrics_csv(files, tmp_path, capsys):
    """--metrics NAMES: the console shows a skill score per method and metric under the verdict,
    metrics.csv holds the values; the verdict's exit status is that of the checks."""
    code = cli.main(["validate", f"{TESTS / 'external_model' / 'my_cnn.py'}:build", "--weights",
                     str(files["weights"]), "--inputs", str(files["inputs"]), "--method", "gradient", "lrp.epsilon",
                     "--backends", "zennit", "--samples", "3", "--metrics", "sparseness,complexity",
                     "--out", str(tmp_path)])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "evaluation metrics: skill score" in out
    table = (tmp_path / "metrics.csv").read_text().splitlines()
    assert table[0].startswith("method,metric,category,value,random_value,skill_score")
    assert len(table) == 1 + 2 * 2


# --- bad input: one line on stderr, exit 2, no traceback ---------------------------------------
def test_a_variable_named_like_its_dimension_is_explained_not_called_zero_variables(files, tmp_path, capsys,
                                                                                     monkeypatch):
    """sst(sst, lat, lon): xarray reads it as a coordinate and the file has 0 data variables; the
    error says why and how to rename it, instead of only '0 data variables'."""
    import h5netcdf

    path = tmp_path / "same_name.nc"
    with h5netcdf.File(path, "w") as file:
        file.dimensions = {"sst": SAMPLES, "lat": 8, "lon": 8}
        file.create_variable("sst", ("sst", "lat", "lon"), float)[...] = np.zeros((SAMPLES, 8, 8))
    for extra in ((), ("--variable", "sst")):
        line = _bad(capsys, monkeypatch, "external_model.my_cnn:build", "--weights", files["weights"], "--inputs",
                    path, *extra)
        assert "'sst' has the name of a dimension" in line and "coordinate" in line
        assert f"ncrename -d sst,sample {path}" in line


def test_an_unknown_evaluation_metric_is_bad_input(files, capsys, monkeypatch):
    line = _bad(capsys, monkeypatch, "external_model.my_cnn:build", "--weights", files["weights"], "--inputs",
                files["inputs"], "--metrics", "sparseness,flatness")
    assert "unknown evaluation metric(s) flatness" in line


def _bad(capsys, monkeypatch, *args):
    monkeypatch.chdir(TESTS)
    code = cli.main(["validate", *map(str, args)])
    captured = capsys.readouterr()
    assert code == 2, captured.out + captured.err
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("xaibench validate: error: "), captured.err
    return lines[0]


def test_unknown_factory(files, capsys, monkeypatch):
    line = _bad(capsys, monkeypatch, "external_model.my_cnn:build_unet", "--weights", files["weights"],
                "--inputs", files["inputs"])
    assert "no factory 'build_unet'" in line and "build_calibrated" in line  # it lists what there is
    line = _bad(capsys, monkeypatch, "no_such_package.models:build", "--weights", files["weights"],
                "--inputs", files["inputs"])
    assert "cannot import module 'no_such_package.models'" in line
    line = _bad(capsys, monkeypatch, "external_model.my_cnn:not_a_model", "--weights", files["weights"],
                "--inputs", files["inputs"])
    assert "returned str, not a torch.nn.Module" in line
    assert "MODULE:FACTORY" in _bad(capsys, monkeypatch, "external_model.my_cnn", "--weights", files["weights"],
                                    "--inputs", files["inputs"])


def test_weights_that_do_not_fit_name_the_keys(files, capsys, monkeypatch, tmp_path):
    line = _bad(capsys, monkeypatch, "external_model.my_cnn:build", "--weights", files["other_model"],
                "--inputs", files["inputs"])
    assert "shape mismatch: fc1.weight (file (8, 32), model (16, 32))" in line
    renamed = {("head." + k if k.startswith("fc2") else k): v for k, v in my_cnn.build().state_dict().items()}
    save_file(renamed, tmp_path / "renamed.safetensors")
    line = _bad(capsys, monkeypatch, "external_model.my_cnn:build", "--weights", tmp_path / "renamed.safetensors",
                "--inputs", files["inputs"])
    assert "missing keys: fc2.weight, fc2.bias" in line
    assert "unexpected keys: head.fc2.bias, head.fc2.weight" in line  # safetensors sorts the names


def test_a_pickle_that_runs_code_is_refused(files, capsys, monkeypatch, tmp_path):
    marker = tmp_path / "code_ran"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    evil = tmp_path / "evil.pt"
    torch.save({"fc1.weight": Payload()}, evil)
    line = _bad(capsys, monkeypatch, "external_model.my_cnn:build", "--weights", evil, "--inputs", files["inputs"])
    assert "refused to load weights" in line and "weights_only" in line
    assert not marker.exists()


def test_inputs_that_do_not_fit(files, capsys, monkeypatch, tmp_path):
    common = ("external_model.my_cnn:build", "--weights", files["weights"])
    line = _bad(capsys, monkeypatch, *common, "--inputs", files["wrong_shape"])
    assert "of shape (5, 7, 7) (time, lat, lon) do not fit the model" in line
    # each shape tried, with why the model refused it: here the dense layer after the pooling
    assert "(5, 1, 7, 7): RuntimeError: mat1 and mat2 shapes cannot be multiplied" in line
    line = _bad(capsys, monkeypatch, *common, "--inputs", files["nan_inputs"])
    assert "NaN or Inf in sample(s) [3] (dimension 'time')" in line
    line = _bad(capsys, monkeypatch, *common, "--inputs", tmp_path / "nowhere.nc")
    assert "inputs file" in line and "does not exist" in line
    line = _bad(capsys, monkeypatch, *common, "--inputs", files["inputs"], "--variable", "t2m")
    assert "no data variable 't2m'; it has: sst" in line
    line = _bad(capsys, monkeypatch, *common, "--inputs", files["inputs"], "--target", "7")
    assert "target index [7] out of range" in line
    line = _bad(capsys, monkeypatch, *common, "--inputs", files["inputs"], "--method", "lrp.nonsense")
    assert "unknown method(s) lrp.nonsense" in line
    line = _bad(capsys, monkeypatch, *common, "--inputs", files["inputs"], "--tolerance", "speed=3")
    assert "unknown tolerance(s) speed" in line


# --- the Python function -----------------------------------------------------------------------
def test_python_function_leaves_the_model_alone(files, tmp_path):
    torch.manual_seed(0)
    model = my_cnn.build().train()  # training mode, and a hook, as the user left them
    calls = []
    model.fc2.register_forward_hook(lambda *args: calls.append(1))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    report = validate(model, inputs=files["inputs"], methods=["lrp.epsilon", "lrp.zplus"], backends=["zennit"],
                      cascade=1, out=tmp_path)
    assert model.training and all(m.training for m in model.modules())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert len(model.fc2._forward_hooks) == 1  # its hook is still there (copies run it too, as the model would)

    rows = {(c.method, c.check): c for c in report.checks}
    assert rows[("lrp.epsilon", "randomization[top 1]")].status == "PASS"
    # z+ is known to be insensitive to the top layer (Sixt et al. 2020): the check must say so
    zplus = rows[("lrp.zplus", "randomization[top 1]")]
    assert zplus.status == "FAIL" and zplus.value >= 0.9
    assert report.exit_code == 1 and not report.passed
    assert "lrp.zplus: the relevance hardly changes" in report.table()
    assert (tmp_path / "relevance_lrp.zplus.nc").exists()
    assert json.loads((tmp_path / "verdict.json").read_text())["verdict"] == "FAIL"


def test_python_function_takes_a_factory_an_array_and_float32():
    x = torch.randn(3, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    torch.manual_seed(0)
    report = validate(my_cnn.build, inputs=x, methods="gradient", backends=[], dtype="float32", cascade=1)
    assert report.settings["dtype"] == "float32" and report.settings["input_note"] == ""
    statuses = {c.check: c.status for c in report.checks}
    assert statuses == {"conservation": "SKIPPED", "randomization[top 1]": "PASS"}


def test_a_layer_without_a_rule_is_an_error_line_not_a_silent_pass(files):
    report = validate("external_model.my_cnn:build_with_softshrink", weights=files["softshrink"],
                      inputs=files["inputs"], methods=["lrp.epsilon", "gradient"], backends=["zennit"])
    assert [(c.method, c.check, c.status) for c in report.checks] == [
        ("lrp.epsilon", "reference", "ERROR"), ("gradient", "reference", "ERROR")]
    assert "no relevance rule for layer '1' of type Softshrink" in report.checks[0].detail
    assert report.exit_code == 1


def test_backends_that_cannot_run_are_skipped_generically(files, monkeypatch):
    """Whatever joins BACKENDS: not installed, cannot mirror the model or has no rule for a layer
    -> SKIPPED with the reason; lacks the method -> SKIPPED; anything else -> ERROR."""
    reasons = {"absent": BackendUnavailableError("absent", "install .venv-absent"),
               "keras": ExportError("keras", "fc1", "Linear", "no twin"),
               "norules": UnsupportedLayerError("relu1", "ReLU"),
               "broken": RuntimeError("worker died")}
    real_methods, real_explain = api.methods, api.explain

    def methods(backend=None):
        if backend == "unlisted":
            raise BackendUnavailableError("unlisted", "no environment")
        if backend == "partial":
            return ["lrp.z"]
        return real_methods("native") if backend in reasons else real_methods(backend)

    def explain(model, x, method="lrp.epsilon", target=None, backend="native", dtype=None, **options):
        if backend in reasons:
            raise reasons[backend]
        return real_explain(model, x, method, target, backend, dtype, **options)

    fake = ("native", "absent", "keras", "norules", "broken", "unlisted", "partial")
    monkeypatch.setattr(api, "BACKENDS", fake)
    monkeypatch.setattr(api, "methods", methods)
    monkeypatch.setattr(api, "explain", explain)
    report = validate(my_cnn.build(), weights=files["weights"], inputs=files["inputs"], methods=["gradient"],
                      cascade=1)
    rows = {c.check: c for c in report.checks}
    for backend in ("absent", "keras", "norules", "unlisted", "partial"):
        assert rows[f"agreement[{backend}]"].status == "SKIPPED", rows[f"agreement[{backend}]"]
    assert "install .venv-absent" in rows["agreement[absent]"].detail
    assert "cannot mirror layer 'fc1'" in rows["agreement[keras]"].detail
    assert "partial has no gradient" in rows["agreement[partial]"].detail
    assert rows["agreement[broken]"].status == "ERROR" and "worker died" in rows["agreement[broken]"].detail
    assert report.exit_code == 1


def test_spearman_handles_ties_and_constant_maps():
    a = torch.tensor([[0.0, 0.0, 1.0, 2.0], [1.0, 1.0, 1.0, 1.0], [0.0, 0.0, 0.0, 0.0]])
    same = spearman_per_sample(a, -3 * a, 1)  # |R| rescaled (and sign flipped): nothing changed
    assert same[0] == pytest.approx(1.0) and same[1] == 1.0 and same[2] == 1.0
    changed = spearman_per_sample(a, torch.tensor([[2.0, 1.0, 0.0, 0.0], [0.0, 1.0, 2.0, 3.0],
                                                   [1.0, 0.0, 0.0, 0.0]]), 1)
    assert changed[0] < 0 and changed[1] == 0.0 and changed[2] == 0.0


def test_read_inputs_asks_for_the_variable_when_there_are_several(tmp_path):
    from xaibench.studies.validate.inputs import read_inputs

    path = tmp_path / "two.nc"
    xr.Dataset({"sst": (("t", "x"), np.zeros((2, 3))), "t2m": (("t", "x"), np.ones((2, 3)))}).to_netcdf(
        path, engine="h5netcdf")
    with pytest.raises(InputError, match=r"2 data variables \(sst, t2m\); choose one with --variable"):
        read_inputs(path)
    assert read_inputs(path, "t2m").shape == (2, 3)


@pytest.mark.tf
def test_a_documented_innvestigate_defect_is_known_not_failed(files, innvestigate_worker):
    """innvestigate's alpha-beta with biases differs from the rule (issue 116); validate says
    so with the reason instead of failing the researcher's model for another library's bug."""
    x = torch.randn(3, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    torch.manual_seed(0)
    report = validate(my_cnn.build, inputs=x, methods=["lrp.alpha1beta0", "lrp.epsilon"], backends=["innvestigate"],
                      cascade=1)
    rows = {(c.method, c.check): c for c in report.checks}
    known = rows[("lrp.alpha1beta0", "agreement[innvestigate]")]
    assert known.status == "KNOWN" and "issue 116" in known.detail and known.value > 1e-4
    # earned by the control: the same comparison with bias=False on both sides agrees
    assert "control [both with bias=False" in known.detail and _control_value(known.detail) <= 1e-4
    assert rows[("lrp.epsilon", "agreement[innvestigate]")].status == "PASS"


# --- documented differences: KNOWN only where the table's control earns it ----------------------
def _flipped(explain):
    """A backend with a layout bug: its relevance comes back mirrored along the last axis."""
    def buggy(*args, **kwargs):
        explanation = explain(*args, **kwargs)
        return dataclasses.replace(explanation, relevance=explanation.relevance.flip(-1))
    return buggy


def _control_value(detail):
    """The control's value, as validate writes it into the row detail."""
    match = re.search(r"control \[.*\] (?:agrees|still differs by):? ([0-9.e+-]+)", detail)
    assert match, detail
    return float(match.group(1))


def test_a_zennit_layout_bug_on_a_documented_difference_fails_not_known(monkeypatch):
    """lrp.flat through bilinear upsampling is documented to differ on zennit; a zennit whose
    relevance comes back mirrored must still FAIL: the control (nearest upsampling, where
    zennit and native agree) catches the bug that the documented cause does not explain."""
    import zennit  # noqa: F401  pinned in the main environment: missing is a failure, not a skip

    from xaibench.backends import zennit_backend

    x = torch.randn(3, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    model = upsampling_cnn()

    def agreement_row():
        report = validate(model, inputs=x, methods=["lrp.flat"], backends=["zennit"], cascade=1)
        return {c.check: c for c in report.checks}["agreement[zennit]"]

    with monkeypatch.context() as patch:
        patch.setattr(zennit_backend, "explain", _flipped(zennit_backend.explain))
        buggy = agreement_row()
    assert buggy.status == "FAIL", buggy
    assert "the documented cause does not explain the difference" in buggy.detail
    assert _control_value(buggy.detail) > 1e-4

    genuine = agreement_row()
    assert genuine.status == "KNOWN" and genuine.value > 1e-4, genuine
    assert "upsampling" in genuine.detail and "control [both with nearest upsampling] agrees" in genuine.detail
    assert _control_value(genuine.detail) <= 1e-4


def test_controls_run_on_copies_and_leave_the_model_alone():
    """The upsampling control switches a copy to nearest: the user's model keeps its bilinear
    upsampling, weights, training mode, requires_grad and hooks, bit for bit."""
    import zennit  # noqa: F401  pinned in the main environment: missing is a failure, not a skip
    model = upsampling_cnn().train()
    model[-1].weight.requires_grad_(False)
    model[0].register_forward_hook(lambda *args: None)
    snapshot = full_snapshot(model)
    x = torch.randn(3, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    report = validate(model, inputs=x, methods=["lrp.flat"], backends=["zennit"], cascade=1)
    assert {c.check: c.status for c in report.checks}["agreement[zennit]"] == "KNOWN"
    assert unchanged(model, snapshot) and model[3].mode == "bilinear"


@pytest.mark.tf
def test_an_innvestigate_layout_bug_on_documented_differences_fails_not_known(innvestigate_worker, monkeypatch):
    """alpha-beta with biases (issue 116) and a model with BatchNorm are documented to differ on
    innvestigate; mirrored relevance from it is a bug that neither explains: FAIL."""
    from xaibench.backends import innvestigate_backend

    monkeypatch.setattr(innvestigate_backend, "explain", _flipped(innvestigate_backend.explain))
    x = torch.randn(3, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    torch.manual_seed(0)
    for model, method in ((my_cnn.build(), "lrp.alpha1beta0"), (batchnorm_cnn(), "lrp.epsilon")):
        row = {c.check: c for c in validate(model, inputs=x, methods=[method], backends=["innvestigate"],
                                            cascade=1).checks}["agreement[innvestigate]"]
        assert row.status == "FAIL", row
        assert "the documented cause does not explain the difference" in row.detail
        assert _control_value(row.detail) > 1e-4


@pytest.mark.tf
def test_each_documented_innvestigate_difference_is_known_by_its_control(innvestigate_worker):
    """The genuine documented differences stay KNOWN, each with its control's value in the
    detail; the models validated (whose copies the controls change) are left as they were."""
    x = torch.randn(3, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    cases = [(name, example) for name, example in documented_difference_examples().items()
             if example[0] == "innvestigate"]
    for name, (_, method, options, model) in cases:
        snapshot = full_snapshot(model)
        row = {c.check: c for c in validate(model, inputs=x, methods=[method], backends=["innvestigate"],
                                            cascade=1, method_options={method: options}).checks}[
            "agreement[innvestigate]"]
        assert row.status == "KNOWN" and row.value > 1e-4 and name in row.detail, (method, row)
        assert _control_value(row.detail) <= 1e-4, row.detail
        assert unchanged(model, snapshot), method


# --- a model with several inputs (issue 16) ------------------------------------------------------
TWO_SAMPLES = 5


@pytest.fixture(scope="module")
def two_files(tmp_path_factory):
    """A netCDF with two variables, sst (time, lat, lon) and wind (time, level), and the weights
    of tests/external_model/two_inputs.py's models."""
    folder = tmp_path_factory.mktemp("validate_two")
    rng = np.random.default_rng(0)
    dataset = xr.Dataset(
        {"sst": (("time", "lat", "lon"), rng.normal(size=(TWO_SAMPLES, 8, 8)).astype(np.float32),
                 {"units": "K", "long_name": "sea surface temperature anomaly"}),
         "wind": (("time", "level"), rng.normal(size=(TWO_SAMPLES, 6)).astype(np.float32),
                  {"units": "m s-1", "long_name": "zonal wind anomaly"})},
        coords={"time": np.arange(TWO_SAMPLES), "lat": np.linspace(-17.5, 17.5, 8),
                "lon": np.linspace(150.0, 185.0, 8), "level": np.linspace(1000.0, 500.0, 6)})
    paths = {"inputs": folder / "sst_wind.nc", "weights": folder / "two.safetensors",
             "heads": folder / "heads.safetensors", "short_wind": folder / "wind_short.nc"}
    dataset.to_netcdf(paths["inputs"], engine="h5netcdf")
    dataset[["wind"]].isel(time=slice(0, 2)).to_netcdf(paths["short_wind"], engine="h5netcdf")
    torch.manual_seed(0)
    save_file(two_inputs.build().state_dict(), paths["weights"])
    torch.manual_seed(0)
    save_file(two_inputs.build_two_heads().state_dict(), paths["heads"])
    return paths


def test_cli_validates_a_model_with_two_inputs_from_one_netcdf(two_files, tmp_path):
    """--variable sst --variable wind: each variable fitted to its input (sst gets the channel
    axis), conservation over both inputs passes, a method or backend that explains one input
    tensor only is SKIPPED with the reason, and the relevance file holds one variable per input."""
    out = tmp_path / "verdict"
    before = _sha256(two_files["inputs"])
    result = _run("external_model.two_inputs:build", "--weights", two_files["weights"], "--inputs",
                  two_files["inputs"], "--variable", "sst", "--variable", "wind", "--method", "lrp.epsilon",
                  "gradient", "smoothgrad", "--backends", "zennit", "--cascade", "2", "--out", out)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Traceback" not in result.stderr and "verdict: PASS" in result.stdout
    assert _sha256(two_files["inputs"]) == before

    verdict = json.loads((out / "verdict.json").read_text())
    settings = verdict["settings"]
    assert settings["variable"] == ["sst", "wind"]
    assert settings["model_input_shape"] == [[1, 8, 8], [6]]
    assert settings["input_note"] == "sst: a channel axis of size 1 added after the sample axis"
    checks = {(c["method"], c["check"]): c for c in verdict["checks"]}
    conservation = checks[("lrp.epsilon", "conservation")]
    assert conservation["status"] == "PASS" and conservation["value"] <= 1e-10
    assert "2 inputs (sst, wind)" in conservation["detail"]
    for method in ("lrp.epsilon", "gradient"):
        agreement = checks[(method, "agreement[zennit]")]
        assert agreement["status"] == "SKIPPED" and "explains models with one input tensor" in agreement["detail"]
        top = checks[(method, "randomization[top 1]")]
        assert top["status"] == "PASS" and "per input: sst" in top["detail"] and ", wind " in top["detail"]
    smoothgrad = checks[("smoothgrad", "reference")]
    assert smoothgrad["status"] == "SKIPPED"
    assert "cannot explain 2 inputs" in smoothgrad["detail"] and "one input tensor" in smoothgrad["detail"]
    assert [c for c in verdict["checks"] if c["method"] == "smoothgrad"] == [smoothgrad]
    assert not (out / "relevance_smoothgrad.nc").exists()

    with xr.open_dataset(two_files["inputs"], engine="h5netcdf") as original, \
            xr.open_dataset(out / "relevance_lrp.epsilon.nc", engine="h5netcdf") as maps:
        assert set(maps.data_vars) == {"relevance_sst", "relevance_wind", "output", "target"}
        for name in ("sst", "wind"):
            relevance = maps[f"relevance_{name}"]
            assert relevance.dims == original[name].dims and relevance.shape == original[name].shape
            assert relevance.attrs["explained_variable"] == name and relevance.attrs["method"] == "lrp.epsilon"
            assert np.isfinite(relevance.values).all()
        np.testing.assert_array_equal(maps["level"].values, original["level"].values)
        assert maps["output"].dims == ("time",) and maps["target"].dims == ("time",)


def test_python_function_takes_a_tuple_of_arrays_for_several_inputs(tmp_path):
    """A tuple of arrays, one per input: named x0, x1 in the files; integrated gradients takes one
    input tensor only and is SKIPPED, not an error; the verdict passes on what could be checked."""
    generator = torch.Generator().manual_seed(0)
    sst, wind = torch.randn(3, 1, 8, 8, generator=generator), torch.randn(3, 6, generator=generator)
    torch.manual_seed(0)
    model = two_inputs.build()
    report = validate(model, inputs=(sst, wind), methods=["lrp.z", "integrated_gradients"], backends=["captum"],
                      cascade=1, out=tmp_path)
    rows = {(c.method, c.check): c for c in report.checks}
    assert rows[("lrp.z", "conservation")].status == "PASS"
    assert rows[("lrp.z", "agreement[captum]")].status == "SKIPPED"
    assert "captum' explains models with one input tensor" in rows[("lrp.z", "agreement[captum]")].detail
    skipped = rows[("integrated_gradients", "reference")]
    assert skipped.status == "SKIPPED" and "integrated_gradients' explains models with one input tensor" in \
        skipped.detail
    assert report.passed and report.settings["variable"] == ["x0", "x1"]
    relevance = report.explanations["lrp.z"].relevance
    assert isinstance(relevance, tuple) and [r.shape for r in relevance] == [sst.shape, wind.shape]
    with xr.open_dataset(tmp_path / "relevance_lrp.z.nc", engine="h5netcdf") as maps:
        assert maps["relevance_x0"].shape == (3, 1, 8, 8) and maps["relevance_x1"].shape == (3, 6)
        np.testing.assert_allclose(maps["relevance_x1"].values, relevance[1].numpy())


def test_output_chooses_among_several_outputs_and_the_error_lists_them(two_files, capsys, monkeypatch):
    """A model returning a dict: without --output the error lists the keys (exit 2); with it, the
    chosen output is explained and only the layers it depends on are re-initialized."""
    common = ("external_model.two_inputs:build_two_heads", "--weights", two_files["heads"], "--inputs",
              two_files["inputs"], "--variable", "sst", "--variable", "wind")
    line = _bad(capsys, monkeypatch, *common)
    assert "returns a dict with keys 'logits', 'aux'" in line and "--output" in line
    line = _bad(capsys, monkeypatch, *common, "--output", "probabilities")
    assert "output 'probabilities'" in line and "one of 'logits', 'aux'" in line

    report = validate(two_inputs.build_two_heads(), weights=two_files["heads"], inputs=two_files["inputs"],
                      variable=["sst", "wind"], output="logits", methods=["lrp.epsilon"], backends=[])
    assert report.settings["output"] == "logits" and "aux" not in report.settings["layers_top_down"]
    assert report.settings["layers_top_down"][0] == "out"
    rows = {c.check: c for c in report.checks}
    assert rows["conservation"].status == "PASS"
    assert report.explanations["lrp.epsilon"].output.shape == (TWO_SAMPLES,)


def test_several_inputs_that_do_not_fit_are_named(two_files, capsys, monkeypatch):
    common = ("external_model.two_inputs:build", "--weights", two_files["weights"])
    line = _bad(capsys, monkeypatch, *common, "--inputs", two_files["inputs"], "--variable", "sst")
    assert "the model takes 2 inputs (sst, wind) but got 1 (sst)" in line
    line = _bad(capsys, monkeypatch, *common, "--inputs", two_files["inputs"], "--variable", "sst", "--variable", "t2m")
    assert "no data variable 't2m'; it has: sst, wind" in line
    line = _bad(capsys, monkeypatch, *common, "--inputs", two_files["inputs"], "--inputs", two_files["short_wind"],
                "--variable", "sst", "--variable", "wind")
    assert "different numbers of samples (sst 5, wind 2)" in line


def test_inputs_sharing_a_dimension_name_with_another_size_keep_their_own(tmp_path):
    """sst and wind both on (time, lat, lon), wind on a coarser grid: the relevance file cannot
    hold both under one 'lat', so wind's dimensions get its name (lat_wind, lon_wind)."""
    rng = np.random.default_rng(0)
    sst = xr.DataArray(rng.normal(size=(3, 8, 8)), dims=("time", "lat", "lon"), coords={"lat": np.arange(8.0)},
                       name="sst")
    wind = xr.DataArray(rng.normal(size=(3, 2, 3)), dims=("time", "lat", "lon"), coords={"lat": [0.0, 5.0]},
                        name="wind")
    torch.manual_seed(0)
    report = validate(two_inputs.build(), inputs=(sst, wind), methods=["lrp.epsilon"], backends=[], cascade=1,
                      out=tmp_path)
    assert report.settings["input_note"].endswith("wind: flattened per sample")
    with xr.open_dataset(tmp_path / "relevance_lrp.epsilon.nc", engine="h5netcdf") as maps:
        assert maps["relevance_sst"].dims == ("time", "lat", "lon")
        assert maps["relevance_wind"].dims == ("time", "lat_wind", "lon_wind")
        np.testing.assert_array_equal(maps["lat_wind"].values, [0.0, 5.0])
