"""What `xaibench validate` reads: the model (an nn.Module, a factory or 'module:factory'), its
weights (safetensors or torch.load(weights_only=True): loading never runs code from the file)
and the inputs (netCDF, xarray or an array, sample first), fitted to the model's input shape,
and the precision the checks run in. Bad input raises InputError naming what does not fit.

A model with several inputs (forward(self, sst, wind)) gets one array per input, in the order
of its forward arguments (read_input_set): several variables of one netCDF file, one variable
of each of several files, or several arrays; fit_input_set fits each to its input. A model
returning several outputs (a tuple, a dict) explains the one chosen with output=
(resolve_output; without it the error lists the choices)."""

from __future__ import annotations

import copy
import importlib
import importlib.util
import inspect
import itertools
import math
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
    # a variable named like one of its dimensions is read by xarray as a coordinate, not as data
    hidden = [name for name in dataset.coords if name in dataset[name].dims]
    if variable is not None:
        if variable in hidden:
            raise InputError(_hidden_by_dimension(source, [variable]))
        if variable not in dataset.data_vars:
            raise InputError(f"{source} has no data variable '{variable}'; it has: {', '.join(names) or 'none'}")
        return dataset[variable]
    if not names and hidden:
        raise InputError(_hidden_by_dimension(source, hidden))
    if len(names) != 1:
        raise InputError(f"{source} has {len(names)} data variables ({', '.join(names) or 'none'}); "
                         "choose one with --variable (a model with several inputs: one --variable per input, "
                         "in the order of its forward arguments)")
    return dataset[names[0]]


def _hidden_by_dimension(source, hidden) -> str:
    """Why a variable named like its own dimension is not data, and how to rename it."""
    name = hidden[0]
    dimension = "sample" if name != "sample" else "row"
    return (f"{source} has 0 data variables: {', '.join(repr(h) for h in hidden)} "
            f"{'has' if len(hidden) == 1 else 'have'} the name of a dimension, so netCDF readers (xarray) take it "
            f"as a coordinate of that dimension, not as data. Rename the dimension or the variable in the file, "
            f"e.g. with NCO: `ncrename -d {name},{dimension} {source}` (the dimension) or "
            f"`ncrename -v {name},{name}_values {source}` (the variable); in xarray before saving: "
            f"ds.rename_dims({{'{name}': '{dimension}'}})")


def _sources(inputs) -> list:
    """The inputs given, as a list of sources: a tuple or list of paths, Datasets, DataArrays,
    arrays or tensors is one source per input; anything else is one source."""
    import xarray as xr

    kinds = (str, os.PathLike, xr.Dataset, xr.DataArray, np.ndarray, torch.Tensor)
    if isinstance(inputs, (tuple, list)) and inputs and all(isinstance(item, kinds) for item in inputs):
        return list(inputs)
    return [inputs]


def read_input_set(inputs, variables=None, samples: int | None = None) -> tuple[list, bool]:
    """The inputs of the model as a list of xarray.DataArrays (one per model input, sample
    first) and whether the model gets several inputs (a tuple).

    inputs: one source (a netCDF path, a Dataset, a DataArray or an array) or a tuple/list of
    them, one per model input. variables: None, a name, or a list of names. One source and
    several names: each variable from that source (e.g. --inputs x.nc --variable sst --variable
    wind); several sources and no names: each source's only variable; several sources and as
    many names: the i-th variable of the i-th source. The inputs must have the same number of
    samples (and, where they share the sample dimension and its coordinate, the same samples).
    One source and at most one name is exactly read_inputs."""
    import xarray as xr

    sources = _sources(inputs)
    names = [] if variables is None else [variables] if isinstance(variables, str) else list(variables)
    if len(sources) == 1 and len(names) <= 1:
        return [read_inputs(sources[0], names[0] if names else None, samples)], False
    if len(sources) == 1:
        if not isinstance(sources[0], (str, os.PathLike, xr.Dataset)):
            raise InputError(f"{len(names)} variables ({', '.join(names)}) given, but the inputs are one array "
                             f"({type(sources[0]).__name__}), not a netCDF file or Dataset; give one array per input")
        pairs = [(sources[0], name) for name in names]
    elif not names:
        pairs = [(source, None) for source in sources]
    elif len(names) == len(sources):
        pairs = list(zip(sources, names))
    else:
        raise InputError(f"{len(sources)} inputs (files or arrays) and {len(names)} variables ({', '.join(names)}) do "
                         "not pair up: give one file with one --variable per model input, several files with no "
                         "--variable (each file's only variable) or with one --variable per file")
    arrays = [read_inputs(source, name, samples) for source, name in pairs]
    unnamed = [not isinstance(source, (str, os.PathLike, xr.Dataset, xr.DataArray)) for source, _ in pairs]
    return _named(arrays, unnamed), True


def _named(arrays: list, unnamed: list[bool]) -> list:
    """Each input with a name of its own (relevance_<name> in the files): arrays and unnamed
    DataArrays are x0, x1, ... by position; a name given twice gets the position appended
    (sst_0, sst_1)."""
    names = [f"x{i}" if plain or a.name is None else str(a.name)
             for i, (a, plain) in enumerate(zip(arrays, unnamed))]
    repeated = {name for name in names if names.count(name) > 1}
    names = [f"{name}_{i}" if name in repeated else name for i, name in enumerate(names)]
    arrays = [a.rename(name) for a, name in zip(arrays, names)]
    counts = {a.name: a.shape[0] for a in arrays}
    if len(set(counts.values())) > 1:
        raise InputError("the inputs have different numbers of samples ("
                         + ", ".join(f"{name} {count}" for name, count in counts.items())
                         + "): every input needs one row per sample")
    first = arrays[0]
    for other in arrays[1:]:
        dim = first.dims[0]
        if other.dims[0] == dim and dim in first.coords and dim in other.coords and not np.array_equal(
                first[dim].values, other[dim].values):
            raise InputError(f"inputs {first.name} and {other.name} have different '{dim}' coordinates: the "
                             "inputs of one sample must be the same row of every variable")
    return arrays


def resolve_output(result, output, source: str = "the model"):
    """(the explained output tensor, the output choice as explain takes it) from what the model
    returned: itself when it is one tensor, or output= of a tuple/list (an index; '1' from the
    command line is 1) or a dict (a key). Without output= (or with a wrong one) the error lists
    the choices."""
    if torch.is_tensor(result):
        if output is not None:
            raise InputError(f"output={output!r} (--output) chooses among several outputs, but {source} "
                             "returns one tensor")
        return result, None
    if isinstance(result, dict):
        choices = list(result)
        what = f"a dict with keys {', '.join(map(repr, choices))}"
    elif isinstance(result, (tuple, list)):
        choices = list(range(len(result)))
        what = f"a {type(result).__name__} of {len(choices)} values"
    else:
        raise InputError(f"{source} returns {type(result).__name__}, not a tensor")
    if output is None:
        raise InputError(f"{source} returns {what}; choose the output explained with --output (output=), one "
                         f"of {', '.join(map(repr, choices))}")
    chosen = output
    if chosen not in choices and isinstance(output, str):
        try:
            number = int(output)
        except ValueError:
            number = None
        if number in choices:
            chosen = number
    if chosen not in choices:
        raise InputError(f"output {output!r} (--output) is not one of the model's outputs: {source} returns "
                         f"{what}, choose one of {', '.join(map(repr, choices))}")
    return result[chosen], chosen


def forward(model: nn.Module, x):
    """model(x), or model(*x) for a tuple of inputs."""
    return model(*x) if isinstance(x, tuple) else model(x)


def first_rows(x, n: int):
    """The first n samples of a tensor or of each tensor of a tuple."""
    return tuple(t[:n] for t in x) if isinstance(x, tuple) else x[:n]


def _candidates(x: torch.Tensor) -> list[tuple[torch.Tensor, str]]:
    candidates = [(x, ""), (x.unsqueeze(1), "a channel axis of size 1 added after the sample axis")]
    if x.dim() > 2:
        candidates.append((x.reshape(x.shape[0], -1), "flattened per sample"))
    return candidates


def _try_fit(probe_model, candidate, batch, output, tried) -> bool:
    """Whether the model takes `candidate` (a tensor or a tuple) and its explained output keeps
    the sample axis (if not: why, in tried). Several outputs and none chosen: the error now."""
    shape = (tuple(tuple(t.shape) for t in candidate) if isinstance(candidate, tuple)
             else tuple(candidate.shape))
    try:
        with torch.no_grad():
            result = forward(probe_model, first_rows(candidate, batch))
    except Exception as error:
        tried.append(f"{shape}: {one_line(error)[:160]}")
        return False
    explained = resolve_output(result, output)[0] if not torch.is_tensor(result) or output is not None else result
    if explained.dim() >= 1 and explained.shape[0] == batch:
        return True
    tried.append(f"{shape}: the output has shape {tuple(explained.shape)}, not one row per sample")
    return False


def fit_inputs(model: nn.Module, array, output=None) -> tuple[torch.Tensor, str]:
    """The inputs as a float32 tensor shaped as the model expects, and what was done to them.
    output: which of several model outputs is explained (resolve_output).

    Tried in order: as stored (sample, ...); with a channel axis of size 1 after the sample axis
    (a (sample, lat, lon) field for a Conv2d with one input channel); flattened per sample (a
    model starting with nn.Linear). A shape counts only if the model's output keeps the sample
    axis (torch convolutions also accept unbatched inputs, which would silently mix samples).
    """
    _check_count(model, [array])
    x = torch.as_tensor(np.asarray(array.values, dtype=np.float32))
    probe_model = copy.deepcopy(model).eval()  # the user's model keeps its mode and hooks
    batch = min(2, x.shape[0])
    tried = []
    for candidate, note in _candidates(x):
        if _try_fit(probe_model, candidate, batch, output, tried):
            return candidate, note
    raise InputError(f"inputs '{array.name}' of shape {tuple(array.shape)} ({', '.join(map(str, array.dims))}) "
                     f"do not fit the model; tried {'; '.join(tried)}")


def fit_input_set(model: nn.Module, arrays: list, output=None) -> tuple[tuple, list[str]]:
    """For a model with several inputs: the inputs as a tuple of float32 tensors shaped as the
    model expects and what was done to each (as fit_inputs). Every combination of the per-input
    shapes of fit_inputs is tried, the inputs as stored first; a model whose forward takes
    another number of inputs is refused first, naming its arguments."""
    _check_count(model, arrays)
    tensors = [torch.as_tensor(np.asarray(a.values, dtype=np.float32)) for a in arrays]
    probe_model = copy.deepcopy(model).eval()
    batch = min(2, tensors[0].shape[0])
    tried = []
    for combination in itertools.product(*(_candidates(t) for t in tensors)):
        candidate = tuple(c for c, _ in combination)
        if _try_fit(probe_model, candidate, batch, output, tried):
            return candidate, [note for _, note in combination]
    shown = "; ".join(tried[:6]) + (f"; and {len(tried) - 6} more" if len(tried) > 6 else "")
    described = ", ".join(f"'{a.name}' {tuple(a.shape)} ({', '.join(map(str, a.dims))})" for a in arrays)
    raise InputError(f"inputs {described} do not fit the model; tried {shown}")


def _check_count(model: nn.Module, arrays: list) -> None:
    """A model whose forward takes another number of inputs than given: refused, naming them."""
    expected = _positional_inputs(model)
    if expected is not None:
        low, high, names = expected
        if not low <= len(arrays) <= high:
            takes = f"{low}" if low == high else f"{low} to {high}" if high != math.inf else f"at least {low}"
            raise InputError(f"the model takes {takes} inputs ({', '.join(names)}) but got {len(arrays)} "
                             f"({', '.join(str(a.name) for a in arrays)}); give one --variable (or --inputs "
                             "file) per input, in the order of its forward arguments")


def _positional_inputs(model: nn.Module):
    """(fewest, most, names) positional arguments model.forward takes, or None when its
    signature cannot say (a wrapped forward)."""
    try:
        parameters = list(inspect.signature(model.forward).parameters.values())
    except (TypeError, ValueError):
        return None
    positional = [p for p in parameters if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    low = sum(p.default is p.empty for p in positional)
    high = math.inf if any(p.kind is p.VAR_POSITIONAL for p in parameters) else len(positional)
    names = [p.name for p in positional] + [f"*{p.name}" for p in parameters if p.kind is p.VAR_POSITIONAL]
    return low, high, names


def choose_dtype(model: nn.Module, x, dtype, output=None) -> tuple[torch.dtype, str]:
    """float64 when a float64 copy of the model runs on the inputs (a tensor or a tuple;
    differences then measure methods, not rounding), float32 otherwise; or what the caller
    asked for. output: which of several outputs is explained."""
    if dtype in (torch.float32, "float32"):
        return torch.float32, "as requested"
    if dtype in (torch.float64, "float64"):
        return torch.float64, "as requested"
    if dtype not in (None, "auto"):
        raise InputError(f"dtype must be 'auto', 'float64' or 'float32', got {dtype!r}")
    try:
        with torch.no_grad():
            rows = first_rows(x, 2)
            rows = tuple(t.double() for t in rows) if isinstance(rows, tuple) else rows.double()
            result = forward(copy.deepcopy(model).double().eval(), rows)
            explained = result if torch.is_tensor(result) else resolve_output(result, output)[0]
        if torch.is_tensor(explained) and bool(torch.isfinite(explained).all()):
            return torch.float64, ""
        note = "the float64 model gives non-finite outputs"
    except Exception as error:
        note = f"the model does not run in float64: {str(error).splitlines()[0] if str(error) else error}"
    return torch.float32, note
