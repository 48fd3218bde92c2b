"""What `xaibench validate` reads: the model (an nn.Module, a factory or 'module:factory'), its
weights (safetensors or torch.load(weights_only=True): loading never runs code from the file)
and the inputs (netCDF, xarray or an array, sample first), fitted to the model's input shape,
and the precision the checks run in. Bad input raises InputError naming what does not fit."""

from __future__ import annotations

import copy
import importlib
import importlib.util
import os
import sys
from pathlib import Path

import numpy as np
import torch
from torch import nn

from xaibench.errors import InputError
from xaibench.studies.sweep import one_line


def load_factory(spec: str):
    """'package.module:function' (imported with the working directory on sys.path, as
    `python -m` does) or 'path/to/file.py:function' -> the function."""
    module_name, colon, attribute = spec.rpartition(":")
    if not colon or not module_name or not attribute:
        raise InputError(f"model '{spec}' must be MODULE:FACTORY, e.g. my_package.models:build_cnn "
                         "or path/to/models.py:build_cnn")
    if module_name.endswith(".py") or os.sep in module_name or "/" in module_name:
        path = Path(module_name)
        if not path.is_file():
            raise InputError(f"model file {path} does not exist")
        # the file's folder on sys.path lets it import its siblings, as `python file.py` would
        folder = str(path.resolve().parent)
        if folder not in sys.path:
            sys.path.insert(0, folder)
        spec_object = importlib.util.spec_from_file_location(f"_xaibench_user_{path.stem}", path)
        module = importlib.util.module_from_spec(spec_object)
        try:
            spec_object.loader.exec_module(module)
        except Exception as error:
            raise InputError(f"importing {path} failed: {type(error).__name__}: {error}") from None
    else:
        cwd = os.getcwd()
        if cwd not in sys.path and "" not in sys.path:
            sys.path.insert(0, cwd)
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as error:
            if error.name and module_name.startswith(error.name):
                raise InputError(f"cannot import module '{module_name}' (no module named '{error.name}' "
                                 f"from {cwd}); run from the folder that holds it or give a .py path") from None
            raise InputError(f"importing '{module_name}' failed: {error}") from None
        except Exception as error:
            raise InputError(f"importing '{module_name}' failed: {type(error).__name__}: {error}") from None
    factory = getattr(module, attribute, None)
    if factory is None or not callable(factory):
        public = sorted(name for name, value in vars(module).items()
                        if callable(value) and not name.startswith("_")
                        and getattr(value, "__module__", None) == module.__name__)
        raise InputError(f"module '{module_name}' has no factory '{attribute}'"
                         + (f"; it defines: {', '.join(public)}" if public else ""))
    return factory


def build_model(model_or_factory, factory_kwargs: dict | None = None) -> tuple[nn.Module, str]:
    """An nn.Module and a name for it, from a module, a factory or a 'module:factory' string."""
    if isinstance(model_or_factory, nn.Module):
        if factory_kwargs:
            raise InputError("factory_kwargs given with a model instance (they are for a factory)")
        return model_or_factory, type(model_or_factory).__name__
    name = model_or_factory if isinstance(model_or_factory, str) else getattr(
        model_or_factory, "__qualname__", repr(model_or_factory))
    factory = load_factory(model_or_factory) if isinstance(model_or_factory, str) else model_or_factory
    if not callable(factory):
        raise InputError(f"expected an nn.Module, a factory or 'module:factory', got {type(factory).__name__}")
    try:
        model = factory(**(factory_kwargs or {}))
    except Exception as error:
        raise InputError(f"the factory {name} raised {type(error).__name__}: {error}") from None
    if not isinstance(model, nn.Module):
        raise InputError(f"the factory {name} returned {type(model).__name__}, not a torch.nn.Module")
    return model, name


def load_weights(path) -> dict[str, torch.Tensor]:
    """A state dict from .safetensors or .pt/.pth; neither format can run code on loading here."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"weights file {path} does not exist")
    suffix = path.suffix.lower()
    if suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path), device="cpu")
        except (SafetensorError, OSError, ValueError) as error:
            raise InputError(f"cannot read weights {path} as safetensors: {error}") from None
    if suffix in (".pt", ".pth", ".bin"):
        import pickle

        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as error:
            # weights_only refuses any object that is not tensors and plain containers: that is
            # exactly a file that would run code when unpickled
            first = str(error).strip().splitlines()[0] if str(error).strip() else "not a weights file"
            raise InputError(f"refused to load weights {path}: it holds Python objects other than tensors "
                             f"and loading it could run code (torch.load weights_only=True: {first}); "
                             "save model.state_dict() or use safetensors") from None
        except Exception as error:
            raise InputError(f"cannot read weights {path}: {type(error).__name__}: "
                             f"{str(error).strip().splitlines()[0] if str(error).strip() else ''}") from None
        return _state_dict_in(state, path)
    raise InputError(f"weights {path}: unknown format '{suffix}'; use .safetensors, .pt or .pth")


def _state_dict_in(state, path) -> dict[str, torch.Tensor]:
    """A plain state dict, or one under a usual checkpoint key ('state_dict', 'model_state_dict',
    'model')."""
    def is_state(obj):
        return isinstance(obj, dict) and obj and all(isinstance(k, str) and torch.is_tensor(v)
                                                     for k, v in obj.items())

    if is_state(state):
        return state
    if isinstance(state, dict):
        for key in ("state_dict", "model_state_dict", "model"):
            if is_state(state.get(key)):
                return state[key]
    raise InputError(f"weights {path} hold no state dict (a dict of name -> tensor, or one under "
                     "'state_dict' / 'model_state_dict' / 'model')")


def apply_weights(model: nn.Module, state: dict[str, torch.Tensor], path) -> None:
    """load_state_dict(strict=True), with one line naming every key that does not fit."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    mismatched = [f"{k} (file {tuple(state[k].shape)}, model {tuple(v.shape)})"
                  for k, v in expected.items() if k in state and tuple(state[k].shape) != tuple(v.shape)]
    problems = []
    for label, keys in (("missing keys", missing), ("unexpected keys", unexpected),
                        ("shape mismatch", mismatched)):
        if keys:
            problems.append(f"{label}: {', '.join(keys[:8])}" + (f" and {len(keys) - 8} more" if len(keys) > 8
                                                               else ""))
    if problems:
        raise InputError(f"weights {path} do not fit the model: {'; '.join(problems)}")
    model.load_state_dict(state, strict=True)


def read_inputs(inputs, variable: str | None = None, samples: int | None = None):
    """An xarray.DataArray with the sample dimension first, from a netCDF path, a Dataset, a
    DataArray or an array. The file is read into memory and closed; it is never written."""
    import xarray as xr

    source = "inputs"
    if isinstance(inputs, (str, os.PathLike)):
        path = Path(inputs)
        source = str(path)
        if not path.is_file():
            raise InputError(f"inputs file {path} does not exist")
        try:
            with xr.open_dataset(path, engine="h5netcdf") as dataset:
                array = _pick_variable(dataset, variable, source).load()
        except InputError:
            raise
        except Exception as error:
            raise InputError(f"cannot read {path} as netCDF: {type(error).__name__}: {error}") from None
    elif isinstance(inputs, xr.Dataset):
        array = _pick_variable(inputs, variable, source)
    elif isinstance(inputs, xr.DataArray):
        array = inputs
    else:
        values = inputs.detach().cpu().numpy() if torch.is_tensor(inputs) else np.asarray(inputs)
        array = xr.DataArray(values, dims=("sample",) + tuple(f"dim_{i}" for i in range(1, values.ndim)),
                             name="x")
    if samples is not None and array.ndim >= 1:
        array = array.isel({array.dims[0]: slice(0, max(0, samples))})
    if array.ndim < 1 or array.shape[0] == 0:
        raise InputError(f"{source} variable '{array.name}' has no samples (shape {array.shape})")
    if not np.issubdtype(array.dtype, np.number) or np.issubdtype(array.dtype, np.complexfloating):
        raise InputError(f"{source} variable '{array.name}' is not real numbers (dtype {array.dtype})")
    values = np.asarray(array.values, dtype=np.float64)
    finite = np.isfinite(values.reshape(values.shape[0], -1)).all(1)
    if not finite.all():
        bad = np.flatnonzero(~finite).tolist()
        raise InputError(
            f"{source} variable '{array.name}' has NaN or Inf in sample(s) {bad[:20]}"
            + (f" and {len(bad) - 20} more" if len(bad) > 20 else "")
            + f" (dimension '{array.dims[0]}'); fill or drop missing values (e.g. land) before explaining")
    return array


def _pick_variable(dataset, variable, source):
    names = list(dataset.data_vars)
    if variable is not None:
        if variable not in dataset.data_vars:
            raise InputError(f"{source} has no data variable '{variable}'; it has: {', '.join(names) or 'none'}")
        return dataset[variable]
    if len(names) != 1:
        raise InputError(f"{source} has {len(names)} data variables ({', '.join(names) or 'none'}); "
                         "choose one with --variable")
    return dataset[names[0]]


def fit_inputs(model: nn.Module, array) -> tuple[torch.Tensor, str]:
    """The inputs as a float32 tensor shaped as the model expects, and what was done to them.

    Tried in order: as stored (sample, ...); with a channel axis of size 1 after the sample axis
    (a (sample, lat, lon) field for a Conv2d with one input channel); flattened per sample (a
    model starting with nn.Linear). A shape counts only if the model's output keeps the sample
    axis (torch convolutions also accept unbatched inputs, which would silently mix samples).
    """
    x = torch.as_tensor(np.asarray(array.values, dtype=np.float32))
    candidates = [(x, "")]
    candidates.append((x.unsqueeze(1), "a channel axis of size 1 added after the sample axis"))
    if x.dim() > 2:
        candidates.append((x.reshape(x.shape[0], -1), "flattened per sample"))
    probe_model = copy.deepcopy(model).eval()  # the user's model keeps its mode and hooks
    batch = min(2, x.shape[0])
    tried = []
    for candidate, note in candidates:
        try:
            with torch.no_grad():
                output = probe_model(candidate[:batch])
        except Exception as error:
            tried.append(f"{tuple(candidate.shape)}: {one_line(error)[:160]}")
            continue
        if torch.is_tensor(output) and output.dim() >= 1 and output.shape[0] == batch:
            return candidate, note
        tried.append(f"{tuple(candidate.shape)}: the output has shape "
                     f"{tuple(getattr(output, 'shape', ()))}, not one row per sample")
    raise InputError(f"inputs '{array.name}' of shape {tuple(array.shape)} ({', '.join(map(str, array.dims))}) "
                     f"do not fit the model; tried {'; '.join(tried)}")


def choose_dtype(model: nn.Module, x: torch.Tensor, dtype) -> tuple[torch.dtype, str]:
    """float64 when a float64 copy of the model runs on the inputs (differences then measure
    methods, not rounding), float32 otherwise; or what the caller asked for."""
    if dtype in (torch.float32, "float32"):
        return torch.float32, "as requested"
    if dtype in (torch.float64, "float64"):
        return torch.float64, "as requested"
    if dtype not in (None, "auto"):
        raise InputError(f"dtype must be 'auto', 'float64' or 'float32', got {dtype!r}")
    try:
        with torch.no_grad():
            output = copy.deepcopy(model).double().eval()(x[:2].double())
        if torch.is_tensor(output) and bool(torch.isfinite(output).all()):
            return torch.float64, ""
        note = "the float64 model gives non-finite outputs"
    except Exception as error:
        note = f"the model does not run in float64: {str(error).splitlines()[0] if str(error) else error}"
    return torch.float32, note
