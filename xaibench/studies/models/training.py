"""Seeded, bit-reproducible (on CPU) training of the reference networks.

    train(model_name, data, config=None, *, out=None, evaluation=None, progress=None) -> TrainingResult
    evaluate(model, dataset, *, class_weights=None) -> dict of skill scores
    load_trained(directory) -> (model, metadata)
    default_config(model_name) -> dict          the paper's setup (or our documented choice)

The setups (which architecture a name builds, the papers' settings) live in setups.py, the
skill scores in evaluation.py; the model files are written by xaibench.io.

Model names: enso, convection, radar1, radar2, radar3 (radarN = the encoder-decoder with N
blocks each way), radar_vit (a small vision transformer on the same radar data), groundtruth (the
dense regression net of the ground-truth benchmark). The
network is built to fit the data (grid, frames, channels); the data are split with
xaibench.studies.data.split (contiguous train/validation/test blocks) and the epoch with the lowest
validation loss is kept.

Losses (docs/papers.md sections 1-3):
- enso: cross-entropy on logits, class weights max(count)/count from the training labels, and
  Keras-style L2 weight penalties l2 * sum(w^2) on the weights of the three Linear layers
  (25, 0.01, 0.01; biases free, as Keras kernel_regularizer). Keras semantics for the class
  weights too: the batch loss is mean_i(w[y_i] * ce_i), not divided by the sum of the weights.
  Optimizer: plain SGD (no momentum), lr 0.001, batch 32, 50 epochs: the paper's setup, which
  reaches accuracy 1.0 on 2000 synthetic maps (the loss is still falling at epoch 50).
- convection: Adam, cross-entropy on logits (balanced classes by construction: no weights);
  lr 0.001, batch 16, 30 epochs are our choice (not published).
- radar: Adam, batch 18, the weighted MSE mean(exp(5 y^4) (yhat - y)^2) of Hilburn et al.;
  radar_vit the same (our choice: the transformer differs from the CNNs only in architecture).
- groundtruth: plain MSE; SGD lr 0.02, batch 32, 50 epochs (Mamalakis et al. 2022).

Learning-rate schedule (config lr_schedule): "constant" (the default, every paper's setup) or
"cosine": epoch e (1-based) runs at lr * (1 + cos(pi (e - 1) / epochs)) / 2, from lr at the
first epoch down toward 0 at the last; the schedule spans the configured epochs even when
patience stops the run early.

Skill: accuracy for the classifiers; R^2 (pooled over every pixel of the set) and the RMSD in
dBZ (target scaled 0-1 from 0-60 dBZ) for radar; R^2 and RMSD for groundtruth. The validation loss used to pick the best
epoch is the data loss (class-weighted cross-entropy or weighted MSE) WITHOUT the L2 penalty:
the penalty does not depend on the validation data, and selecting on it would favour small
weights over good predictions (Keras' val_loss would include it).

Reproducibility: the initial weights come from torch.manual_seed(seed) inside a forked RNG (the
caller's global RNG state is left as it was), the shuffling from its own torch.Generator, and
torch.use_deterministic_algorithms(True) plus a fixed torch.set_num_threads(threads) hold
during the run (both restored afterwards). On CPU two runs with the same seed and the same
thread count give bit-identical weights; a different thread count may change the last bits of
reductions and hence, over many steps, the trained weights (so `threads` is part of the config
and of the metadata).

Files (`out` folder): model.safetensors (the state dict; loading it never runs code) and
model.json (metadata). Both are written atomically (temporary file in the same folder, then
os.replace), the weights first and the JSON last; the JSON records the weights' sha256, so a
folder whose two files do not belong together is refused by load_trained.
"""

from __future__ import annotations

import json
import logging
import math
import platform
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from xaibench.errors import InputError
from xaibench.io import METADATA_FILE, WEIGHTS_FILE, json_safe, load_model_files, save_model_files
from xaibench.studies.data.common import generator_name
from xaibench.studies.models.evaluation import (
    _as_dataset,
    _check_fits,
    _data_loss,
    _is_classification,
    _scores,
    _tensors,
    evaluate,
)
from xaibench.studies.models.groundtruth import GroundTruthDense
from xaibench.studies.models.setups import (  # the public names are part of training's interface
    _DATA_KIND,
    LR_SCHEDULES,
    MODEL_NAMES,
    MODELS,
    SETUP_NOTES,
    _build,
    _constructor_for,
    _model_entry,
    _resolve_config,
    default_config,
)

logger = logging.getLogger(__name__)

__all__ = ["LR_SCHEDULES", "MODELS", "MODEL_NAMES", "SETUP_NOTES", "TrainingResult", "default_config", "evaluate",
           "format_epoch", "load_trained", "save_trained", "train", "weight_penalty"]

FORMAT = "xaibench.trained-model/1"
#: the checkpoint `xaibench train --out DIR` keeps in DIR while it trains (train's `checkpoint`)
CHECKPOINT_FILE = "checkpoint.pt"

#: model name -> (architecture name in models.REGISTRY, fixed constructor arguments)
# ---------------------------------------------------------------------------------------------
# Result
# ---------------------------------------------------------------------------------------------
@dataclass
class TrainingResult:
    """What train returns: the model with the best epoch's weights (in eval mode), the metadata
    written to model.json, the per-epoch history and the folder written (None when out=None)."""

    model: nn.Module
    metadata: dict
    history: list[dict] = field(default_factory=list)
    directory: Path | None = None

    @property
    def best_epoch(self) -> int:
        return self.metadata["best_epoch"]

    @property
    def skill(self) -> dict:
        """{"train", "validation", "test", plus every extra evaluation set}: skill dicts."""
        return {**self.metadata["skill"], **self.metadata["evaluation"]}


# ---------------------------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------------------------
def train(model_name: str, data, config: Mapping | None = None, *, out=None,
          evaluation: Mapping | None = None,
          progress: Callable[[dict], None] | None = None, checkpoint=None) -> TrainingResult:
    """Train `model_name` on `data` (an xarray.Dataset or a path to one written by
    xaibench.studies.data.write_dataset) and return the best epoch's model.

    config: overrides of default_config(model_name) (unknown keys raise InputError).
    out: folder to write model.safetensors and model.json into (atomically); None writes nothing.
    evaluation: {name: Dataset or path} of extra evaluation sets (e.g. the convection data without
        the shortcut); each is scored with the best model and recorded under metadata["evaluation"].
        For ENSO data from make_enso, the real winters (make_enso_real, same detrending and
        threshold) are added as "real_winters" unless a set of that name is given.
    progress: called after every epoch with the epoch's record (epoch, train_loss,
        validation_loss, validation_skill, ...); every record is also logged at INFO level on the
        "xaibench.studies.models.training" logger.
    checkpoint: a file to keep the training's state in after every epoch (weights, optimizer and
        shuffling states, the best epoch so far, the history). A run that finds
        it, written for the same model, configuration and data, goes on from the epoch after it,
        and ends with the same weights as a run never interrupted; another file is replaced. It
        is removed when the training ends. None: no checkpoint.
    """
    started = time.perf_counter()
    architecture, fixed_kwargs = _model_entry(model_name)
    config = _resolve_config(model_name, config)
    dataset = _as_dataset(data, "training data")
    _check_kind(model_name, architecture, dataset, "training data")
    extra_sets = {name: _as_dataset(value, f"evaluation set '{name}'") for name, value in (evaluation or {}).items()}
    for name, extra in extra_sets.items():
        _check_kind(model_name, architecture, extra, f"evaluation set '{name}'")

    from xaibench.studies.data import data_hash, split

    dataset_hash = data_hash(dataset)
    parts = split(dataset, validation=config["validation"], test=config["test"])
    for name in ("train", "validation"):
        if parts[name].sizes["sample"] == 0:
            raise InputError(f"the {name} split is empty ({dataset.sizes['sample']} samples, fractions "
                             f"validation={config['validation']}, test={config['test']}); give more samples")

    device = _device(config["device"])
    with _reproducible(config["threads"], config["deterministic"], device):
        x_train, y_train = _tensors(parts["train"])
        constructor = {**_constructor_for(architecture, x_train), **fixed_kwargs}
        with torch.random.fork_rng(devices=[]):  # seeded weights without touching the caller's RNG
            torch.manual_seed(config["seed"])
            model = _build(architecture, constructor)
        # every constructor argument, defaults included, so that load_trained rebuilds exactly this
        constructor = {key: value for key, value in model.metadata().items() if key != "name"}
        _check_fits(model, x_train, "training data")
        model.to(device)
        x_train, y_train = x_train.to(device), y_train.to(device)
        classification = _is_classification(y_train)
        class_weights = _class_weights(y_train, model) if classification and config["class_weights"] else None
        l2 = _l2_penalties(model, config["l2"])

        optimizer = _optimizer(model, config)
        schedule = _lr_schedule(config)
        shuffler = torch.Generator().manual_seed(config["seed"])
        x_validation, y_validation = _tensors(parts["validation"])
        history: list[dict] = []
        best_loss, best_state, best_epoch, stale = math.inf, None, 0, 0
        identity = json.dumps(json_safe({"model": model_name, "config": config, "data": dataset_hash}),
                              sort_keys=True)
        resumed = _resume(checkpoint, identity, model, optimizer, shuffler)
        if resumed is not None:
            history, best_loss, best_state, best_epoch, stale = resumed
            logger.info(f"resumed from {checkpoint} after epoch {len(history)}")
            if progress is not None:
                for record in history:
                    progress(record)
        for epoch in range(len(history) + 1, config["epochs"] + 1):
            if config["patience"] is not None and stale >= config["patience"]:
                break   # a resumed run that had already stopped early
            epoch_started = time.perf_counter()
            for group in optimizer.param_groups:
                group["lr"] = schedule(epoch)
            train_loss, train_penalty = _one_epoch(model, optimizer, x_train, y_train, config["batch_size"],
                                                   shuffler, class_weights, l2)
            scores = _scores(model, x_validation, y_validation, class_weights, config["eval_batch_size"])
            record = {"epoch": epoch, "epochs": config["epochs"], "train_loss": train_loss,
                      "train_penalty": train_penalty,
                      "validation_loss": scores["loss"], "validation_skill": scores["skill"],
                      "skill_name": scores["skill_name"], "lr": schedule(epoch),
                      "seconds": time.perf_counter() - epoch_started}
            history.append(record)
            logger.info(format_epoch(record))
            if progress is not None:
                progress(record)
            if scores["loss"] < best_loss:  # strict: ties keep the earlier epoch
                best_loss, best_epoch, stale = scores["loss"], epoch, 0
                best_state = {key: value.detach().clone() for key, value in model.state_dict().items()}
            else:
                stale += 1
            if checkpoint is not None:
                _keep(checkpoint, identity, model, optimizer, shuffler, history, best_loss, best_state, best_epoch,
                      stale)
            if config["patience"] is not None and stale >= config["patience"]:
                break
        if best_state is None:
            raise FloatingPointError(f"the validation loss was never finite in {len(history)} epochs "
                                     f"(lr {config['lr']} too high?)")
        model.load_state_dict(best_state)
        model.eval()

        skill = {name: evaluate(model, part, class_weights=class_weights, batch_size=config["eval_batch_size"])
                 for name, part in parts.items() if part.sizes["sample"] > 0}
        if architecture == "enso" and "real_winters" not in extra_sets:
            real = _real_winters_for(dataset)
            if real is not None:
                extra_sets["real_winters"] = real
        extra_scores = {}
        for name, extra in extra_sets.items():
            _check_fits(model, _tensors(extra)[0], f"evaluation set '{name}'")
            extra_scores[name] = {**evaluate(model, extra, class_weights=class_weights,
                                             batch_size=config["eval_batch_size"]),
                                  "data_hash": data_hash(extra), "generator": extra.attrs.get("generator", "")}

    metadata = {
        "format": FORMAT,
        "model": model_name,
        "architecture": architecture,
        "constructor": constructor,
        "config": config,
        "seed": config["seed"],
        "data": {"hash": dataset_hash, "generator": dataset.attrs.get("generator", ""),
                 "config": _generator_config(dataset), "n_samples": int(dataset.sizes["sample"]),
                 "split": {name: int(part.sizes["sample"]) for name, part in parts.items()},
                 "split_convention": dataset.attrs.get("split_convention", "")},
        "class_weights": None if class_weights is None else class_weights.tolist(),
        "epochs_run": len(history),
        "best_epoch": best_epoch,
        "best_validation_loss": best_loss,
        "skill_name": history[0]["skill_name"],
        "skill": skill,
        "evaluation": extra_scores,
        "history": history,
        "setup_note": SETUP_NOTES[architecture],
        "wall_time_s": time.perf_counter() - started,
        "torch_version": torch.__version__,
        "numpy_version": np.__version__,
        "python_version": platform.python_version(),
    }
    # the metadata as JSON stores it (tuples become lists, NaN becomes null), written or not
    metadata = json.loads(json.dumps(json_safe(metadata), allow_nan=False))
    directory = None
    if out is not None:
        metadata = save_trained(model, metadata, out)
        directory = Path(out)
    if checkpoint is not None:
        Path(checkpoint).unlink(missing_ok=True)
    return TrainingResult(model=model, metadata=metadata, history=history, directory=directory)


def _keep(checkpoint, identity: str, model, optimizer, shuffler, history, best_loss, best_state, best_epoch,
          stale) -> None:
    """Write the training's state after an epoch (atomically: an interrupted write leaves the last one)."""
    from xaibench.io import atomic_path

    state = {"identity": identity, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
             "shuffler": shuffler.get_state(), "history": history,
             "best_loss": best_loss, "best_state": best_state, "best_epoch": best_epoch, "stale": stale}
    Path(checkpoint).parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(checkpoint) as temporary:
        torch.save(state, temporary)


def _resume(checkpoint, identity: str, model, optimizer, shuffler):
    """(history, best_loss, best_state, best_epoch, stale) from a checkpoint of this same training,
    with the model, optimizer and shuffler restored; None: start afresh. (No model here draws from
    torch's global random stream while training, no dropout, so the shuffler is the only stream.)"""
    if checkpoint is None or not Path(checkpoint).is_file():
        return None
    try:
        state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    except Exception as error:   # unreadable (e.g. a different torch): start over rather than fail
        logger.warning(f"ignoring the checkpoint {checkpoint}: {error}")
        return None
    if state.get("identity") != identity:
        logger.warning(f"ignoring the checkpoint {checkpoint}: it was written for another model, "
                       "configuration or data")
        return None
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    shuffler.set_state(state["shuffler"])
    return state["history"], state["best_loss"], state["best_state"], state["best_epoch"], state["stale"]


def format_epoch(record: dict) -> str:
    """One progress line: epoch (of the planned epochs), train loss, validation loss, validation
    skill, the epoch's time and, from it, the time the remaining epochs take at most (early
    stopping may end sooner)."""
    from xaibench.progress import duration

    penalty = f" (L2 {record['train_penalty']:.4g})" if record.get("train_penalty") else ""
    planned = record.get("epochs")
    count = f"{record['epoch']:3d}" + (f"/{planned}" if planned else "")
    left = planned - record["epoch"] if planned else 0
    timing = f"{record['seconds']:.1f} s" + (f", at most about {duration(left * record['seconds'])} left" if left > 0
                                             else "")
    return (f"epoch {count}  train loss {record['train_loss']:.5g}{penalty}  "
            f"validation loss {record['validation_loss']:.5g}  "
            f"validation {record['skill_name']} {record['validation_skill']:.4f}  ({timing})")


def _one_epoch(model, optimizer, x, y, batch_size, shuffler, class_weights, l2) -> tuple[float, float]:
    """One pass over the shuffled training data (the last batch may be smaller, as in Keras).
    Returns the mean objective (data loss + penalty) and the mean penalty over the batches."""
    model.train()
    order = torch.randperm(x.shape[0], generator=shuffler).to(x.device)  # the CPU stream on any device
    total, penalty_total, batches = 0.0, 0.0, 0
    for start in range(0, x.shape[0], batch_size):
        index = order[start:start + batch_size]
        output = model(x[index])
        loss = _data_loss(output, y[index], class_weights, plain_mse=isinstance(model, GroundTruthDense))
        penalty = _penalty(l2)
        objective = loss + penalty if l2 else loss
        optimizer.zero_grad(set_to_none=True)
        objective.backward()
        optimizer.step()
        total += float(objective.detach())
        penalty_total += float(penalty.detach()) if l2 else 0.0
        batches += 1
    return total / batches, penalty_total / batches


def _l2_penalties(model: nn.Module, l2) -> list[tuple[torch.Tensor, float]]:
    """[(weight, l2)] for the weighted layers in order; l2 is one number per Linear/Conv layer
    (a single number applies to all) or None."""
    if l2 is None:
        return []
    layers = [module for module in model.modules() if isinstance(module, nn.Linear | nn.Conv2d | nn.Conv3d)]
    values = [float(l2)] * len(layers) if isinstance(l2, int | float) else [float(v) for v in l2]
    if len(values) != len(layers):
        raise InputError(f"config l2 has {len(values)} values but the model has {len(layers)} weighted layers")
    return [(layer.weight, value) for layer, value in zip(layers, values) if value]


def _penalty(l2) -> torch.Tensor:
    """Keras L2 semantics: sum over layers of l2 * sum(w^2) (not l2/2, not averaged)."""
    return sum(value * weight.pow(2).sum() for weight, value in l2)


def weight_penalty(model: nn.Module, l2) -> float:
    """The L2 penalty that training adds to the loss, for a model and an l2 setting."""
    penalties = _l2_penalties(model, l2)
    with torch.no_grad():
        return float(_penalty(penalties)) if penalties else 0.0


def _lr_schedule(config):
    """epoch (1-based) -> learning rate, as the module docstring describes."""
    lr, epochs = config["lr"], config["epochs"]
    if config["lr_schedule"] == "cosine":
        return lambda epoch: lr * (1.0 + math.cos(math.pi * (epoch - 1) / epochs)) / 2.0
    return lambda epoch: lr


def _optimizer(model, config) -> torch.optim.Optimizer:
    if config["optimizer"] == "sgd":
        return torch.optim.SGD(model.parameters(), lr=config["lr"], momentum=config["momentum"])
    if config["optimizer"] == "adam":
        return torch.optim.Adam(model.parameters(), lr=config["lr"])
    raise InputError(f"config optimizer must be 'sgd' or 'adam', got {config['optimizer']!r}")


def _class_weights(labels: torch.Tensor, model) -> torch.Tensor:
    """max(count)/count per class (Toms et al.); a class absent from the training data gets 1."""
    counts = torch.bincount(labels, minlength=model.n_classes).to(torch.float32)
    weights = counts.max() / counts.clamp(min=1)
    return torch.where(counts > 0, weights, torch.ones_like(weights))


# ---------------------------------------------------------------------------------------------
# Saving and loading
# ---------------------------------------------------------------------------------------------
def save_trained(model: nn.Module, metadata: dict, out) -> dict:
    """Write model.safetensors then model.json into `out`, each atomically (xaibench.io). Returns
    the metadata as written (with the weights file name and its sha256)."""
    return save_model_files(model.state_dict(), metadata, out)


def load_trained(directory) -> tuple[nn.Module, dict]:
    """Rebuild a trained model from `directory` (model.json + model.safetensors) in eval mode.
    Never unpickles anything. A missing, corrupt or mismatched file raises InputError naming it."""
    state, metadata = load_model_files(directory)
    metadata_path, weights_path = Path(directory) / METADATA_FILE, Path(directory) / WEIGHTS_FILE
    try:
        architecture, constructor = metadata["architecture"], dict(metadata["constructor"])
    except (KeyError, TypeError, ValueError) as error:
        raise InputError(f"cannot read model metadata {metadata_path} ({type(error).__name__}: {error}); "
                         "it may be truncated or from another program") from None
    try:
        model = _build(architecture, constructor)
    except (TypeError, ValueError) as error:  # InputError is a ValueError
        raise InputError(f"cannot rebuild the model described in {metadata_path}: {error}") from None
    try:
        model.load_state_dict(state, strict=True)
    except (KeyError, RuntimeError) as error:
        raise InputError(f"the weights {weights_path} do not fit the model described in {metadata_path} "
                         f"({type(error).__name__}: {str(error).splitlines()[0]})") from None
    model.eval()
    return model, metadata


# ---------------------------------------------------------------------------------------------
# Helpers: names, configuration, data
# ---------------------------------------------------------------------------------------------
def _check_kind(model_name: str, architecture: str, dataset, what: str) -> None:
    """Refuse data made for another network (the generator name says which)."""
    generator = str(dataset.attrs.get("generator", ""))
    for variable in ("input_variable", "target_variable"):
        name = dataset.attrs.get(variable)
        if name is None or name not in dataset:
            raise InputError(f"{what} lacks the attribute '{variable}' naming a variable it holds "
                             "(make it with xaibench.studies.data)")
    if generator:
        kind = generator.rsplit(".", 1)[-1].removeprefix("make_").removesuffix("_real")
        if kind in _DATA_KIND.values() and kind != _DATA_KIND[architecture]:
            raise InputError(f"{what} is {kind} data ({generator}); the {model_name} network needs "
                             f"{_DATA_KIND[architecture]} data")


def _generator_config(dataset) -> dict | str:
    """The generator's configuration as a dict (the raw attribute when it is not JSON)."""
    text = dataset.attrs.get("config", "")
    try:
        return json.loads(text)
    except (TypeError, json.JSONDecodeError):
        return str(text)


def _real_winters_for(dataset):
    """The real HadISST winters on the synthetic data's grid, with the same detrending and
    threshold (None when the data are not from make_enso)."""
    if generator_name(dataset) != "xaibench.studies.data.enso.make_enso":
        return None
    from xaibench.studies.data import config_of, make_enso_real

    config = config_of(dataset)
    return make_enso_real(threshold=config.get("threshold", 0.5), detrend=config.get("detrend", True))


def _device(name) -> torch.device:
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError) as error:
        raise InputError(f"config device {name!r} is not a torch device ({error})") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"config device {name!r}: CUDA is not available here")
    return device


class _reproducible:
    """Fixed thread count and deterministic algorithms for the duration of a run; the caller's
    settings are restored afterwards. On CUDA some kernels have no deterministic version (e.g.
    the backward of nearest upsampling): there torch only warns, and runs are not bit-identical."""

    def __init__(self, threads: int, deterministic: bool, device: torch.device):
        self.threads, self.deterministic, self.warn_only = threads, deterministic, device.type != "cpu"

    def __enter__(self):
        self.saved = (torch.get_num_threads(), torch.are_deterministic_algorithms_enabled(),
                      torch.is_deterministic_algorithms_warn_only_enabled())
        torch.set_num_threads(self.threads)
        if self.deterministic:
            torch.use_deterministic_algorithms(True, warn_only=self.warn_only)
        return self

    def __exit__(self, *exc):
        threads, enabled, warn_only = self.saved
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(enabled, warn_only=warn_only)
        return False
