"""Describe a PyTorch model as a Keras layer list with the same weights (for innvestigate).

This side runs in the main environment and never imports TensorFlow: it writes a JSON
layer list and the weights as numpy arrays already in Keras layout; the worker script in
the TF environment builds the Keras model from them (innvestigate_worker.py).

Only a chain of layers innvestigate can mirror is exported: Linear, Conv1d/2d/3d (zero
padding), max/average pooling, adaptive average pooling, nearest/bilinear upsampling,
Flatten, ReLU, BatchNorm, Dropout/Identity (eval mode), and a final softmax/sigmoid, which
is dropped like the native engine drops it. Anything else raises ExportError naming the
layer. Layout rules (docs/architecture.md, "Weights from PyTorch to Keras"): Keras is
channels-last, so inputs go NC... -> N...C, a conv kernel [out, in, *k] becomes [*k, in, out],
a Linear weight is transposed, and the first Linear after a Flatten of a feature map has its
input columns reordered from (C, *S) to (*S, C).
"""

from __future__ import annotations

import operator
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.fx.passes.shape_prop import ShapeProp

from .. import layers
from ..errors import ExportError
from ..lrp.graph import LeafTracer

BACKEND = "innvestigate"

_RELU = (F.relu, torch.relu, torch.relu_)
_FLATTEN = (torch.flatten,)
_FINAL = (F.softmax, torch.softmax, F.log_softmax, torch.sigmoid, F.sigmoid)


@dataclass
class KerasSpec:
    """What the worker needs to build the Keras twin of a model."""

    input_shape: list[int]          # Keras layout, without the batch dimension
    output_shape: list[int]         # the torch output shape (without batch) the indices refer to
    layers: list[dict]
    weights: dict[str, np.ndarray] = field(default_factory=dict)
    stripped: list[str] = field(default_factory=list)

    def to_json(self) -> dict:
        return {"input_shape": self.input_shape, "output_shape": self.output_shape, "layers": self.layers}


def _tuple(value, rank):
    return tuple(value) if isinstance(value, (tuple, list)) else (value,) * rank


def to_keras_input(x: np.ndarray) -> np.ndarray:
    """N C *S -> N *S C (a no-op for [N, features])."""
    return np.moveaxis(x, 1, -1) if x.ndim > 2 else x


def from_keras_input(x: np.ndarray) -> np.ndarray:
    """N *S C -> N C *S, the inverse of to_keras_input."""
    return np.moveaxis(x, -1, 1) if x.ndim > 2 else x


def keras_output_index(flat_index: np.ndarray, output_shape) -> np.ndarray:
    """A flat index into the torch output (C, *S) -> the flat index into Keras' (*S, C)."""
    shape = tuple(output_shape)
    if len(shape) <= 1:
        return np.asarray(flat_index)
    coordinates = np.unravel_index(np.asarray(flat_index), shape)
    channels_last = coordinates[1:] + coordinates[:1]
    return np.ravel_multi_index(channels_last, shape[1:] + shape[:1])


class _Exporter:
    def __init__(self, model: nn.Module, example: torch.Tensor):
        self.model = model
        self.layers: list[dict] = []
        self.weights: dict[str, np.ndarray] = {}
        self.stripped: list[str] = []
        self.pending_flatten = None   # the (C, *S) shape flattened, until the next Linear
        root = model
        if model.__module__.startswith("torch.nn") and not isinstance(model, nn.Sequential):
            root = nn.Sequential(model)
        self.root = root
        try:
            self.graph_module = torch.fx.GraphModule(root, LeafTracer().trace(root))
        except Exception as error:
            raise ExportError(BACKEND, type(model).__name__, type(model).__name__,
                              f"the model could not be traced by torch.fx: {str(error).splitlines()[0]}") from None
        parameter = next(iter(root.parameters()), None)
        sample = example[:1].detach().clone()
        if parameter is not None:
            sample = sample.to(device=parameter.device, dtype=parameter.dtype)
        self.dtype = example.dtype   # the dtype the twin will run in
        with torch.no_grad():
            ShapeProp(self.graph_module).propagate(sample)

    def export(self) -> KerasSpec:
        nodes = [n for n in self.graph_module.graph.nodes]
        placeholder = [n for n in nodes if n.op == "placeholder"]
        if len(placeholder) != 1:
            raise ExportError(BACKEND, "input", "input", "models with more than one input")
        output = [n for n in nodes if n.op == "output"][0]
        body = [n for n in nodes if n.op not in ("placeholder", "output")]
        previous = placeholder[0]
        for position, node in enumerate(body):
            if node.op == "get_attr":
                raise ExportError(BACKEND, node.name, "get_attr", "parameters used functionally")
            inputs = node.all_input_nodes
            if len(inputs) != 1 or inputs[0] is not previous or len(previous.users) != 1:
                raise ExportError(BACKEND, _path(node), _kind(self.root, node),
                                  "only a chain of layers is mirrored (no branches, residual adds or concatenation)")
            is_last = position == len(body) - 1
            self._node(node, is_last)
            previous = node
        if output.args[0] is not previous:
            raise ExportError(BACKEND, "output", "output", "the model must return its last layer's output")
        if self.pending_flatten is not None and any(s != 1 for s in self.pending_flatten[1:]):
            raise ExportError(BACKEND, "output", "Flatten",
                              "a flattened feature map as the output cannot keep torch's element order")
        input_shape = list(placeholder[0].meta["tensor_meta"].shape[1:])
        keras_input = input_shape[1:] + input_shape[:1] if len(input_shape) > 1 else input_shape
        explained = self._explained_node(body, placeholder[0])
        output_shape = list(explained.meta["tensor_meta"].shape[1:])
        return KerasSpec(keras_input, output_shape, self.layers, self.weights, self.stripped)

    def _explained_node(self, body, placeholder):
        """The node whose output is explained: the last one not stripped."""
        kept = [n for n in body if _path(n) not in self.stripped]
        return kept[-1] if kept else placeholder

    # --- one node ---------------------------------------------------------------------------
    def _node(self, node, is_last):
        if node.op == "call_module":
            module = self.root.get_submodule(node.target)
            return self._module(node, module, is_last)
        target = node.target
        if node.op == "call_function" and target in _RELU or node.op == "call_method" and target in ("relu", "relu_"):
            return self._relu(node)
        if (node.op == "call_function" and target in _FLATTEN) or (node.op == "call_method" and target == "flatten"):
            start = node.args[1] if len(node.args) > 1 else node.kwargs.get("start_dim", 0)
            if start != 1 or (len(node.args) > 2 and node.args[2] not in (-1,)):
                raise ExportError(BACKEND, _path(node), "flatten", "only flatten(x, 1) is mirrored")
            return self._flatten(node)
        if node.op == "call_function" and target in (F.dropout, F.dropout1d, F.dropout2d, F.dropout3d):
            return None
        if is_last and (node.op == "call_function" and target in _FINAL
                        or node.op == "call_method" and target in ("softmax", "sigmoid", "log_softmax")):
            self.stripped.append(_path(node))
            return None
        raise ExportError(BACKEND, _path(node), _kind(self.root, node))

    def _module(self, node, module, is_last):
        path, kind = node.target, type(module).__name__
        in_shape = tuple(node.all_input_nodes[0].meta["tensor_meta"].shape[1:])
        if isinstance(module, layers.IDENTITY):
            return None
        if isinstance(module, layers.SOFTMAX_SIGMOID):
            if not is_last:
                raise ExportError(BACKEND, path, kind, "a softmax/sigmoid inside the network")
            self.stripped.append(path)
            return None
        if isinstance(module, nn.ReLU):
            return self._relu(node)
        if isinstance(module, nn.Flatten):
            if module.start_dim != 1 or module.end_dim != -1:
                raise ExportError(BACKEND, path, kind, "only Flatten(1, -1) is mirrored")
            return self._flatten(node)
        if isinstance(module, nn.Linear):
            return self._linear(path, module)
        if type(module) in layers.CONV:
            return self._conv(path, module, layers.CONV[type(module)])
        if type(module) in layers.MAXPOOL or type(module) in layers.AVGPOOL:
            return self._pool(path, module, kind, in_shape)
        if type(module) in layers.ADAPTIVE_AVGPOOL:
            return self._adaptive(path, module, kind, in_shape, layers.ADAPTIVE_AVGPOOL[type(module)])
        if isinstance(module, nn.Upsample):
            return self._upsample(path, module, in_shape)
        if isinstance(module, layers.BATCHNORM_ND):
            return self._batchnorm(path, module)
        raise ExportError(BACKEND, path, kind)

    def _add(self, layer, **arrays):
        index = len(self.layers)
        for key, value in arrays.items():
            if value is not None:
                self.weights[f"{index}/{key}"] = np.ascontiguousarray(value)
        layer["weights"] = [key for key, value in arrays.items() if value is not None]
        self.layers.append(layer)

    def _relu(self, node):
        last = self.layers[-1] if self.layers else None
        # fuse into the kernel layer before it, as Keras models are written: innvestigate's
        # deep Taylor tells "kernel with ReLU" (z+) from "kernel without" (w^2) this way
        if last is not None and last["kind"] in ("dense", "conv") and last.get("activation") is None:
            last["activation"] = "relu"
        else:
            self._add({"kind": "relu", "name": _path(node)})

    def _flatten(self, node):
        shape = tuple(node.all_input_nodes[0].meta["tensor_meta"].shape[1:])
        if len(shape) > 1:
            self.pending_flatten = shape
        self._add({"kind": "flatten", "name": _path(node)})

    def _linear(self, path, module):
        weight = module.weight.detach().double().cpu().numpy()
        if self.pending_flatten is not None:
            shape = self.pending_flatten
            rank = len(shape)
            weight = weight.reshape((weight.shape[0],) + shape)
            weight = weight.transpose((0,) + tuple(range(2, rank + 1)) + (1,)).reshape(weight.shape[0], -1)
            self.pending_flatten = None
        bias = None if module.bias is None else module.bias.detach().double().cpu().numpy()
        self._add({"kind": "dense", "name": path, "units": module.out_features, "activation": None,
                   "use_bias": bias is not None}, kernel=weight.T, bias=bias)

    def _conv(self, path, module, rank):
        kind = type(module).__name__
        if module.groups != 1:
            raise ExportError(BACKEND, path, kind, "grouped convolution")
        if module.padding_mode != "zeros":
            raise ExportError(BACKEND, path, kind, f"padding_mode '{module.padding_mode}'")
        kernel = _tuple(module.kernel_size, rank)
        stride = _tuple(module.stride, rank)
        dilation = _tuple(module.dilation, rank)
        if module.padding == "same":
            padding = "same"
        elif module.padding == "valid":
            padding = "valid"
        else:
            pad = _tuple(module.padding, rank)
            same = all(s == 1 for s in stride) and all(2 * p == d * (k - 1) for p, d, k in zip(pad, dilation, kernel))
            if any(pad) and not same:
                self._add({"kind": "zero_pad", "name": f"{path} (padding)", "rank": rank, "padding": list(pad)})
            padding = "same" if same and any(pad) else "valid"
        if padding == "same" and any(s != 1 for s in stride):
            raise ExportError(BACKEND, path, kind, "'same' padding with stride > 1")
        weight = module.weight.detach().double().cpu().numpy()
        weight = weight.transpose(tuple(range(2, 2 + rank)) + (1, 0))   # [out, in, *k] -> [*k, in, out]
        bias = None if module.bias is None else module.bias.detach().double().cpu().numpy()
        self._add({"kind": "conv", "name": path, "rank": rank, "filters": module.out_channels,
                   "kernel_size": list(kernel), "strides": list(stride), "dilation": list(dilation),
                   "padding": padding, "activation": None, "use_bias": bias is not None}, kernel=weight, bias=bias)

    def _pool(self, path, module, kind, in_shape):
        rank = layers.MAXPOOL.get(type(module)) or layers.AVGPOOL[type(module)]
        kernel = _tuple(module.kernel_size, rank)
        stride = _tuple(module.stride if module.stride is not None else module.kernel_size, rank)
        if any(_tuple(module.padding, rank)) or module.ceil_mode:
            raise ExportError(BACKEND, path, kind, "padding or ceil_mode in pooling")
        if isinstance(module, tuple(layers.MAXPOOL)) and any(d != 1 for d in _tuple(module.dilation, rank)):
            raise ExportError(BACKEND, path, kind, "dilated max pooling")
        pool = "max_pool" if type(module) in layers.MAXPOOL else "avg_pool"
        self._check_pool_dtype(path, kind, rank)
        self._add({"kind": pool, "name": path, "rank": rank, "pool_size": list(kernel), "strides": list(stride)})

    def _adaptive(self, path, module, kind, in_shape, rank):
        out = _tuple(module.output_size, rank)
        spatial = in_shape[1:]
        out = tuple(s if o is None else o for o, s in zip(out, spatial))
        if all(o == 1 for o in out):
            self._add({"kind": "global_avg_pool", "name": path, "rank": rank})
        elif all(s % o == 0 for s, o in zip(spatial, out)):
            self._check_pool_dtype(path, kind, rank)
            kernel = [s // o for s, o in zip(spatial, out)]
            self._add({"kind": "avg_pool", "name": path, "rank": rank, "pool_size": kernel, "strides": kernel})
        else:
            raise ExportError(BACKEND, path, kind, f"adaptive pooling {spatial} -> {out} with unequal windows")

    def _check_pool_dtype(self, path, kind, rank):
        if rank == 3 and self.dtype == torch.float64:
            raise ExportError(BACKEND, path, kind, "TensorFlow has no float64 3D pooling kernel on CPU; "
                              "explain in float32")

    def _upsample(self, path, module, in_shape):
        rank = len(in_shape) - 1
        if module.scale_factor is None:
            size = module.size if isinstance(module.size, (tuple, list)) else (module.size,) * rank
            factors = [o / i for o, i in zip(size, in_shape[1:])]
        else:
            factors = list(_tuple(module.scale_factor, rank))
        if any(f != int(f) for f in factors):
            raise ExportError(BACKEND, path, "Upsample", f"non-integer scale {factors}")
        if module.mode == "nearest":
            interpolation = "nearest"
        elif module.mode == "bilinear" and rank == 2 and not module.align_corners:
            interpolation = "bilinear"
        else:
            raise ExportError(BACKEND, path, "Upsample",
                              f"mode '{module.mode}' (align_corners={module.align_corners}) has no Keras twin")
        self._add({"kind": "upsample", "name": path, "rank": rank, "size": [int(f) for f in factors],
                   "interpolation": interpolation})

    def _batchnorm(self, path, module):
        kind = type(module).__name__
        if module.training or module.running_mean is None:
            raise ExportError(BACKEND, path, kind, "BatchNorm in training mode or without running statistics")
        features = module.num_features
        gamma = module.weight.detach() if module.affine else torch.ones(features)
        beta = module.bias.detach() if module.affine else torch.zeros(features)
        arrays = {name: value.double().cpu().numpy() for name, value in
                  [("gamma", gamma), ("beta", beta), ("moving_mean", module.running_mean),
                   ("moving_variance", module.running_var)]}
        self._add({"kind": "batchnorm", "name": path, "epsilon": module.eps}, **arrays)


def _path(node) -> str:
    if node.op == "call_module":
        return node.target
    name = getattr(node.target, "__name__", str(node.target))
    return f"{node.name} ({name})"


def _kind(root, node) -> str:
    if node.op == "call_module":
        return type(root.get_submodule(node.target)).__name__
    if node.target is operator.add or node.target is torch.add:
        return "add"
    return getattr(node.target, "__name__", str(node.target))


def export(model: nn.Module, example: torch.Tensor) -> KerasSpec:
    """The Keras description of `model` (traced with one sample of `example` for shapes)."""
    return _Exporter(model, example).export()
