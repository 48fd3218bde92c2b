"""The same explanations computed by innvestigate 2.1.2, in the TF environment.

TensorFlow cannot share an environment with Snakemake 9 (docs/architecture.md, "Environments"),
so innvestigate runs in a worker process started with .venv-tf's Python (innvestigate_worker.py).
The model is exported layer by layer (a chain or a graph) to a Keras twin (keras_export.py);
batches cross as .npz files; the worker keeps the Keras model and each analyzer it built, so
only the first call on a model pays for building the analyzer graph. One worker per float type runs for the life of
the Python process.

What a canonical method means here is in table.py. Differences from the native engine
that are innvestigate's behaviour, not ours, are measured in tests/test_innvestigate_agreement.py
and the census; in short: alpha-beta and the bounded rule lose relevance (innvestigate
issues 116, 327), deep Taylor is not conservative (161) and gives each operand of a residual
addition all of the relevance, BatchNorm's reverse mapping drops the beta share, and the bounds
of z^B are one pair for the whole batch (native: per sample). Residual nets and U-Nets are
exported as Keras functional graphs (Add, Concatenate); there the LRP rules agree with the
native engine's (docs/papers.md section 7, the entry on issues 118 and 192).
"""

from __future__ import annotations

import atexit
import hashlib
import json
import os
import subprocess
import tempfile
import threading
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .. import targets as targets_module
from ..errors import BackendUnavailableError, ExportError, InputError, UnknownMethodError
from ..explanation import Explanation
from ..lrp import composites as native_composites
from ..lrp import engine
from . import keras_export
from .table import METHODS, available

BACKEND = "innvestigate"
WORKER = Path(__file__).with_name("innvestigate_worker.py")
#: a Keras twin must reproduce the PyTorch output to this relative error before it is used
FORWARD_TOLERANCE = {torch.float32: 1e-5, torch.float64: 1e-10}
#: options the innvestigate backend reads beyond the LRP ones
EXTRA_OPTIONS = {"integrated_gradients": {"baseline": "zeros", "steps": 64, "rule": "riemann_left"},
                 "smoothgrad": {"samples": 32}}


def tf_python() -> Path:
    """The TF environment's interpreter: $XAIBENCH_TF_PYTHON, else .venv-tf next to the package."""
    configured = os.environ.get("XAIBENCH_TF_PYTHON")
    if configured:
        return Path(configured)
    return Path(__file__).resolve().parents[2] / ".venv-tf" / "bin" / "python"


class _Worker:
    """One innvestigate worker process and its scratch directory."""

    def __init__(self, floatx: str):
        python = tf_python()
        if not python.exists():
            raise BackendUnavailableError(
                BACKEND, f"no TF environment at {python}; run `make setup` (creates .venv-tf with innvestigate "
                "2.1.2) or set XAIBENCH_TF_PYTHON to a Python that has it")
        self.scratch = tempfile.TemporaryDirectory(prefix="xaibench-innvestigate-")
        self.log_path = Path(self.scratch.name) / "worker.log"
        self.log = open(self.log_path, "w")
        self.process = subprocess.Popen([str(python), str(WORKER), "--floatx", floatx],
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.log,
                                        text=True, bufsize=1)
        self.lock = threading.Lock()
        self.models: set[str] = set()
        self.verified: set[str] = set()   # twins whose output was checked against PyTorch
        self.counter = 0
        ready = self._reply()
        if not ready.get("ok"):
            raise BackendUnavailableError(BACKEND, f"the TF worker did not start: {ready.get('error')}")

    def _reply(self) -> dict:
        line = self.process.stdout.readline()
        if not line:
            self.log.flush()
            tail = self.log_path.read_text()[-2000:]
            raise BackendUnavailableError(BACKEND, f"the TF worker stopped; its log ends with:\n{tail}")
        return json.loads(line)

    def path(self, stem: str) -> str:
        self.counter += 1
        return str(Path(self.scratch.name) / f"{stem}-{self.counter}.npz")

    def request(self, **request) -> dict:
        with self.lock:
            self.process.stdin.write(json.dumps(request) + "\n")
            self.process.stdin.flush()
            reply = self._reply()
        self.models = set(reply.get("loaded", self.models))   # the worker may have evicted some
        if not reply.get("ok"):
            raise RuntimeError(f"innvestigate failed on {request.get('analyzer', request['op'])}: "
                               f"{reply.get('error')}\n{reply.get('traceback', '')}")
        return reply

    def close(self):
        if self.process.poll() is None:
            try:
                self.process.stdin.write(json.dumps({"op": "quit"}) + "\n")
                self.process.stdin.flush()
                self.process.wait(timeout=10)
            except (OSError, subprocess.TimeoutExpired):
                self.process.kill()
        self.log.close()
        self.scratch.cleanup()


_WORKERS: dict[str, _Worker] = {}


def worker(floatx: str) -> _Worker:
    if floatx not in _WORKERS or _WORKERS[floatx].process.poll() is not None:
        _WORKERS[floatx] = _Worker(floatx)
    return _WORKERS[floatx]


@atexit.register
def shutdown():
    """Stop the workers (also called by tests to start afresh)."""
    while _WORKERS:
        _WORKERS.popitem()[1].close()


def _load(model: nn.Module, x: torch.Tensor, floatx: str) -> tuple[str, keras_export.KerasSpec, _Worker]:
    """Export the model, send it to the worker once (keyed by its content), and check that
    the Keras twin computes the same output."""
    spec = keras_export.export(model, x)
    digest = hashlib.sha256(json.dumps(spec.to_json(), sort_keys=True).encode())
    for key in sorted(spec.weights):
        digest.update(key.encode())
        digest.update(spec.weights[key].tobytes())
    model_id = digest.hexdigest()[:20]
    process = worker(floatx)
    if model_id not in process.models:
        spec_path = Path(process.path("spec")).with_suffix(".json")
        spec_path.write_text(json.dumps(spec.to_json()))
        weights_path = process.path("weights")
        np.savez(weights_path, **spec.weights)
        try:
            process.request(op="load", model=model_id, spec=str(spec_path), weights=weights_path)
        finally:
            _remove(spec_path, weights_path)
        process.models.add(model_id)
    return model_id, spec, process


def _remove(*paths):
    for path in paths:
        Path(path).unlink(missing_ok=True)


def _twin_output(model_id, process, x_keras, shape) -> np.ndarray:
    """The Keras twin's output for x, in the PyTorch layout `shape`."""
    inputs, out = process.path("forward-in"), process.path("forward-out")
    np.savez(inputs, x=x_keras)
    try:
        process.request(op="forward", model=model_id, inputs=inputs, out=out)
        with np.load(out) as archive:
            keras_output = archive["output"]
    finally:
        _remove(inputs, out)
    if len(shape) > 2:   # the twin's output is flattened in (*S, C) order
        return keras_export.from_keras_input(keras_output.reshape(shape[:1] + shape[2:] + shape[1:2]))
    return keras_output.reshape(shape)


def keras_forward(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The Keras twin's output for x (final softmax/sigmoid stripped), in PyTorch's layout."""
    prepared = engine.prepare(model, x)
    x, graph = prepared.x, prepared.graph
    with torch.no_grad():
        shape = tuple(graph.forward(x, {})[graph.explained_name].shape)
    floatx = "float64" if x.dtype == torch.float64 else "float32"
    model_id, _, process = _load(model, x, floatx)
    output = _twin_output(model_id, process, keras_export.to_keras_input(x.detach().cpu().numpy()), shape)
    return torch.from_numpy(np.ascontiguousarray(output)).to(x.dtype)


def _check_twin(model_id, process, x_keras, expected: torch.Tensor):
    keras_output = _twin_output(model_id, process, x_keras, tuple(expected.shape))
    reference = expected.detach().cpu().double().numpy()
    error = np.abs(keras_output - reference).max() / max(np.abs(reference).max(), 1e-30)
    tolerance = FORWARD_TOLERANCE[expected.dtype]
    if not error <= tolerance:
        raise ExportError(BACKEND, "model", "Keras twin",
                          f"its output differs from PyTorch's by {error:.2e} relative (tolerance {tolerance:.0e}); "
                          "a layer was not mirrored faithfully")


def _options(method: str, options: dict) -> dict:
    known = {**native_composites.DEFAULT_OPTIONS, **EXTRA_OPTIONS.get(method, {})}
    if method == "smoothgrad" and ("noise_level" in options or "seed" in options):
        raise ValueError("innvestigate 2.1.2's SmoothGrad ignores its noise_scale (its noise layer is built "
                         "without it: the standard deviation is always 1 in input units) and draws TF's own "
                         "random numbers: noise_level and seed cannot be honoured")
    unknown = set(options) - set(known)
    if unknown:
        raise ValueError(f"unknown option(s) {sorted(unknown)} for {method} on innvestigate; known: {sorted(known)}")
    merged = {**known, **options}
    if merged.get("rule", "riemann_left") != "riemann_left":
        raise ValueError("innvestigate's integrated gradients is a left Riemann sum (points k/steps, "
                         "k = 0..steps-1): only rule='riemann_left'")
    if merged["maxpool"] != "winner_take_all":
        raise ValueError("innvestigate has only winner-take-all max pooling (the plain gradient)")
    if merged.get("product", "uniform") != "uniform":
        raise ValueError("innvestigate cannot mirror products of two tensors: product= is a native option")
    if merged.get("attention", "cp") != "cp":
        raise ValueError("innvestigate has no attention rules: attention= is a native option")
    return merged


def _arrays(method, o, x: torch.Tensor) -> dict:
    """Arrays the analyzer needs beside the input: a baseline, bounds (Keras layout, one
    for the whole batch, since innvestigate bakes them into the analyzer graph)."""
    arrays = {}
    if method == "integrated_gradients":
        baseline = o["baseline"]
        if isinstance(baseline, str):
            if baseline not in ("zeros", "mean"):
                raise ValueError(f"baseline must be 'zeros', 'mean' or a tensor, got {baseline!r}")
            baseline = torch.zeros_like(x[:1]) if baseline == "zeros" else x.mean(0, keepdim=True)
        baseline = torch.as_tensor(baseline, dtype=x.dtype)
        if baseline.dim() == x.dim() and baseline.shape[0] != 1:
            raise InputError("innvestigate takes one baseline for the whole batch, not one per sample")
        baseline = baseline.reshape((1,) + tuple(baseline.shape[-(x.dim() - 1):])) if baseline.dim() else baseline
        baseline = torch.broadcast_to(baseline, (1,) + tuple(x.shape[1:]))
        arrays["reference"] = keras_export.to_keras_input(baseline.cpu().numpy())[0]
    if method in ("lrp.zbox", "deep_taylor.bounded"):
        low = x.min() if o["low"] is None else torch.as_tensor(o["low"], dtype=x.dtype)
        high = x.max() if o["high"] is None else torch.as_tensor(o["high"], dtype=x.dtype)
        for name, value in (("low", low), ("high", high)):
            if value.dim() > 0 and value.numel() > 1:
                raise InputError(f"innvestigate takes a scalar {name} bound for the whole batch")
        prefix = "input_layer_" if method == "lrp.zbox" else ""
        arrays[prefix + "low"] = np.asarray(float(low))
        arrays[prefix + "high"] = np.asarray(float(high))
        o["low"], o["high"] = float(low), float(high)
    return arrays


def explain(model: nn.Module, x, method: str, target=None, dtype=None, **options) -> Explanation:
    if method not in available(BACKEND):
        raise UnknownMethodError(method, BACKEND, available(BACKEND))
    o = _options(method, options)
    prepared = engine.prepare(model, x, dtype)  # the native engine's mode and dtype policy
    x, graph = prepared.x, prepared.graph
    floatx = "float64" if x.dtype == torch.float64 else "float32"
    with torch.no_grad():
        output = graph.forward(x, {})[graph.explained_name]   # also names the layer of a wrong input shape
    selected = targets_module.resolve(output, target)
    rows = selected.selection.reshape(selected.count, x.shape[0], -1)
    if not bool((rows.sum(-1) == 1).all()):
        raise InputError("innvestigate explains one output index per sample; a mask of several outputs "
                         "is not supported (use the native backend)")
    flat = rows.argmax(-1).cpu().numpy()
    selection = keras_export.keras_output_index(flat, output.shape[1:]).reshape(flat.shape).astype(np.int64)

    model_id, spec, process = _load(model, x, floatx)
    x_keras = keras_export.to_keras_input(x.detach().cpu().numpy())
    if model_id not in process.verified:   # once per twin (its id is a hash of the weights), like the engine
        _check_twin(model_id, process, x_keras, output)
        process.verified.add(model_id)

    entry = METHODS[method].innvestigate
    kwargs = entry.kwargs(o)
    if method == "smoothgrad":
        o["noise_std"] = 1.0   # what innvestigate 2.1.2 adds, whatever noise_scale says (recorded)
    inputs, out = process.path("in"), process.path("out")
    np.savez(inputs, x=x_keras, selection=selection, **_arrays(method, o, x))
    try:
        process.request(op="analyze", model=model_id, analyzer=entry.analyzer(o), kwargs=kwargs,
                        inputs=inputs, out=out)
        with np.load(out) as archive:
            relevance = archive["relevance"]            # [T, B, *Keras input]
    finally:
        _remove(inputs, out)   # a long census would otherwise fill the scratch folder
    relevance = np.stack([keras_export.from_keras_input(r) for r in relevance])
    relevance = torch.from_numpy(np.ascontiguousarray(relevance)).to(x.dtype).to(x.device)
    relevance = relevance.reshape((-1,) + tuple(x.shape[1:]))
    explained = selected.explained(output)
    recorded = {k: v for k, v in o.items() if k in options or k in ("low", "high") and method in
                ("lrp.zbox", "deep_taylor.bounded") or k == "noise_std"}
    return Explanation(selected.arrange(relevance), selected.arrange(explained), method, BACKEND,
                       selected.description, stripped=list(spec.stripped), options=recorded)


def check_available() -> None:
    """Raise BackendUnavailableError unless the worker starts (for tests and validate)."""
    worker("float32")
