"""The reference networks' training setups: which architecture each model name builds, the paper's
settings (docs/papers.md sections 1-3 and 6) and where we differ (SETUP_NOTES), and how a
configuration is completed and checked. Used by training.py; `default_config(name)` shows a setup.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping

import torch
from torch import nn

from xaibench.errors import InputError

MODELS = {
    "enso": ("enso", {}),
    "convection": ("convection", {}),
    "radar1": ("radar", {"n_blocks": 1}),
    "radar2": ("radar", {"n_blocks": 2}),
    "radar3": ("radar", {"n_blocks": 3}),
    # the transformer reference case: 8 x 8 patches, 64 tokens on the quick 64 x 64 patches. Measured
    # on the quick data (120 training maps, 60 epochs): patches of 8 (width 64) reach test R^2 0.67 at
    # 0.45 s per epoch, patches of 4 (width 48) 0.61-0.66 at 1.2-2 s per epoch
    "radar_vit": ("radar_vit", {"patch_size": 8, "embed_width": 64, "depth": 3, "heads": 4, "mlp_ratio": 2}),
    "groundtruth": ("groundtruth", {}),
}
MODEL_NAMES = tuple(MODELS)

#: what each model is trained on: the generator that makes its data (checked against the
#: dataset's "generator" attribute when it has one; make_enso_real is ENSO data too)
_DATA_KIND = {"enso": "enso", "convection": "convection", "radar": "radar", "radar_vit": "radar",
              "groundtruth": "groundtruth"}

# The paper's setup where docs/papers.md gives it; SETUP_NOTES says where and why we differ.
_DEFAULTS = {
    "enso": {"optimizer": "sgd", "lr": 0.001, "momentum": 0.0, "batch_size": 32, "epochs": 50,
             "l2": [25.0, 0.01, 0.01], "class_weights": True},
    "convection": {"optimizer": "adam", "lr": 0.001, "momentum": 0.0, "batch_size": 16, "epochs": 30,
                   "l2": None, "class_weights": False},
    "radar": {"optimizer": "adam", "lr": 0.001, "momentum": 0.0, "batch_size": 18, "epochs": 100,
              "l2": None, "class_weights": False},
    "radar_vit": {"optimizer": "adam", "lr": 0.001, "momentum": 0.0, "batch_size": 18, "epochs": 100,
                  "l2": None, "class_weights": False},
    "groundtruth": {"optimizer": "sgd", "lr": 0.02, "momentum": 0.0, "batch_size": 32, "epochs": 50,
                    "l2": None, "class_weights": False},
}
_COMMON = {"seed": 0, "threads": 1, "validation": 0.2, "test": 0.2, "patience": None, "lr_schedule": "constant",
           "deterministic": True, "eval_batch_size": 256, "device": "cpu"}

LR_SCHEDULES = ("constant", "cosine")

SETUP_NOTES = {
    "enso": ("the paper's optimizer, lr, batch, epochs and L2; the validation loss for the best epoch "
             "excludes the L2 penalty. With the L2 of 25, lr above 0.04 makes plain SGD unstable on the "
             "penalty itself (each step multiplies the first-layer weights by 1 - 50 lr)."),
    "convection": ("Adam and cross-entropy on logits; lr, batch and epochs are ours (the paper's training "
                   "details are not in docs/papers.md section 3)."),
    "radar": "Adam, batch 18 and the weighted MSE as the paper; 100 epochs (the paper's) by default.",
    "radar_vit": ("ours (no paper): Adam, batch 18 and the weighted MSE of the radar encoder-decoders, so the "
                  "transformer and the CNNs differ only in architecture."),
    "groundtruth": "SGD lr 0.02, batch 32, 50 epochs and MSE, the paper's setup; Glorot-uniform initial weights.",
}


def default_config(model_name: str) -> dict:
    """The full training configuration of `model_name` (a fresh dict; change what you need)."""
    architecture, _ = _model_entry(model_name)
    return {**copy.deepcopy(_DEFAULTS[architecture]), **_COMMON}


def _model_entry(model_name: str) -> tuple[str, dict]:
    if model_name not in MODELS:
        raise InputError(f"unknown model '{model_name}'; choose from {', '.join(MODEL_NAMES)}")
    architecture, kwargs = MODELS[model_name]
    return architecture, dict(kwargs)


def _resolve_config(model_name: str, config: Mapping | None) -> dict:
    resolved = default_config(model_name)
    given = dict(config or {})
    unknown = sorted(set(given) - set(resolved))
    if unknown:
        raise InputError(f"unknown training config key(s) {', '.join(unknown)}; known: {', '.join(sorted(resolved))}")
    resolved.update({key: value for key, value in given.items()})
    for key in ("epochs", "batch_size", "threads", "eval_batch_size"):
        value = resolved[key]
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise InputError(f"config {key} must be a positive integer, got {value!r}")
    seed = resolved["seed"]
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise InputError(f"config seed must be a non-negative integer, got {seed!r}")
    if not (isinstance(resolved["lr"], int | float) and resolved["lr"] > 0):
        raise InputError(f"config lr must be a positive number, got {resolved['lr']!r}")
    resolved["lr"] = float(resolved["lr"])
    if resolved["lr_schedule"] not in LR_SCHEDULES:
        raise InputError(f"config lr_schedule must be one of {', '.join(LR_SCHEDULES)}, "
                         f"got {resolved['lr_schedule']!r}")
    patience = resolved["patience"]
    if patience is not None and (isinstance(patience, bool) or not isinstance(patience, int) or patience < 1):
        raise InputError(f"config patience must be None or a positive integer, got {patience!r}")
    if isinstance(resolved["l2"], tuple):
        resolved["l2"] = list(resolved["l2"])
    return resolved


def _constructor_for(architecture: str, x: torch.Tensor) -> dict:
    """Constructor arguments that make the network fit inputs shaped like x."""
    if architecture == "enso":
        if x.ndim != 4:
            raise InputError(f"ENSO inputs must be maps [sample, lat, lon], got shape {tuple(x.shape)}")
        return {"n_lat": x.shape[2], "n_lon": x.shape[3]}
    if architecture == "convection":
        if x.ndim != 5:
            raise InputError(f"convection inputs must be [sample, channel, time, y, x], got shape {tuple(x.shape)}")
        return {"in_channels": x.shape[1], "frames": x.shape[2], "height": x.shape[3], "width": x.shape[4]}
    if architecture == "groundtruth":
        if x.ndim != 2:
            raise InputError(f"ground-truth inputs must be [sample, cell], got shape {tuple(x.shape)}")
        return {"n_inputs": x.shape[1]}
    if x.ndim != 4:
        raise InputError(f"radar inputs must be [sample, channel, y, x], got shape {tuple(x.shape)}")
    if architecture == "radar_vit":  # the learned positional embedding fixes the image size
        return {"in_channels": x.shape[1], "height": x.shape[2], "width": x.shape[3]}
    return {"in_channels": x.shape[1]}


def _build(architecture: str, constructor: dict) -> nn.Module:
    from xaibench.studies.models import REGISTRY

    if architecture not in REGISTRY:
        raise InputError(f"unknown architecture '{architecture}'; known: {', '.join(REGISTRY)}")
    try:
        return REGISTRY[architecture](**constructor)
    except ValueError as error:
        raise InputError(f"cannot build the {architecture} network for this data: {error}") from None
