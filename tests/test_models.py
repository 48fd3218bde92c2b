"""The reference networks and their training (xaibench/studies/models): bit-reproducibility,
best-epoch selection, metadata, the safetensors round trip, the ENSO L2 penalty, bad input, and
that a tiny ENSO run learns.
Sizes are tiny and epochs few: the whole file runs in well under a minute on one core."""

import json
import logging

import numpy as np
import pytest
import torch

from xaibench.cli import main
from xaibench.errors import InputError
from xaibench.studies.data import data_hash, make_convection, make_enso, make_radar, split, write_dataset
from xaibench.studies.models import ConvectionCNN, EnsoDense, RadarEncoderDecoder
from xaibench.studies.models.training import (
    METADATA_FILE,
    MODEL_NAMES,
    WEIGHTS_FILE,
    default_config,
    evaluate,
    load_trained,
    train,
    weight_penalty,
)

# Tiny data per model and a few epochs each.
TINY = {
    "enso": (lambda: make_enso(n_samples=300, seed=0), {"epochs": 3}),
    "convection": (lambda: make_convection(n_samples=40, size=16, seed=0), {"epochs": 2, "batch_size": 8}),
    "radar2": (lambda: make_radar(n_samples=16, size=16, footprint_radius=2, seed=0), {"epochs": 2, "batch_size": 4}),
}


@pytest.fixture(scope="module")
def enso_data():
    return make_enso(n_samples=300, seed=0)


@pytest.fixture(scope="module")
def enso_run(enso_data, tmp_path_factory):
    """One ENSO run, lr raised so that the validation loss moves within a few epochs."""
    out = tmp_path_factory.mktemp("enso")
    return train("enso", enso_data, {"epochs": 6, "lr": 0.01}, out=out)


def _same_state(first: dict, second: dict) -> bool:
    return first.keys() == second.keys() and all(torch.equal(first[key], second[key]) for key in first)


# --------------------------------------------------------------------------------------------
# Reproducibility
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(TINY))
def test_same_seed_identical_weights_other_seed_different(name):
    make, config = TINY[name]
    data = make()
    first = train(name, data, {**config, "seed": 3})
    again = train(name, data, {**config, "seed": 3})
    other = train(name, data, {**config, "seed": 4})
    assert _same_state(first.model.state_dict(), again.model.state_dict())
    assert [r["train_loss"] for r in first.history] == [r["train_loss"] for r in again.history]
    assert not _same_state(first.model.state_dict(), other.model.state_dict())


def test_training_leaves_the_callers_torch_settings_as_they_were(enso_data):
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    threads, deterministic = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    train("enso", enso_data, {"epochs": 1, "threads": 2})
    assert torch.equal(torch.rand(3), expected)  # the global RNG was not consumed
    assert torch.get_num_threads() == threads
    assert torch.are_deterministic_algorithms_enabled() == deterministic


# --------------------------------------------------------------------------------------------
# Best epoch, metadata, files
# --------------------------------------------------------------------------------------------
def test_the_kept_model_is_the_epoch_with_the_lowest_validation_loss(enso_run, enso_data):
    losses = [record["validation_loss"] for record in enso_run.history]
    assert enso_run.best_epoch == int(np.argmin(losses)) + 1
    validation = split(enso_data)["validation"]
    scores = evaluate(enso_run.model, validation, class_weights=enso_run.metadata["class_weights"])
    assert scores["loss"] == min(losses)
    assert enso_run.metadata["skill"]["validation"]["loss"] == min(losses)


def test_patience_stops_early():
    data = make_radar(n_samples=16, size=16, footprint_radius=2, seed=0)
    # lr far too high: the validation loss stops improving after the first epoch or so
    result = train("radar1", data, {"epochs": 20, "lr": 1.0, "patience": 2})
    assert result.metadata["epochs_run"] < 20
    assert result.metadata["epochs_run"] == result.best_epoch + 2


def test_cosine_schedule_decays_the_learning_rate_the_optimizer_uses():
    data = make_radar(n_samples=16, size=16, footprint_radius=2, seed=0)
    constant = train("radar1", data, {"epochs": 4, "lr": 0.01})
    cosine = train("radar1", data, {"epochs": 4, "lr": 0.01, "lr_schedule": "cosine"})
    rates = [record["lr"] for record in cosine.history]
    assert rates == pytest.approx([0.01 * (1 + np.cos(np.pi * e / 4)) / 2 for e in range(4)], rel=1e-12)
    assert [record["lr"] for record in constant.history] == [0.01] * 4
    # the first epoch runs at the full rate in both; the second epoch's smaller step shows in
    # the weights it leaves, so in the validation loss measured after it
    assert cosine.history[0]["validation_loss"] == constant.history[0]["validation_loss"]
    assert cosine.history[1]["validation_loss"] != constant.history[1]["validation_loss"]
    assert cosine.metadata["config"]["lr_schedule"] == "cosine"
    with pytest.raises(InputError, match="lr_schedule must be one of constant, cosine"):
        train("radar1", data, {"epochs": 1, "lr_schedule": "step"})


def test_metadata_records_what_is_needed_to_reproduce_the_run(enso_run, enso_data):
    metadata = enso_run.metadata
    assert metadata["model"] == "enso" and metadata["architecture"] == "enso"
    assert metadata["constructor"] == {"n_lat": 18, "n_lon": 30, "hidden": 8, "n_classes": 2, "softmax": False}
    assert metadata["data"]["hash"] == data_hash(enso_data)
    assert metadata["data"]["split"] == {"train": 180, "validation": 60, "test": 60}
    assert metadata["seed"] == 0 and metadata["config"]["seed"] == 0
    assert metadata["config"]["lr"] == 0.01 and metadata["config"]["epochs"] == 6
    assert metadata["config"]["l2"] == [25.0, 0.01, 0.01]
    counts = np.bincount(split(enso_data)["train"]["label"].values, minlength=2)
    assert metadata["class_weights"] == pytest.approx(counts.max() / counts)  # max(count)/count
    assert metadata["epochs_run"] == 6 == len(metadata["history"])
    assert 1 <= metadata["best_epoch"] <= 6
    assert metadata["torch_version"] == torch.__version__
    assert metadata["wall_time_s"] > 0
    assert metadata["skill_name"] == "accuracy"
    for part in ("train", "validation", "test"):
        assert 0 <= metadata["skill"][part]["accuracy"] <= 1
    # the real HadISST winters are scored automatically for data from make_enso
    assert metadata["evaluation"]["real_winters"]["n_samples"] == 35
    assert len(metadata["weights_sha256"]) == 64
    written = json.loads((enso_run.directory / METADATA_FILE).read_text())
    assert written == metadata


def test_only_the_two_files_are_written(enso_run):
    assert sorted(path.name for path in enso_run.directory.iterdir()) == sorted([METADATA_FILE, WEIGHTS_FILE])


def test_an_interrupted_write_leaves_the_previous_model_whole(enso_data, tmp_path, monkeypatch):
    train("enso", enso_data, {"epochs": 1}, out=tmp_path)
    before = {path.name: path.read_bytes() for path in tmp_path.iterdir()}

    def interrupted(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr("xaibench.io.os.replace", interrupted)
    with pytest.raises(KeyboardInterrupt):
        train("enso", enso_data, {"epochs": 1, "seed": 1}, out=tmp_path)
    assert {path.name: path.read_bytes() for path in tmp_path.iterdir()} == before  # no temp file left
    load_trained(tmp_path)


def test_load_trained_round_trip_gives_the_same_outputs(enso_run, enso_data):
    model, metadata = load_trained(enso_run.directory)
    assert isinstance(model, EnsoDense) and not model.training
    assert metadata == enso_run.metadata
    assert _same_state(model.state_dict(), enso_run.model.state_dict())
    x = torch.from_numpy(enso_data["sst_anomaly"].values[:20]).unsqueeze(1)
    with torch.no_grad():
        assert torch.equal(model(x), enso_run.model(x))


def test_radar_names_build_the_right_depth_and_report_r2_and_rmsd(tmp_path):
    data = make_radar(n_samples=12, size=16, footprint_radius=2, seed=0)
    result = train("radar3", data, {"epochs": 1, "batch_size": 4}, out=tmp_path)
    model, metadata = load_trained(tmp_path)
    assert isinstance(model, RadarEncoderDecoder) and model.n_blocks == 3
    assert metadata["constructor"]["n_blocks"] == 3
    test = result.metadata["skill"]["test"]
    assert test["skill_name"] == "r2" and test["skill"] == test["r2"]
    assert test["rmsd_dbz"] == pytest.approx(60 * test["rmsd"])


def test_convection_scores_an_extra_evaluation_set():
    data = make_convection(n_samples=40, size=16, seed=0)
    no_shortcut = make_convection(n_samples=20, size=16, shortcut=False, seed=1)
    result = train("convection", data, {"epochs": 1, "batch_size": 8}, evaluation={"no_shortcut": no_shortcut})
    assert isinstance(result.model, ConvectionCNN)
    extra = result.metadata["evaluation"]["no_shortcut"]
    assert extra["n_samples"] == 20 and extra["data_hash"] == data_hash(no_shortcut)
    assert extra == {**evaluate(result.model, no_shortcut), "data_hash": extra["data_hash"],
                     "generator": extra["generator"]}


# --------------------------------------------------------------------------------------------
# ENSO: the L2 penalty, and it learns
# --------------------------------------------------------------------------------------------
def test_enso_l2_penalty_is_keras_l2_on_each_dense_layer():
    model = EnsoDense(n_lat=18, n_lon=30)
    weights = [layer.weight for layer in model if isinstance(layer, torch.nn.Linear)]
    expected = sum(value * float(weight.detach().pow(2).sum()) for weight, value in zip(weights, (25.0, 0.01, 0.01)))
    assert default_config("enso")["l2"] == [25.0, 0.01, 0.01]
    assert weight_penalty(model, default_config("enso")["l2"]) == pytest.approx(expected, rel=1e-6)


def test_enso_l2_penalty_enters_training(enso_data):
    with_l2 = train("enso", enso_data, {"epochs": 2, "lr": 0.01})
    without = train("enso", enso_data, {"epochs": 2, "lr": 0.01, "l2": None})
    assert all(record["train_penalty"] > 0 for record in with_l2.history)
    assert all(record["train_penalty"] == 0 for record in without.history)
    first_layer = lambda result: float(result.model[1].weight.detach().pow(2).sum())  # noqa: E731
    # 25 * sum(w^2) shrinks the first layer by orders of magnitude within two epochs
    assert first_layer(with_l2) < 0.05 * first_layer(without)


def test_tiny_enso_run_learns(enso_run):
    assert enso_run.metadata["skill"]["test"]["accuracy"] >= 0.9  # chance is about 0.5
    assert enso_run.metadata["evaluation"]["real_winters"]["accuracy"] >= 0.8


def test_progress_reaches_the_callback_and_the_log(enso_data, caplog):
    records = []
    with caplog.at_level(logging.INFO, logger="xaibench.studies.models.training"):
        train("enso", enso_data, {"epochs": 2}, progress=records.append)
    assert [record["epoch"] for record in records] == [1, 2]
    assert {"train_loss", "validation_loss", "validation_skill"} <= set(records[0])
    lines = [r.getMessage() for r in caplog.records if r.name == "xaibench.studies.models.training"]
    assert len(lines) == 2 and "validation accuracy" in lines[0]


# --------------------------------------------------------------------------------------------
# Bad input
# --------------------------------------------------------------------------------------------
def test_unknown_model_name(enso_data):
    assert MODEL_NAMES == ("enso", "convection", "radar1", "radar2", "radar3", "radar_vit", "groundtruth")
    with pytest.raises(InputError, match="unknown model 'radar4'.*radar3"):
        train("radar4", enso_data)


def test_missing_data_file_is_named(tmp_path):
    with pytest.raises(InputError, match="nothing.nc"):
        train("enso", tmp_path / "nothing.nc")


def test_data_for_another_network_is_refused():
    with pytest.raises(InputError, match="radar data"):
        train("enso", make_radar(n_samples=4, size=16, footprint_radius=2))


def test_unknown_or_bad_config_keys(enso_data):
    with pytest.raises(InputError, match="unknown training config key.*learning_rate"):
        train("enso", enso_data, {"learning_rate": 0.1})
    with pytest.raises(InputError, match="epochs"):
        train("enso", enso_data, {"epochs": 0})
    with pytest.raises(InputError, match="l2 has 2 values"):
        train("enso", enso_data, {"l2": [1.0, 2.0], "epochs": 1})


def test_radar_size_must_fit_the_depth():
    with pytest.raises(InputError, match="multiples of 8"):
        train("radar3", make_radar(n_samples=8, size=12, footprint_radius=2), {"epochs": 1})


def test_load_trained_names_a_missing_or_corrupt_file(enso_run, tmp_path):
    with pytest.raises(InputError, match=METADATA_FILE):
        load_trained(tmp_path)
    copy = tmp_path / "copy"
    copy.mkdir()
    (copy / METADATA_FILE).write_bytes((enso_run.directory / METADATA_FILE).read_bytes())
    with pytest.raises(InputError, match=f"not found.*{WEIGHTS_FILE}"):
        load_trained(copy)
    weights = (enso_run.directory / WEIGHTS_FILE).read_bytes()
    (copy / WEIGHTS_FILE).write_bytes(weights[: len(weights) // 2])  # truncated
    with pytest.raises(InputError, match=WEIGHTS_FILE):
        load_trained(copy)
    # corrupt safetensors without a recorded hash: the safetensors reader must refuse it
    metadata = json.loads((copy / METADATA_FILE).read_text())
    del metadata["weights_sha256"]
    (copy / METADATA_FILE).write_text(json.dumps(metadata))
    with pytest.raises(InputError, match=f"cannot read model weights .*{WEIGHTS_FILE}"):
        load_trained(copy)
    (copy / METADATA_FILE).write_text('{"model": "enso", "archi')  # truncated JSON
    with pytest.raises(InputError, match=METADATA_FILE):
        load_trained(copy)


# --------------------------------------------------------------------------------------------
# The command line
# --------------------------------------------------------------------------------------------
def test_cli_trains_prints_progress_and_writes_the_model(tmp_path, capsys):
    data = write_dataset(make_enso(n_samples=200, seed=0), tmp_path / "enso.nc")
    status = main(["train", "enso", "--data", str(data), "--out", str(tmp_path / "model"),
                   "--epochs", "2", "--lr", "0.01", "--seed", "5", "--eval-data", f"again={data}"])
    printed = capsys.readouterr().out
    assert status == 0
    assert "epoch   1/2 " in printed and "epoch   2/2 " in printed and "validation accuracy" in printed
    first = next(line for line in printed.splitlines() if line.startswith("epoch   1/2"))
    assert first.endswith(" left)") and "at most about " in first   # the time the remaining epoch takes
    model, metadata = load_trained(tmp_path / "model")
    assert metadata["seed"] == 5 and metadata["config"]["lr"] == 0.01 and metadata["epochs_run"] == 2
    assert set(metadata["evaluation"]) == {"again", "real_winters"}


@pytest.mark.parametrize("argv, message", [
    (["train", "enso", "--data", "missing.nc", "--out", "x"], "missing.nc"),
    (["train", "lenet", "--data", "missing.nc", "--out", "x"], "unknown model 'lenet'"),
])
def test_cli_bad_input_is_one_line_and_status_2(argv, message, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    error = capsys.readouterr().err
    assert message in error and len(error.strip().splitlines()) == 1
    assert not (tmp_path / "x").exists()


# --------------------------------------------------------------------------------------------
# Checkpoints: a long training (radar_vit at paper scale: hours on a CPU) spans interruptions
# --------------------------------------------------------------------------------------------
class _Interrupted(Exception):
    pass


def _interrupt_at(epoch):
    def progress(record):
        if record["epoch"] == epoch:
            raise _Interrupted
    return progress


def test_an_interrupted_training_goes_on_from_its_checkpoint_to_the_same_weights(tmp_path):
    data = make_enso(n_samples=200, seed=0)
    config = {"epochs": 4, "lr": 0.01, "seed": 3, "optimizer": "adam"}   # Adam: an optimizer with state
    whole = train("enso", data, config)
    checkpoint = tmp_path / "run" / "checkpoint.pt"
    with pytest.raises(_Interrupted):
        train("enso", data, config, checkpoint=checkpoint, progress=_interrupt_at(3))
    assert checkpoint.is_file()   # written after epochs 1 and 2
    seen = []
    resumed = train("enso", data, config, checkpoint=checkpoint, progress=lambda record: seen.append(record["epoch"]))
    assert seen == [1, 2, 3, 4]   # the first two replayed from the checkpoint, then trained
    assert [r["train_loss"] for r in resumed.history] == [r["train_loss"] for r in whole.history]
    assert resumed.best_epoch == whole.best_epoch
    for name, value in whole.model.state_dict().items():
        assert torch.equal(resumed.model.state_dict()[name], value), name
    assert not checkpoint.exists()   # removed when the training ends


def test_a_checkpoint_of_another_configuration_is_not_resumed(tmp_path):
    data = make_enso(n_samples=200, seed=0)
    checkpoint = tmp_path / "checkpoint.pt"
    with pytest.raises(_Interrupted):
        train("enso", data, {"epochs": 3, "lr": 0.01, "seed": 3}, checkpoint=checkpoint, progress=_interrupt_at(2))
    other = {"epochs": 3, "lr": 0.02, "seed": 3}
    fresh = train("enso", data, other)
    again = train("enso", data, other, checkpoint=checkpoint)
    assert [r["train_loss"] for r in again.history] == [r["train_loss"] for r in fresh.history]
    assert not checkpoint.exists()


def test_the_command_keeps_its_checkpoint_in_the_output_folder_and_goes_on_from_it(tmp_path, capsys, caplog):
    caplog.set_level(logging.INFO, logger="xaibench.studies.models.training")
    data = write_dataset(make_enso(n_samples=200, seed=0), tmp_path / "enso.nc")
    arguments = ["train", "enso", "--data", str(data), "--out", str(tmp_path / "model"), "--epochs", "3",
                 "--lr", "0.01", "--seed", "5"]
    with pytest.raises(_Interrupted):
        train("enso", data, {"epochs": 3, "lr": 0.01, "seed": 5}, progress=_interrupt_at(2),
              checkpoint=tmp_path / "model" / "checkpoint.pt")
    assert main(arguments) == 0
    printed = capsys.readouterr().out
    assert printed.count("epoch   1/3") == 1 and "epoch   3/3" in printed
    assert sorted(path.name for path in (tmp_path / "model").iterdir()) == ["model.json", "model.safetensors"]
    assert "checkpoint.pt after epoch 1" in caplog.text   # went on from the interrupted run
