"""Describe a PyTorch model as a Keras layer graph with the same weights (for innvestigate).

This side runs in the main environment and never imports TensorFlow: it writes a JSON
layer list and the weights as numpy arrays already in Keras layout; the worker script in
the TF environment builds the Keras model from them (innvestigate_worker.py).

The layers innvestigate can mirror are exported: Linear, Conv1d/2d/3d (zero padding),
max/average pooling, adaptive average pooling, nearest/bilinear upsampling, Flatten, ReLU,
BatchNorm, Dropout/Identity (eval mode), a final softmax/sigmoid, which is dropped like the
native engine drops it, and the two merges of residual nets and U-Nets: the sum of two
tensors (x + f(x), torch.add) becomes keras.layers.Add, torch.cat becomes
keras.layers.Concatenate (torch's channel dim 1 is Keras' axis -1). Anything else raises
ExportError naming the layer.

The layer list is in execution order. A chain (each layer reads the one before it, the first
reads the input) is written as before, without input names; any other graph gives every
layer "inputs": the names of the layers it reads ("input" for the model input), and the
last layer is the output. Layout rules (docs/architecture.md, "Weights from PyTorch to Keras"): Keras is
channels-last, so inputs go NC... -> N...C, a conv kernel [out, in, *k] becomes [*k, in, out],
a Linear weight is transposed, and the first Linear after a Flatten of a feature map has its
input columns reordered from (C, *S) to (*S, C) (a BatchNorm1d between them, its parameters).
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
_ADD = (operator.add, operator.iadd, torch.add)
_CAT = (torch.cat, torch.concat, torch.concatenate)
_KERNEL_KINDS = ("dense", "conv")


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
        self.produced: dict[torch.fx.Node, str] = {}     # fx node -> the spec layer whose output it is
        self.exclusive: dict[torch.fx.Node, bool] = {}   # that layer's output has no other reader
        self.flattened: dict[str, tuple] = {}            # layer -> the (C, *S) shape whose Keras order differs
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
        result = output.args[0]
        if not isinstance(result, torch.fx.Node):
            raise ExportError(BACKEND, "output", "output", "models with several outputs (a tuple or dict)")
        self.produced[placeholder[0]] = "input"
        self.exclusive[placeholder[0]] = False
        for node in nodes:
            if node.op in ("placeholder", "output"):
                continue
            if node.op == "get_attr":
                raise ExportError(BACKEND, node.name, "get_attr", "parameters used functionally")
            self._node(node, node is result)
        last = self.layers[-1]["name"] if self.layers else None
        if self.produced[result] != last:
            raise ExportError(BACKEND, "output", "output", "the model must return its last layer's output")
        self._check_order(result, "output", "output")
        input_shape = list(placeholder[0].meta["tensor_meta"].shape[1:])
        keras_input = input_shape[1:] + input_shape[:1] if len(input_shape) > 1 else input_shape
        output_shape = list(result.meta["tensor_meta"].shape[1:])   # a stripped softmax keeps the shape
        previous = "input"
        chain = True
        for layer in self.layers:
            chain = chain and layer["inputs"] == [previous]
            previous = layer["name"]
        if chain:   # the layer list of a chain stays what it always was
            for layer in self.layers:
                del layer["inputs"]
        return KerasSpec(keras_input, output_shape, self.layers, self.weights, self.stripped)

    # --- one node ---------------------------------------------------------------------------
    def _node(self, node, is_last):
        target = node.target
        if node.op == "call_function" and target in _ADD:
            return self._sum(node)
        if node.op == "call_function" and target in _CAT:
            return self._concatenate(node)
        inputs = node.all_input_nodes
        if len(inputs) != 1:
            raise ExportError(BACKEND, _path(node), _kind(self.root, node),
                              f"a layer reading {len(inputs)} tensors (only additions and torch.cat merge)")
        if node.op == "call_module":
            module = self.root.get_submodule(node.target)
            return self._module(node, module, is_last)
        if node.op == "call_function" and target in _RELU or node.op == "call_method" and target in ("relu", "relu_"):
            return self._relu(node)
        if (node.op == "call_function" and target in _FLATTEN) or (node.op == "call_method" and target == "flatten"):
            start = node.args[1] if len(node.args) > 1 else node.kwargs.get("start_dim", 0)
            if start != 1 or (len(node.args) > 2 and node.args[2] not in (-1,)):
                raise ExportError(BACKEND, _path(node), "flatten", "only flatten(x, 1) is mirrored")
            return self._flatten(node)
        if node.op == "call_function" and target in (F.dropout, F.dropout1d, F.dropout2d, F.dropout3d):
            return self._alias(node)
        if is_last and (node.op == "call_function" and target in _FINAL
                        or node.op == "call_method" and target in ("softmax", "sigmoid", "log_softmax")):
            self.stripped.append(_path(node))
            return self._alias(node)
        raise ExportError(BACKEND, _path(node), _kind(self.root, node))

    def _module(self, node, module, is_last):
        path, kind = node.target, type(module).__name__
        in_shape = tuple(node.all_input_nodes[0].meta["tensor_meta"].shape[1:])
        if isinstance(module, layers.IDENTITY):
            return self._alias(node)
        if isinstance(module, layers.SOFTMAX_SIGMOID):
            if not is_last:
                raise ExportError(BACKEND, path, kind, "a softmax/sigmoid inside the network")
            self.stripped.append(path)
            return self._alias(node)
        if isinstance(module, nn.ReLU):
            return self._relu(node)
        if isinstance(module, nn.Flatten):
            if module.start_dim != 1 or module.end_dim != -1:
                raise ExportError(BACKEND, path, kind, "only Flatten(1, -1) is mirrored")
            return self._flatten(node)
        if isinstance(module, nn.Linear):
            return self._linear(node, module)
        if isinstance(module, layers.BATCHNORM_ND):
            return self._batchnorm(node, module)
        self._check_order(node.all_input_nodes[0], path, kind)
        if type(module) in layers.CONV:
            return self._conv(node, module, layers.CONV[type(module)])
        if type(module) in layers.MAXPOOL or type(module) in layers.AVGPOOL:
            return self._pool(node, module, kind, in_shape)
        if type(module) in layers.ADAPTIVE_AVGPOOL:
            return self._adaptive(node, module, kind, in_shape, layers.ADAPTIVE_AVGPOOL[type(module)])
        if isinstance(module, nn.Upsample):
            return self._upsample(node, module, in_shape)
        raise ExportError(BACKEND, path, kind)

    # --- the graph --------------------------------------------------------------------------
    def _add(self, node, layer, inputs=None, **arrays):
        """Append a layer reading `inputs` (fx nodes; default: the node's own input) and
        record it as the producer of `node` (None: an internal layer such as padding)."""
        index = len(self.layers)
        for key, value in arrays.items():
            if value is not None:
                self.weights[f"{index}/{key}"] = np.ascontiguousarray(value)
        layer["weights"] = [key for key, value in arrays.items() if value is not None]
        if inputs is None:
            inputs = [self.produced[node.all_input_nodes[0]]]
        layer["inputs"] = list(inputs)
        names = {existing["name"] for existing in self.layers}
        name, copy = layer["name"], 1
        while name in names:   # a module called twice: the graph needs unique names
            copy += 1
            name = f"{layer['name']} #{copy}"
        layer["name"] = name
        self.layers.append(layer)
        if node is not None:
            self.produced[node] = name
            self.exclusive[node] = len(node.users) == 1
        return name

    def _alias(self, node):
        """A node that computes its input's value (Identity, Dropout in eval, a stripped softmax)."""
        source = node.all_input_nodes[0]
        self.produced[node] = self.produced[source]
        self.exclusive[node] = self.exclusive[source] and len(node.users) == 1

    def _check_order(self, node, path, kind):
        """A flattened feature map is in Keras' (*S, C) order, not torch's (C, *S): only a
        Linear (which is reordered), ReLU, Dropout, BatchNorm and additions of two such maps
        keep the difference invisible."""
        shape = self.flattened.get(self.produced[node])
        if shape is not None:
            raise ExportError(BACKEND, path, kind, f"a flattened feature map {tuple(shape)} reaches this layer, "
                              "which cannot keep torch's element order")

    def _sum(self, node):
        path, kind = _path(node), _kind(self.root, node)
        operands = list(node.args) + [node.kwargs[k] for k in ("input", "other") if k in node.kwargs]
        if node.kwargs.get("alpha", 1) != 1 or len(operands) > 2:
            raise ExportError(BACKEND, path, kind, "add with alpha")
        if len(operands) != 2 or not all(isinstance(a, torch.fx.Node) for a in operands):
            raise ExportError(BACKEND, path, kind, "adding a number or a constant (only the sum of two tensors)")
        shapes = {tuple(a.meta["tensor_meta"].shape[1:]) for a in operands}
        if len(shapes) != 1:
            raise ExportError(BACKEND, path, kind, f"a broadcasting addition of shapes {sorted(shapes)}")
        orders = {self.flattened.get(self.produced[a]) for a in operands}
        if len(orders) != 1:   # both in torch order or both flattened from the same map: same order
            raise ExportError(BACKEND, path, kind, "adding a flattened feature map to a tensor of another order")
        name = self._add(node, {"kind": "add", "name": path}, [self.produced[a] for a in operands])
        order = orders.pop()
        if order is not None:
            self.flattened[name] = order

    def _concatenate(self, node):
        path, kind = _path(node), _kind(self.root, node)
        tensors = node.args[0] if node.args else node.kwargs.get("tensors")
        dim = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim", 0)
        if not isinstance(tensors, (tuple, list)) or not all(isinstance(t, torch.fx.Node) for t in tensors):
            raise ExportError(BACKEND, path, kind, "concatenating a constant (only tensors computed from the input)")
        if not isinstance(dim, int):
            raise ExportError(BACKEND, path, kind, "a concatenation dim computed in forward()")
        rank = len(node.meta["tensor_meta"].shape)
        dim = dim % rank
        if dim == 0:
            raise ExportError(BACKEND, path, kind, "concatenation along the batch dimension")
        for tensor in tensors:
            self._check_order(tensor, path, kind)
        if len(tensors) == 1:
            return self._alias(node)
        axis = -1 if dim == 1 else dim - 1   # channels first (N, C, *S) -> channels last (N, *S, C)
        self._add(node, {"kind": "concatenate", "name": path, "axis": axis}, [self.produced[t] for t in tensors])

    # --- layers -----------------------------------------------------------------------------
    def _relu(self, node):
        source = node.all_input_nodes[0]
        producer = self.produced[source]
        last = next((layer for layer in self.layers if layer["name"] == producer), None)
        # fuse into the kernel layer before it, as Keras models are written: innvestigate's
        # deep Taylor tells "kernel with ReLU" (z+) from "kernel without" (w^2) this way. Only
        # where nothing else reads the kernel layer's output (a residual skip would see the ReLU)
        if last is not None and last["kind"] in _KERNEL_KINDS and last.get("activation") is None \
                and self.exclusive[source]:
            last["activation"] = "relu"
            self.produced[node] = producer
            self.exclusive[node] = len(node.users) == 1
        else:
            name = self._add(node, {"kind": "relu", "name": _path(node)})
            if producer in self.flattened:
                self.flattened[name] = self.flattened[producer]

    def _flatten(self, node):
        source = node.all_input_nodes[0]
        self._check_order(source, _path(node), "flatten")
        shape = tuple(source.meta["tensor_meta"].shape[1:])
        name = self._add(node, {"kind": "flatten", "name": _path(node)})
        if len(shape) > 1 and any(s != 1 for s in shape[1:]):
            self.flattened[name] = shape

    def _linear(self, node, module):
        path = node.target
        weight = module.weight.detach().double().cpu().numpy()
        shape = self.flattened.get(self.produced[node.all_input_nodes[0]])
        if shape is not None:
            weight = weight[:, _keras_order(shape)]
        bias = None if module.bias is None else module.bias.detach().double().cpu().numpy()
        self._add(node, {"kind": "dense", "name": path, "units": module.out_features, "activation": None,
                         "use_bias": bias is not None}, kernel=weight.T, bias=bias)

    def _conv(self, node, module, rank):
        path = node.target
        kind = type(module).__name__
        if module.groups != 1:
            raise ExportError(BACKEND, path, kind, "grouped convolution")
        if module.padding_mode != "zeros":
            raise ExportError(BACKEND, path, kind, f"padding_mode '{module.padding_mode}'")
        kernel = _tuple(module.kernel_size, rank)
        stride = _tuple(module.stride, rank)
        dilation = _tuple(module.dilation, rank)
        inputs = None
        if module.padding == "same":
            padding = "same"
        elif module.padding == "valid":
            padding = "valid"
        else:
            pad = _tuple(module.padding, rank)
            same = all(s == 1 for s in stride) and all(2 * p == d * (k - 1) for p, d, k in zip(pad, dilation, kernel))
            if any(pad) and not same:
                inputs = [self._add(None, {"kind": "zero_pad", "name": f"{path} (padding)", "rank": rank,
                                           "padding": list(pad)}, [self.produced[node.all_input_nodes[0]]])]
            padding = "same" if same and any(pad) else "valid"
        if padding == "same" and any(s != 1 for s in stride):
            raise ExportError(BACKEND, path, kind, "'same' padding with stride > 1")
        weight = module.weight.detach().double().cpu().numpy()
        weight = weight.transpose(tuple(range(2, 2 + rank)) + (1, 0))   # [out, in, *k] -> [*k, in, out]
        bias = None if module.bias is None else module.bias.detach().double().cpu().numpy()
        self._add(node, {"kind": "conv", "name": path, "rank": rank, "filters": module.out_channels,
                         "kernel_size": list(kernel), "strides": list(stride), "dilation": list(dilation),
                         "padding": padding, "activation": None, "use_bias": bias is not None},
                  inputs, kernel=weight, bias=bias)

    def _pool(self, node, module, kind, in_shape):
        path = node.target
        rank = layers.MAXPOOL.get(type(module)) or layers.AVGPOOL[type(module)]
        kernel = _tuple(module.kernel_size, rank)
        stride = _tuple(module.stride if module.stride is not None else module.kernel_size, rank)
        if any(_tuple(module.padding, rank)) or module.ceil_mode:
            raise ExportError(BACKEND, path, kind, "padding or ceil_mode in pooling")
        if isinstance(module, tuple(layers.MAXPOOL)) and any(d != 1 for d in _tuple(module.dilation, rank)):
            raise ExportError(BACKEND, path, kind, "dilated max pooling")
        pool = "max_pool" if type(module) in layers.MAXPOOL else "avg_pool"
        self._check_pool_dtype(path, kind, rank)
        self._add(node, {"kind": pool, "name": path, "rank": rank, "pool_size": list(kernel), "strides": list(stride)})

    def _adaptive(self, node, module, kind, in_shape, rank):
        path = node.target
        out = _tuple(module.output_size, rank)
        spatial = in_shape[1:]
        out = tuple(s if o is None else o for o, s in zip(out, spatial))
        if all(o == 1 for o in out):
            self._add(node, {"kind": "global_avg_pool", "name": path, "rank": rank})
        elif all(s % o == 0 for s, o in zip(spatial, out)):
            self._check_pool_dtype(path, kind, rank)
            kernel = [s // o for s, o in zip(spatial, out)]
            self._add(node, {"kind": "avg_pool", "name": path, "rank": rank, "pool_size": kernel, "strides": kernel})
        else:
            raise ExportError(BACKEND, path, kind, f"adaptive pooling {spatial} -> {out} with unequal windows")

    def _check_pool_dtype(self, path, kind, rank):
        if rank == 3 and self.dtype == torch.float64:
            raise ExportError(BACKEND, path, kind, "TensorFlow has no float64 3D pooling kernel on CPU; "
                              "explain in float32")

    def _upsample(self, node, module, in_shape):
        path = node.target
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
            if self.dtype == torch.float64:   # the float64 twin would differ by ~1e-8 (measured 7e-9)
                raise ExportError(BACKEND, path, "Upsample", "TensorFlow's bilinear resize computes in float32 "
                                  "whatever the float type; explain in float32")
            interpolation = "bilinear"
        else:
            raise ExportError(BACKEND, path, "Upsample",
                              f"mode '{module.mode}' (align_corners={module.align_corners}) has no Keras twin")
        self._add(node, {"kind": "upsample", "name": path, "rank": rank, "size": [int(f) for f in factors],
                         "interpolation": interpolation})

    def _batchnorm(self, node, module):
        path = node.target
        kind = type(module).__name__
        if module.training or module.running_mean is None:
            raise ExportError(BACKEND, path, kind, "BatchNorm in training mode or without running statistics")
        features = module.num_features
        gamma = module.weight.detach() if module.affine else torch.ones(features)
        beta = module.bias.detach() if module.affine else torch.zeros(features)
        arrays = {name: value.double().cpu().numpy() for name, value in
                  [("gamma", gamma), ("beta", beta), ("moving_mean", module.running_mean),
                   ("moving_variance", module.running_var)]}
        shape = self.flattened.get(self.produced[node.all_input_nodes[0]])
        if shape is not None:   # BatchNorm1d of a flattened map: its features are in Keras order
            order = _keras_order(shape)
            arrays = {name: value[order] for name, value in arrays.items()}
        name = self._add(node, {"kind": "batchnorm", "name": path, "epsilon": module.eps}, **arrays)
        if shape is not None:
            self.flattened[name] = shape


def _keras_order(shape) -> np.ndarray:
    """Position j of a flattened (*S, C) map holds torch's flattened (C, *S) feature order[j]."""
    rank = len(shape)
    return np.arange(int(np.prod(shape))).reshape(shape).transpose(tuple(range(1, rank)) + (0,)).ravel()


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
