"""The innvestigate side of the innvestigate backend: a long-lived worker process.

Run by the TF environment's Python (.venv-tf: tensorflow 2.14, innvestigate 2.1.2,
numpy < 2), never imported by the main environment and importing nothing from xaibench
(the package is not installed there). The main process talks to it one JSON request per
line on stdin and one JSON reply per line on the original stdout; arrays travel as .npz
files. Keras' own printing is sent to stderr so it cannot corrupt the replies.

Requests:
  {"op": "load", "model": ID, "spec": spec.json, "weights": weights.npz}
  {"op": "forward", "model": ID, "inputs": in.npz, "out": out.npz}
  {"op": "analyze", "model": ID, "analyzer": NAME, "kwargs": {...}, "inputs": in.npz, "out": out.npz}
  {"op": "quit"}
in.npz holds "x" (Keras layout) and, for analyze, "selection" [T, B] (flat Keras output
indices, one row per target) and optionally "reference" (integrated gradients) or
"low"/"high" (bounded rules). Models and analyzers are built once and cached, so a batch
of several targets, or a second call on the same model, does not rebuild the analyzer graph.

spec.json: {"input_shape", "output_shape", "layers"}; each layer a dict with "kind", "name",
"weights" (keys into weights.npz, "<index>/<name>") and its settings; in a graph (residual adds,
concatenations) also "inputs", the names of the layers it reads ("input": the model input);
without "inputs" a layer reads the layer before it. The last layer is the output.

Usage: python innvestigate_worker.py --floatx float32|float64
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import json
import os
import sys
import time
import traceback

WRAPPERS = ("integrated_gradients", "smoothgrad")
MAX_MODELS = 16   # models kept loaded (each in its own graph); the least recently used goes first


def _protocol_stream():
    """Keep a private handle on stdout for replies and point fd 1 at stderr."""
    replies = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    return replies


def _import_tf(floatx):
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import warnings

    warnings.filterwarnings("ignore")
    import numpy as np
    import tensorflow as tf

    tf.compat.v1.disable_eager_execution()   # innvestigate 2.1.2 works in graph mode only
    tf.keras.backend.set_floatx(floatx)
    import innvestigate

    return np, tf, innvestigate


class Loaded:
    """A Keras twin in a graph and session of its own, with the analyzers built on it.

    One graph per model keeps models apart: in graph mode, models sharing the default graph
    share layer names and a failed op can poison later ones; and evicting a model frees
    its memory by closing its session."""

    def __init__(self, tf, build):
        self.build = build
        self.wrapper_twin = None
        self.graph = tf.Graph()
        with self.graph.as_default():
            tf.compat.v1.set_random_seed(0)   # SmoothGrad's noise: reproducible per model
            self.session = tf.compat.v1.Session(graph=self.graph)
        self.tf = tf
        self.analyzers = {}
        with self.within():
            self.model = build()

    @contextlib.contextmanager
    def within(self):
        with self.graph.as_default(), self.session.as_default():
            self.tf.compat.v1.keras.backend.set_session(self.session)
            yield

    def for_analyzer(self, name):
        """The twin an analyzer runs on. innvestigate's wrappers (integrated gradients,
        SmoothGrad) call the model's layers on new inputs; the extra inbound nodes make its
        is_input_layer check fail, so a first-layer rule (z^B) built later on the same twin
        is silently not applied. Wrappers get a twin of their own."""
        if name not in WRAPPERS:
            return self
        if self.wrapper_twin is None:
            self.wrapper_twin = Loaded(self.tf, self.build)
        return self.wrapper_twin

    def close(self):
        if self.wrapper_twin is not None:
            self.wrapper_twin.close()
        self.session.close()


class Worker:
    def __init__(self, floatx):
        self.floatx = floatx
        self.np, self.tf, self.innvestigate = _import_tf(floatx)
        self.models: collections.OrderedDict[str, Loaded] = collections.OrderedDict()

    # --- model ---------------------------------------------------------------------------------
    def load(self, request):
        if request["model"] in self.models:
            self.models.move_to_end(request["model"])
            return {}
        while len(self.models) >= MAX_MODELS:   # least recently used first
            self.models.popitem(last=False)[1].close()
        with open(request["spec"]) as handle:
            spec = json.load(handle)
        with self.np.load(request["weights"]) as archive:
            weights = {key: archive[key].astype(self.floatx) for key in archive.files}
        self.models[request["model"]] = Loaded(self.tf, lambda: self._build(spec, weights))
        return {}

    def _build(self, spec, weights):
        keras = self.tf.keras
        layers = keras.layers
        inputs = keras.Input(shape=tuple(spec["input_shape"]))
        tensor = inputs
        tensors = {"input": inputs}   # a graph's layers name the layers they read; a chain's do not
        for index, layer_spec in enumerate(spec["layers"]):
            layer = self._layer(layers, index, layer_spec)
            if "inputs" in layer_spec:
                read = [tensors[name] for name in layer_spec["inputs"]]
                tensor = layer(read[0] if len(read) == 1 else read)
            else:
                tensor = layer(tensor)
            tensors[layer_spec["name"]] = tensor
            if layer_spec["weights"]:
                layer.set_weights([weights[f"{index}/{key}"] for key in layer_spec["weights"]])
        if len(tensor.shape) > 2:
            # innvestigate 2.1.2 fails to flatten a map-shaped output itself (it calls Flatten
            # on a list); the flat (*S, C) order is the one the main side's indices use
            tensor = layers.Flatten(name="flat_output")(tensor)
        return keras.Model(inputs, tensor)

    @staticmethod
    def _layer(layers, index, spec):
        kind = spec["kind"]
        name = f"layer{index}_{kind}"
        rank = spec.get("rank")
        if kind == "dense":
            return layers.Dense(spec["units"], activation=spec["activation"], use_bias=spec["use_bias"], name=name)
        if kind == "conv":
            conv = {1: layers.Conv1D, 2: layers.Conv2D, 3: layers.Conv3D}[rank]
            return conv(spec["filters"], tuple(spec["kernel_size"]), strides=tuple(spec["strides"]),
                        dilation_rate=tuple(spec["dilation"]), padding=spec["padding"],
                        activation=spec["activation"], use_bias=spec["use_bias"], name=name)
        if kind == "zero_pad":
            pad = {1: layers.ZeroPadding1D, 2: layers.ZeroPadding2D, 3: layers.ZeroPadding3D}[rank]
            padding = spec["padding"][0] if rank == 1 else tuple(spec["padding"])
            return pad(padding, name=name)
        if kind in ("max_pool", "avg_pool"):
            table = ({1: layers.MaxPooling1D, 2: layers.MaxPooling2D, 3: layers.MaxPooling3D} if kind == "max_pool"
                     else {1: layers.AveragePooling1D, 2: layers.AveragePooling2D, 3: layers.AveragePooling3D})
            return table[rank](pool_size=tuple(spec["pool_size"]), strides=tuple(spec["strides"]),
                               padding="valid", name=name)
        if kind == "global_avg_pool":
            table = {1: layers.GlobalAveragePooling1D, 2: layers.GlobalAveragePooling2D,
                     3: layers.GlobalAveragePooling3D}
            return table[rank](keepdims=True, name=name)
        if kind == "upsample":
            if rank == 2:
                return layers.UpSampling2D(tuple(spec["size"]), interpolation=spec["interpolation"], name=name)
            table = {1: layers.UpSampling1D, 3: layers.UpSampling3D}
            size = spec["size"][0] if rank == 1 else tuple(spec["size"])
            return table[rank](size, name=name)
        if kind == "flatten":
            return layers.Flatten(name=name)
        if kind == "relu":
            return layers.Activation("relu", name=name)
        if kind == "batchnorm":
            return layers.BatchNormalization(axis=-1, epsilon=spec["epsilon"], name=name)
        if kind == "add":
            return layers.Add(name=name)
        if kind == "concatenate":
            return layers.Concatenate(axis=spec["axis"], name=name)
        raise ValueError(f"unknown layer kind {kind!r}")

    def _proxy_rule(self, name, rule_kwargs):
        from innvestigate.analyzer.relevance_based.relevance_analyzer import LRP_RULES

        base = LRP_RULES[name]

        class Proxy(base):
            def __init__(self, *args, **kwargs):
                super().__init__(*args, **{**kwargs, **rule_kwargs})
        return Proxy

    def _model(self, request) -> Loaded:
        if request["model"] not in self.models:
            raise KeyError(f"model {request['model']} is not loaded (evicted?); load it again")
        self.models.move_to_end(request["model"])
        return self.models[request["model"]]

    def forward(self, request):
        loaded = self._model(request)
        with self.np.load(request["inputs"]) as archive:
            x = archive["x"].astype(self.floatx)
        with loaded.within():
            output = loaded.model.predict(x, verbose=0, batch_size=max(1, len(x)))
        self.np.savez(request["out"], output=output)
        return {}

    # --- explanations ----------------------------------------------------------------------------
    def analyze(self, request):
        np = self.np
        with np.load(request["inputs"]) as archive:
            arrays = {key: archive[key] for key in archive.files}
        x = arrays["x"].astype(self.floatx)
        kwargs = dict(request.get("kwargs", {}))
        if "reference" in arrays:
            kwargs["reference_inputs"] = arrays["reference"].astype(self.floatx)
        if "low" in arrays:
            kwargs["low"] = arrays["low"].astype(self.floatx)
            kwargs["high"] = arrays["high"].astype(self.floatx)
        if "input_layer_low" in arrays:
            kwargs["input_layer_rule"] = (arrays["input_layer_low"].astype(self.floatx),
                                          arrays["input_layer_high"].astype(self.floatx))
        if "rule_kwargs" in kwargs:   # the generic "lrp" analyzer with one parametrized rule
            kwargs["rule"] = kwargs["bn_layer_rule"] = self._proxy_rule(kwargs.pop("rule"), kwargs.pop("rule_kwargs"))
        loaded = self._model(request).for_analyzer(request["analyzer"])
        key = (request["analyzer"], json.dumps(request.get("kwargs", {}), sort_keys=True),
               *(arrays[k].tobytes() for k in ("reference", "low", "input_layer_low") if k in arrays))
        created = key not in loaded.analyzers
        started = time.perf_counter()
        with loaded.within():
            if created:
                loaded.analyzers[key] = self.innvestigate.create_analyzer(
                    request["analyzer"], loaded.model, neuron_selection_mode="index", **kwargs)
            analyzer = loaded.analyzers[key]
            relevance = np.stack([analyzer.analyze(x, neuron_selection=row) for row in arrays["selection"]])
        seconds = time.perf_counter() - started
        np.savez(request["out"], relevance=relevance)
        return {"seconds": seconds, "analyzer_created": created}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--floatx", choices=("float32", "float64"), default="float32")
    args = parser.parse_args(argv)
    replies = _protocol_stream()
    try:
        worker = Worker(args.floatx)
    except Exception as error:   # e.g. a broken TF install: tell the main process, then stop
        replies.write(json.dumps({"ok": False, "error": f"{type(error).__name__}: {error}"}) + "\n")
        return 1
    replies.write(json.dumps({"ok": True, "ready": True}) + "\n")
    for line in sys.stdin:
        request = json.loads(line)
        if request.get("op") == "quit":
            break
        try:
            reply = getattr(worker, request["op"])(request)
            reply["ok"] = True
            reply["loaded"] = list(worker.models)
        except Exception as error:
            reply = {"ok": False, "error": f"{type(error).__name__}: {error}",
                     "traceback": traceback.format_exc()}
            reply["loaded"] = list(worker.models)
        replies.write(json.dumps(reply) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
