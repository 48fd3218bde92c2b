"""Skill of a reference network on a data set: accuracy and a confusion matrix for the
classifiers, pooled R^2 and RMSD for the maps (the numbers training records and the report shows)."""

from __future__ import annotations

import math
import os

import numpy as np
import torch
from torch import nn

from xaibench.errors import InputError
from xaibench.studies.models.groundtruth import GroundTruthDense
from xaibench.studies.models.radar import RadarEncoderDecoder, weighted_mse
from xaibench.studies.models.radar_vit import RadarViT


def evaluate(model: nn.Module, dataset, *, class_weights=None, batch_size: int = 256) -> dict:
    """Skill of `model` on `dataset` (an xarray.Dataset or a path), in eval mode, no gradients.

    Classifiers (integer target): loss (class-weighted cross-entropy when class_weights is
    given), accuracy, confusion [[true 0 -> 0, 0 -> 1], [1 -> 0, 1 -> 1]].
    Maps (float target): loss (weighted MSE), r2 = 1 - SS_res/SS_tot pooled over every pixel,
    rmsd (scaled units) and rmsd_dbz (x 60 dBZ).
    Every dict has "skill_name" and "skill" (accuracy or r2) and "n_samples". Sums are
    accumulated in float64 over batches of `batch_size`, so the result does not depend on it
    beyond float32 rounding inside the network."""
    dataset = _as_dataset(dataset, "evaluation data")
    x, y = _tensors(dataset)
    _check_fits(model, x, "evaluation data")
    return _scores(model, x, y, class_weights, batch_size)


def _scores(model: nn.Module, x: torch.Tensor, y: torch.Tensor, class_weights, batch_size: int) -> dict:
    """evaluate() on tensors (train() keeps the validation tensors instead of re-reading the set)."""
    device = next(model.parameters()).device  # the data follow the model
    if class_weights is not None:
        class_weights = torch.as_tensor(class_weights, dtype=torch.float32, device=device)
    was_training = model.training
    model.eval()
    classification = _is_classification(y)
    loss_sum = 0.0
    correct, confusion = 0, None
    residual_sum = 0.0
    try:
        with torch.no_grad():
            for start in range(0, x.shape[0], batch_size):
                xb, yb = x[start:start + batch_size].to(device), y[start:start + batch_size].to(device)
                output = model(xb)
                loss_sum += float(_data_loss(output, yb, class_weights, reduction="sum",
                                             plain_mse=isinstance(model, GroundTruthDense)).double())
                if classification:
                    predicted = output.argmax(1)
                    correct += int((predicted == yb).sum())
                    pairs = torch.bincount(yb * output.shape[1] + predicted, minlength=output.shape[1] ** 2)
                    pairs = pairs.reshape(output.shape[1], output.shape[1])
                    confusion = pairs if confusion is None else confusion + pairs
                else:
                    residual = output.reshape(yb.shape).double() - yb.double()
                    residual_sum += float((residual**2).sum())
    finally:
        model.train(was_training)
    n = x.shape[0]
    scores: dict = {"n_samples": int(n), "loss": loss_sum / n}
    if classification:
        scores.update(skill_name="accuracy", accuracy=correct / n, confusion=confusion.tolist())
        scores["skill"] = scores["accuracy"]
    else:
        pixels = y.numel()
        target = y.double()
        total = float(((target - target.mean()) ** 2).sum())  # SS_tot, two-pass: no cancellation
        r2 = 1.0 - residual_sum / total if total > 0 else float("nan")
        rmsd = math.sqrt(residual_sum / pixels)
        scores.update(skill_name="r2", r2=r2, rmsd=rmsd)
        if isinstance(model, RadarEncoderDecoder | RadarViT):  # the target is reflectivity scaled from 0-60 dBZ
            scores["rmsd_dbz"] = 60.0 * rmsd
        scores["skill"] = r2
    return scores


def _data_loss(output, target, class_weights, reduction: str = "mean", plain_mse: bool = False):
    """Class-weighted cross-entropy (Keras semantics: mean of w[y_i] * ce_i) for integer
    targets, the weighted MSE of Hilburn et al. for maps, the plain MSE when plain_mse (the
    ground-truth benchmark's regression). reduction="sum" gives the sum over samples (of the
    per-sample mean over pixels for maps), for accumulating over batches."""
    if target.dtype == torch.long:
        per_sample = nn.functional.cross_entropy(output, target, reduction="none")
        if class_weights is not None:
            per_sample = per_sample * class_weights[target]
    elif plain_mse:
        per_sample = ((output - target.reshape(output.shape)) ** 2).flatten(1).mean(1)
    else:
        target = target.reshape(output.shape)
        if reduction == "mean":
            return weighted_mse(output, target)
        per_sample = (torch.exp(5.0 * target**4) * (output - target) ** 2).flatten(1).mean(1)
    return per_sample.mean() if reduction == "mean" else per_sample.sum()


def _as_dataset(data, what: str):
    import xarray as xr

    if isinstance(data, xr.Dataset):
        return data
    if isinstance(data, str | os.PathLike):
        from xaibench.studies.data import read_dataset

        return read_dataset(data)
    raise InputError(f"{what} must be an xarray.Dataset or a path to a netCDF file, got {type(data).__name__}")


def _tensors(dataset) -> tuple[torch.Tensor, torch.Tensor]:
    """(inputs float32 [sample, ...], target long [sample] or float32 [sample, y, x]). ENSO maps
    [sample, lat, lon] get a channel axis, to match EnsoDense.input_shape()."""
    inputs = np.asarray(dataset[dataset.attrs["input_variable"]].values)
    target = np.asarray(dataset[dataset.attrs["target_variable"]].values)
    if not np.all(np.isfinite(inputs)):
        bad = int(np.flatnonzero(~np.isfinite(inputs.reshape(inputs.shape[0], -1)).all(axis=1))[0])
        raise InputError(f"the input {dataset.attrs['input_variable']} holds NaN or Inf (first in sample {bad})")
    x = torch.from_numpy(np.ascontiguousarray(inputs, dtype=np.float32))
    if x.ndim == 3:
        x = x.unsqueeze(1)
    if target.dtype.kind in "iub":
        y = torch.from_numpy(np.ascontiguousarray(target, dtype=np.int64))
    else:
        y = torch.from_numpy(np.ascontiguousarray(target, dtype=np.float32))
    return x, y


def _is_classification(target: torch.Tensor) -> bool:
    return target.dtype == torch.long


def _check_fits(model: nn.Module, x: torch.Tensor, what: str) -> None:
    """The inputs' per-sample shape must be what the network was built for."""
    if isinstance(model, RadarEncoderDecoder):
        factor = 2**model.n_blocks
        if x.ndim != 4 or x.shape[1] != model.in_channels or x.shape[2] % factor or x.shape[3] % factor:
            raise InputError(f"{what}: shape {tuple(x.shape)} does not fit radar{model.n_blocks} "
                             f"(needs [sample, {model.in_channels}, H, W] with H, W multiples of {factor})")
        return
    expected = tuple(model.input_shape(x.shape[0])) if hasattr(model, "input_shape") else None
    if expected is not None and tuple(x.shape) != expected:
        raise InputError(f"{what}: inputs shaped {tuple(x.shape)[1:]} per sample, the network was built "
                         f"for {expected[1:]}")
