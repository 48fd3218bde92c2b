"""`xaibench validate`: check a researcher's own PyTorch model and its explanations before a
relevance map made from them is published.

    report = validate("my_package.models:build_cnn", weights="cnn.safetensors", inputs="test.nc")
    print(report.table()); report.write("validation/")

For each method (default: DEFAULT_METHODS) the native explanation is the reference, and three
checks each get a value, a stated tolerance and PASS / FAIL / SKIPPED (with the reason):

1. conservation (LRP methods): the ledger closes, i.e. sum(relevance) + sum(absorbed) = output,
   as Explanation.relative_conservation_error, the worst sample. With bias=True part of the
   output is absorbed by biases and stabilizers and never reaches the input; the ledger books
   it, so the check is on the closure, not on sum(relevance) == output. The absorbed fraction
   is reported beside it (INFO) so the researcher sees how much of the output the map lacks.
2. agreement[B] for every other backend B in api.BACKENDS that has the method: the worst sample
   of max|R_B - R_native| / sum|R_native|. A backend that is not installed, cannot mirror the
   model (ExportError) or has no rule for one of its layers is SKIPPED, not failed. A
   disagreement the method table documents as the other library's defect (e.g. innvestigate's
   alpha-beta with biases, issue 116) is KNOWN, with the reason, only where the table's control
   earns it: the same comparison with the documented cause removed (e.g. bias=False on both
   sides), or the native engine recomputing what the other library computes (e.g. w^2 against
   native bias=False), must agree within the agreement tolerance; its value is in the detail.
   A control that disagrees too means the documented cause does not explain the difference (a
   bug of the export, the layout or the backend): FAIL.
3. randomization[top k] (Adebayo et al. 2018, "Sanity checks for saliency maps"): the top k
   parameterized layers of a deep copy of the model are re-initialized (their own
   reset_parameters(), seeded), cascading from the top layer down, and the same output is
   explained again. The worst sample's Spearman rank correlation of |relevance| between the
   original and the randomized model must stay below the threshold: a map that does not change
   when the weights that produce the output are replaced does not show what the model learned.
   Some modified-backpropagation rules (z+, alpha1-beta0) are known to be nearly insensitive
   to the top layers (Sixt et al. 2020); this check is where that shows.

Precision: dtype="auto" runs every explanation in float64 when the model runs in float64 (a
copy of it, converted), so that differences measure methods, not rounding; float32 otherwise.
The conservation tolerance depends on it (DEFAULT_TOLERANCES): 1e-10 (float64) or 1e-5
(float32) relative, as the project's conservation tests. Agreement is 1e-4 relative to sum|R| in
both: libraries differ in details that do not matter for a map (where a stabilizer's sign flips,
float32 inside TensorFlow: measured 1e-6 and below), while a different formula or a layer a
library does not see shows at 1e-3 and above. Randomization: Spearman < 0.9 in both.

The user's model is never modified: every explanation runs on deep copies. Loading a weights
file never runs code from it (safetensors, or torch.load(weights_only=True)).

Bad input (a file that is missing, a factory that does not exist, weights or inputs that do
not fit the model, NaN/Inf in the inputs) raises InputError before any check runs; the CLI
turns it into one line and exit status 2. Errors of one explanation become report rows.
"""

from __future__ import annotations

import copy
import csv
import importlib
import importlib.util
import io
import math
import os
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from xaibench import targets as targets_module
from xaibench.backends import table as method_table
from xaibench.errors import BackendUnavailableError, ExportError, InputError, UnsupportedLayerError
from xaibench.io import atomic_path, write_json, write_text

DEFAULT_METHODS = ("lrp.epsilon", "lrp.zplus", "lrp.alpha1beta0", "gradient", "input_x_gradient")

#: per dtype: conservation and agreement are relative errors (<=), randomization is the
#: Spearman rank correlation that must stay below (<) the threshold
DEFAULT_TOLERANCES = {
    torch.float64: {"conservation": 1e-10, "agreement": 1e-4, "randomization": 0.9},
    torch.float32: {"conservation": 1e-5, "agreement": 1e-4, "randomization": 0.9},
}

#: errors that mean "this backend cannot do this model here", not "the explanation is wrong"
SKIPPABLE = (BackendUnavailableError, ExportError, UnsupportedLayerError, ImportError)

PASS, FAIL, SKIPPED, ERROR, INFO = "PASS", "FAIL", "SKIPPED", "ERROR", "INFO"
KNOWN = "KNOWN"   # a documented disagreement whose control confirms the cause: no verdict
_FAILING = (FAIL, ERROR)


# --- the report ------------------------------------------------------------------------------
@dataclass
class CheckResult:
    method: str
    check: str            # conservation, absorbed, agreement[zennit], randomization[top 1], reference
    status: str           # PASS, FAIL, SKIPPED, ERROR (counts as a failure) or INFO (no verdict)
    value: float | None = None
    tolerance: float | None = None
    comparison: str = ""  # how value is held against tolerance: "<=" or "<"
    detail: str = ""      # what was measured, or why skipped / what went wrong


@dataclass
class Report:
    checks: list[CheckResult]
    settings: dict
    #: method -> the native (reference) explanation; not serialized to JSON
    explanations: dict = field(default_factory=dict, repr=False)
    #: the inputs as read (xarray.DataArray, sample first) and how they were reshaped for the model
    inputs: object = field(default=None, repr=False)

    @property
    def passed(self) -> bool:
        return not any(c.status in _FAILING for c in self.checks)

    @property
    def exit_code(self) -> int:
        return 0 if self.passed else 1

    def failures(self) -> list[CheckResult]:
        return [c for c in self.checks if c.status in _FAILING]

    def to_dict(self) -> dict:
        def clean(value):  # JSON has no NaN/Inf
            return None if isinstance(value, float) and not math.isfinite(value) else value

        return {
            "verdict": PASS if self.passed else FAIL,
            "exit_code": self.exit_code,
            "settings": self.settings,
            "checks": [{k: clean(v) for k, v in asdict(c).items()} for c in self.checks],
        }

    def table(self) -> str:
        """The method x check table for a terminal, then the verdict and notes."""
        s = self.settings
        lines = [f"xaibench validate: {s['model']}"
                 + (f" with weights {s['weights']}" if s.get("weights") else ""),
                 f"  inputs {s['inputs']} ({s['samples']} samples, model input {s['model_input_shape']}"
                 f"{', ' + s['input_note'] if s.get('input_note') else ''})",
                 f"  precision {s['dtype']}{' (' + s['dtype_note'] + ')' if s.get('dtype_note') else ''};"
                 f" target {'argmax of each output' if s['target'] is None else s['target']};"
                 f" randomization seed {s['seed']}", ""]
        header = ("method", "check", "value", "tolerance", "status")
        rows = [(c.method, c.check, _number(c.value),
                 f"{c.comparison} {_number(c.tolerance)}" if c.tolerance is not None else "-", c.status)
                for c in self.checks]
        widths = [max(len(str(r[i])) for r in rows + [header]) for i in range(len(header))]

        def line(cells, detail=""):
            text = "  ".join(f"{cell:<{w}}" for cell, w in zip(cells, widths))
            return (text + "  " + detail).rstrip()

        lines.append(line(header, "detail"))
        lines.append(line(["-" * w for w in widths], "------"))
        for row, check in zip(rows, self.checks):
            lines.append(line(row, check.detail))
        lines.append("")
        failures = self.failures()
        if not failures:
            lines.append(f"verdict: PASS ({sum(c.status == PASS for c in self.checks)} checks passed)")
        else:
            lines.append(f"verdict: FAIL ({len(failures)} of "
                         f"{sum(c.status in (PASS, FAIL, ERROR) for c in self.checks)} checks failed)")
        insensitive = sorted({c.method for c in self.checks
                              if c.check.startswith("randomization") and c.status == FAIL})
        for method in insensitive:
            first = next(c for c in self.checks if c.method == method and c.check.startswith("randomization")
                         and c.status == FAIL)
            layers = first.detail.split(";")[0].removeprefix("re-initialized ")
            lines.append(
                f"  {method}: the relevance hardly changes when the top layer(s) {layers} are re-initialized "
                f"(Spearman {_number(first.value)}, not below {_number(first.tolerance)}). This map does not "
                "show what those weights learned; do not read it as evidence of what the model uses for "
                "this output (Adebayo et al. 2018).")
        return "\n".join(lines)

    def write(self, out_dir) -> list[Path]:
        """verdict.csv, relevance_<method>.nc per method and verdict.json (last: its presence means
        the set is complete), each written to a temporary file and renamed into place."""
        out = Path(out_dir)
        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise InputError(f"cannot create the output folder {out}: {error.strerror or error}") from None
        written = []
        for method, explanation in self.explanations.items():
            dataset = self.relevance_dataset(method, explanation)
            path = out / f"relevance_{method}.nc"
            with atomic_path(path) as temporary:   # plain netCDF: the researcher's file, no attribute encoding
                dataset.to_netcdf(temporary, engine="h5netcdf")
            written.append(path)
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=list(CheckResult.__dataclass_fields__), lineterminator="\n")
        writer.writeheader()
        for check in self.checks:
            writer.writerow(asdict(check))
        write_text(out / "verdict.csv", buffer.getvalue())
        write_json(out / "verdict.json", self.to_dict(), indent=2)
        return written + [out / "verdict.csv", out / "verdict.json"]

    def relevance_dataset(self, method: str, explanation):
        """The reference relevance with the input's dimensions and coordinates."""
        import xarray as xr

        array = self.inputs
        relevance = explanation.relevance.detach().cpu().numpy()
        output = explanation.output.detach().cpu().numpy()
        if relevance.size == array.size:
            # the model's shape may have an added channel axis or be flattened: back to the file's
            data = xr.DataArray(relevance.reshape(array.shape), dims=array.dims, coords=array.coords)
            output_dims = (array.dims[0],)
        else:  # several targets per sample: [sample, target, ...]
            data = xr.DataArray(relevance.reshape((array.shape[0], -1) + array.shape[1:]),
                                dims=(array.dims[0], "target") + array.dims[1:], coords=array.coords)
            output_dims = (array.dims[0], "target")
        # no CF `units`: they are those of the model's output (per unit of input for a gradient),
        # which the model does not declare
        data.attrs = {
            "long_name": f"relevance of the explained output ({method}, native backend)",
            "comment": "in units of the explained output" if method != "gradient"
            else "in units of the explained output per unit of input",
            "method": method,
            "explained_variable": str(array.name),
        }
        variables = {"relevance": data,
                     "output": xr.DataArray(output, dims=output_dims,
                                            attrs={"long_name": "explained output value (softmax stripped)"})}
        target = explanation.target
        if torch.is_tensor(target) and target.dtype != torch.bool and tuple(target.shape) == output.shape:
            variables["target"] = xr.DataArray(target.cpu().numpy(), dims=output_dims,
                                               attrs={"long_name": "flat index of the explained output"})
        dataset = xr.Dataset(variables)
        dataset.attrs = {"title": f"xaibench validate: {method} relevance",
                         "model": str(self.settings.get("model")),
                         "weights": str(self.settings.get("weights")),
                         "inputs": str(self.settings.get("inputs")),
                         "dtype": str(self.settings.get("dtype"))}
        return dataset


def _number(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float) and math.isnan(value):
        return "nan"
    return f"{value:.3g}"


# --- loading: model, weights, inputs -----------------------------------------------------------
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
            tried.append(f"{tuple(candidate.shape)}: {_one_line(error)[:160]}")
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


# --- the checks -------------------------------------------------------------------------------
def parameterized_layers(model: nn.Module, x: torch.Tensor) -> list[str]:
    """Paths of the modules that own parameters, in the order of their last call in a forward
    pass (the last one is the top layer), found with hooks on a copy of the model."""
    probe = copy.deepcopy(model).eval()
    calls = []
    handles = [module.register_forward_hook(lambda m, i, o, name=name: calls.append(name))
               for name, module in probe.named_modules()
               if name and any(True for _ in module.parameters(recurse=False))]
    try:
        with torch.no_grad():
            probe(x[:1])
    finally:
        for handle in handles:
            handle.remove()
    last = {name: index for index, name in enumerate(calls)}
    return sorted(last, key=last.get)


def randomized_copy(model: nn.Module, layers: list[str], seed: int) -> nn.Module:
    """A deep copy with the given layers re-initialized; layers[i] gets seed + i, so the top
    layer is re-initialized the same way at every level of the cascade. The global random state
    is left as it was."""
    randomized = copy.deepcopy(model)
    for index, path in enumerate(layers):
        module = randomized.get_submodule(path)
        with torch.random.fork_rng(devices=[]), torch.no_grad():
            torch.manual_seed(seed + index)
            if hasattr(module, "reset_parameters"):
                module.reset_parameters()
            else:  # a custom module: normal values at the scale of its current weights
                for parameter in module.parameters(recurse=False):
                    scale = float(parameter.std()) if parameter.numel() > 1 else float(parameter.abs().mean())
                    parameter.normal_(0.0, scale or 1.0)
    return randomized


def spearman_per_sample(a: torch.Tensor, b: torch.Tensor, sample_dims: int) -> np.ndarray:
    """Spearman rank correlation of |a| and |b| per sample (and target: the first sample_dims
    axes are rows), by xaibench.metrics.spearman: ties get average ranks; a constant map
    against a non-constant one counts as 0 (it lost its structure), two constant maps as 1."""
    from xaibench.metrics import spearman

    rows = int(np.prod(a.shape[:sample_dims]))
    return spearman(a.detach().double().cpu().numpy().reshape(rows, -1),
                    b.detach().double().cpu().numpy().reshape(rows, -1), absolute=True)


def agreement(relevance: torch.Tensor, reference: torch.Tensor, sample_dims: int) -> torch.Tensor:
    """max|R - R_ref| / sum|R_ref| per sample (and target: the first sample_dims axes are rows),
    by xaibench.metrics.agreement: equal maps agree (0), a non-zero map against a zero
    reference does not (inf)."""
    from xaibench.metrics import agreement as metric

    rows = int(np.prod(reference.shape[:sample_dims]))
    values = metric(relevance.detach().double().cpu().numpy().reshape(rows, -1),
                    reference.detach().double().cpu().numpy().reshape(rows, -1))
    return torch.from_numpy(values).reshape(reference.shape[:sample_dims])


def _one_line(error: BaseException) -> str:
    text = str(error).strip()
    return f"{type(error).__name__}: {text.splitlines()[0] if text else ''}".rstrip(": ")


def _backend_methods(backend: str):
    """The backend's method names, or the reason it cannot say (not installed here, ...)."""
    from xaibench import api
    try:
        return set(api.methods(backend)), ""
    except SKIPPABLE as error:
        return None, _one_line(error)
    except ValueError as error:  # listed in BACKENDS but not (yet) in the methods table
        return None, _one_line(error)


def validate(model_or_factory, *, weights=None, inputs, variable: str | None = None,
             methods=DEFAULT_METHODS, target=None, tolerances: dict | None = None, dtype="auto",
             seed: int = 0, cascade: int | None = None, samples: int | None = None, backends=None,
             factory_kwargs: dict | None = None, method_options: dict | None = None, out=None) -> Report:
    """Run the checks of `xaibench validate` (see the module docstring) and return the Report.

    model_or_factory: an nn.Module (never modified), a factory called with factory_kwargs, or
    'module:factory'. weights: a .safetensors/.pt/.pth state dict (loaded strictly into a copy).
    inputs: a netCDF path, an xarray Dataset/DataArray or an array; first dimension = sample.
    methods: canonical method names (the native backend must have each). target: as in
    xaibench.explain (None: argmax). tolerances: overrides of DEFAULT_TOLERANCES[dtype]
    (keys conservation, agreement, randomization). cascade: how many layers to re-initialize
    from the top (None: all). samples: use only the first N samples. backends: the backends
    compared with native (None: every other one in api.BACKENDS). method_options: per method,
    options passed to explain (e.g. {"lrp.epsilon": {"epsilon": 0.01}}). out: also write the
    verdict files there (Report.write).
    """
    from xaibench import api
    # the cheap checks of the arguments first, then loading (which may take a while)
    methods = [methods] if isinstance(methods, str) else list(methods)
    native = set(api.methods("native"))
    unknown = [m for m in methods if m not in native]
    if not methods or unknown:
        raise InputError(f"unknown method(s) {', '.join(unknown) or '(none given)'}; the native backend "
                         f"(the reference) has: {', '.join(sorted(native))}")
    method_options = dict(method_options or {})
    others = [b for b in api.BACKENDS if b != "native"]
    if backends is not None:
        backends = [backends] if isinstance(backends, str) else list(backends)
        wrong = [b for b in backends if b not in others]
        if wrong:
            raise InputError(f"unknown backend(s) {', '.join(wrong)} to compare with native; "
                             f"choose from {', '.join(others) or 'none'}")
        others = backends
    unknown = [key for key in (tolerances or {}) if key not in DEFAULT_TOLERANCES[torch.float64]]
    if unknown:
        raise InputError(f"unknown tolerance(s) {', '.join(unknown)}; known: "
                         f"{', '.join(DEFAULT_TOLERANCES[torch.float64])}")

    model, model_name = build_model(model_or_factory, factory_kwargs)
    # everything below runs on copies: the user's weights, hooks and train/eval mode stay as they are
    try:
        working = copy.deepcopy(model)
    except Exception as error:
        raise InputError(f"the model cannot be deep-copied ({_one_line(error)}); validate needs copies "
                         "so that it never modifies the model") from None
    if weights is not None:
        apply_weights(working, load_weights(weights), weights)
    array = read_inputs(inputs, variable, samples)
    x, input_note = fit_inputs(working, array)


    chosen, dtype_note = choose_dtype(working, x, dtype)
    limits = dict(DEFAULT_TOLERANCES[chosen])
    for key, value in (tolerances or {}).items():
        if not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
            raise InputError(f"tolerance {key} must be a finite number >= 0, got {value!r}")
        limits[key] = float(value)

    # the target must fit the output before anything is explained (one clear error, exit 2)
    with torch.no_grad():
        output = copy.deepcopy(working).eval()(x)
    targets_module.resolve(output, target)

    layers = parameterized_layers(working, x)
    top_down = layers[::-1][: (len(layers) if cascade is None else max(0, cascade))]
    labels = [f"{path} ({type(working.get_submodule(path)).__name__})" for path in top_down]
    randomized_models = {}  # level -> model, built once and shared by all methods

    def randomized(level):
        if level not in randomized_models:
            randomized_models[level] = randomized_copy(working, top_down[:level], seed)
        return randomized_models[level]

    settings = {
        "model": model_name, "weights": None if weights is None else str(weights),
        "inputs": str(inputs) if isinstance(inputs, (str, os.PathLike)) else type(inputs).__name__,
        "variable": str(array.name), "samples": int(x.shape[0]),
        "input_dims": list(map(str, array.dims)), "model_input_shape": list(x.shape[1:]),
        "input_note": input_note, "dtype": str(chosen).replace("torch.", ""), "dtype_note": dtype_note,
        "target": target if target is None or isinstance(target, int) else "per sample",
        "methods": methods, "tolerances": limits, "seed": seed, "layers_top_down": top_down,
        "backends": others, "xaibench_version": _version(),
    }
    report = Report([], settings, inputs=array)
    for method in methods:
        report.checks.extend(_check_method(api, working, x, method, target, chosen, limits,
                                           method_options.get(method, {}), others, labels, randomized,
                                           report))
    if out is not None:
        report.write(out)
    return report


def _version():
    from xaibench import __version__
    return __version__


def _check_method(api, model, x, method, target, dtype, limits, options, backends, layers, randomized,
                  report):
    rows = []

    def row(check, status, value=None, tolerance=None, comparison="", detail=""):
        rows.append(CheckResult(method, check, status, None if value is None else float(value),
                                tolerance, comparison, detail))

    try:
        reference = api.explain(model, x, method, target=target, dtype=dtype, **options)
    except Exception as error:  # no reference: nothing of this method can be validated
        row("reference", ERROR, detail=f"the native explanation failed: {_one_line(error)}")
        return rows
    report.explanations[method] = reference
    sample_dims = reference.output.dim()

    # 1. conservation: the ledger closes (relevance + absorbed = output), worst sample
    # (no ledger, no check: integrated gradients carries its completeness residual, a property of
    # the Riemann sum, as conservation_error, but has no ledger to close)
    relative = reference.relative_conservation_error
    if relative is None or reference.ledger is None:
        row("conservation", SKIPPED, detail=f"{method} is not an LRP method: no conservation property")
    else:
        value = float(relative.max())
        row("conservation", PASS if value <= limits["conservation"] else FAIL, value, limits["conservation"], "<=",
            "max over samples of |sum R + absorbed - output| / max(|output|, sum|R|)")
        row("absorbed", INFO, *_absorbed(reference))

    # 2. agreement with every other backend that has the method
    for backend in backends:
        check = f"agreement[{backend}]"
        available, reason = _backend_methods(backend)
        if available is None:
            row(check, SKIPPED, detail=f"skipped: {reason}")
            continue
        if method not in available:
            row(check, SKIPPED, detail=f"skipped: {backend} has no {method}")
            continue
        try:
            other = api.explain(model, x, method, target=reference.target, backend=backend, dtype=dtype, **options)
        except SKIPPABLE as error:
            row(check, SKIPPED, detail=f"skipped: {_one_line(error)}")
            continue
        except Exception as error:
            row(check, ERROR, detail=f"{backend} failed: {_one_line(error)}")
            continue
        if tuple(other.relevance.shape) != tuple(reference.relevance.shape):
            row(check, FAIL, math.inf, limits["agreement"], "<=",
                f"relevance shape {tuple(other.relevance.shape)} vs native {tuple(reference.relevance.shape)}")
            continue
        value = _worst(agreement(other.relevance, reference.relevance, sample_dims))
        detail = f"max over samples of max|R_{backend} - R_native| / sum|R_native|"
        known = method_table.documented_differences(backend, method, options, model)
        if value > limits["agreement"] and known:
            status, detail = _documented_or_failed(api, backend, known, model, x, method, options, reference, other,
                                                   dtype, limits["agreement"])
            row(check, status, value, limits["agreement"], "<=", detail)
            continue
        row(check, PASS if value <= limits["agreement"] else FAIL, value, limits["agreement"], "<=", detail)

    # 3. model randomization, cascading from the top layer down; the same outputs are explained
    if not layers:
        row("randomization", SKIPPED, detail="skipped: the model has no parameterized layers")
        return rows
    for level in range(1, len(layers) + 1):
        check = f"randomization[top {level}]"
        names = ", ".join(layers[:level])
        try:
            after = api.explain(randomized(level), x, method, target=reference.target, dtype=dtype, **options)
        except Exception as error:
            row(check, ERROR, detail=f"re-initialized {names}; explaining failed: {_one_line(error)}")
            continue
        correlation = spearman_per_sample(reference.relevance, after.relevance, sample_dims)
        value = float(correlation.max())
        row(check, PASS if value < limits["randomization"] else FAIL, value, limits["randomization"], "<",
            f"re-initialized {names}; max over samples of Spearman(|R|, |R_randomized|) "
            f"(mean {float(correlation.mean()):.3g})")
    return rows


def _worst(per_sample: torch.Tensor) -> float:
    """The worst sample's agreement value; inf if any is not finite."""
    return float(per_sample.max()) if bool(torch.isfinite(per_sample).all()) else math.inf


def _documented_or_failed(api, backend, differences, model, x, method, options, reference, other, dtype,
                          tolerance):
    """A disagreement for which the method table documents a cause is KNOWN only if the table's
    control (the same comparison with every documented cause removed, or the native engine
    recomputing what the other library computes) agrees within the tolerance; otherwise the
    documented cause does not explain it (a bug of the export, the layout or a backend): FAIL.
    Returns (status, detail)."""
    reasons = "; ".join(d.reason for d in differences)
    controls = " + ".join(d.control.text for d in differences)
    try:
        native_side, other_side = method_table.control(differences, method, options, model, x)
        # the same outputs as the measured comparison, whatever the control model's argmax
        native = api.explain(native_side.model, x, native_side.method, target=reference.target, dtype=dtype,
                             **native_side.options)
        other_control = other if other_side is None else api.explain(
            other_side.model, x, other_side.method, target=reference.target, backend=backend, dtype=dtype,
            **other_side.options)
        value = _worst(agreement(other_control.relevance, native.relevance, reference.output.dim()))
    except Exception as error:
        return FAIL, (f"the documented cause is unverified: its control [{controls}] failed: {_one_line(error)} "
                      f"(documented: {reasons})")
    if value <= tolerance:
        return KNOWN, f"known difference: {reasons}; control [{controls}] agrees: {value:.3g} <= {tolerance:.3g}"
    return FAIL, (f"the documented cause does not explain the difference: control [{controls}] still differs by "
                  f"{value:.3g} > {tolerance:.3g} (documented: {reasons})")


def _absorbed(explanation):
    """The share of the explained output that never reaches the input, per sample:
    absorbed / |output| (positive: held back by biases/stabilizers; negative: added by them)."""
    output = explanation.output.detach().double()
    scale = output.abs().clamp(min=torch.finfo(torch.float64).tiny)
    kinds = {"bias": "absorbed_bias", "stabilizer": "absorbed_stabilizer", "dropped": "absorbed_dropped",
             "constant": "absorbed_constant"}
    shares = {}
    for label, attribute in kinds.items():
        total = sum((getattr(r, attribute).detach().double() for r in explanation.ledger), torch.zeros_like(output))
        shares[label] = (total / scale).reshape(-1)
    total_share = sum(shares.values())
    parts = ", ".join(f"{label} {float(v.median()):.3g}" for label, v in shares.items() if bool((v != 0).any()))
    detail = (f"median over samples of absorbed / |output| ({parts or 'nothing absorbed'}); range "
              f"[{float(total_share.min()):.3g}, {float(total_share.max()):.3g}]: this share of the output is "
              "not in the map")
    return float(total_share.median()), None, "", detail
