"""Tracing a PyTorch model into a graph of Steps, canonizing it, and walking it.

We trace with torch.fx (symbolic tracing): it sees through nn.Sequential and through custom
forward() methods with residual additions and concatenations, while standard torch.nn
modules stay single nodes. Every node becomes a Step (steps.py); a module or function
without a relevance rule raises UnsupportedLayerError naming its path and type, never a
silent fallback to the gradient. Models with data-dependent control flow cannot be traced
symbolically; they get an error that says so.

The graph holds detached copies of the parameters (BatchNorm merged into the adjacent
linear layer), so the user's model is never modified and float64 runs on request.
"""

from __future__ import annotations

import math
import operator
from dataclasses import dataclass, field

import torch
import torch.fx
import torch.nn.functional as F
from torch import nn

from .. import layers
from ..errors import InputError, UnsupportedLayerError, XaibenchError
from .operators import (
    AffineOperator,
    ConvOperator,
    ConvTransposeOperator,
    DenseOperator,
    batchnorm_scale_shift,
    operator_for,
    parameter_copy,
)
from .rules import Absorbed, total
from .steps import (
    ConcatStep,
    LinearStep,
    MaxPoolStep,
    NormStep,
    PassStep,
    ReshapeStep,
    ScaleStep,
    SelectStep,
    Step,
    SumStep,
    ValueStep,
)

_SOFTMAX_FUNCTIONS = {F.softmax, F.log_softmax, torch.softmax, torch.log_softmax, torch.sigmoid,
                      F.sigmoid, torch.special.softmax}
_SOFTMAX_METHODS = {"softmax", "log_softmax", "sigmoid"}
_RESHAPE_METHODS = {"view", "reshape", "flatten", "unflatten", "squeeze", "unsqueeze", "contiguous",
                    "view_as", "reshape_as"}
_RESHAPE_FUNCTIONS = {torch.flatten, torch.reshape, torch.squeeze, torch.unsqueeze, torch.unflatten}
_NORM_FUNCTIONS = {F.avg_pool1d, F.avg_pool2d, F.avg_pool3d, F.adaptive_avg_pool1d,
                   F.adaptive_avg_pool2d, F.adaptive_avg_pool3d, F.interpolate, F.upsample,
                   torch.mean, torch.sum}
_RELU_FUNCTIONS = {F.relu, torch.relu, F.leaky_relu, F.relu6}
_SUM_FUNCTIONS = {operator.add: 1.0, operator.iadd: 1.0, torch.add: 1.0, operator.sub: -1.0,
                  operator.isub: -1.0, torch.sub: -1.0}
_SCALE_FUNCTIONS = {operator.mul, operator.truediv, torch.mul, torch.div, operator.imul, operator.itruediv}
_CAT_FUNCTIONS = {torch.cat, torch.concat, torch.concatenate}


def _type_name(obj) -> str:
    if isinstance(obj, nn.Module):
        return type(obj).__name__
    return getattr(obj, "__qualname__", None) or getattr(obj, "__name__", None) or repr(obj)


@dataclass
class Graph:
    """A traced, canonized network: steps in topological order."""

    steps: list[Step]
    input_name: str
    output_name: str      # the node whose value the model returns
    explained_name: str   # the node explained: the output with a final softmax/sigmoid stripped
    depends: dict         # node name -> computed from the model input?
    stripped: list[str]   # the final steps stripped (softmax, sigmoid)
    #: steps between the input and the first linear layers through which z^B bounds are carried
    bound_carriers: set = field(default_factory=set)
    #: first linear layer -> the step that keeps the input's bounds from reaching it
    bounds_blocked: dict = field(default_factory=dict)

    def to(self, dtype=None, device=None) -> Graph:
        steps = [s.to(dtype, device) for s in self.steps]
        return Graph(steps, self.input_name, self.output_name, self.explained_name, self.depends,
                     self.stripped, self.bound_carriers, self.bounds_blocked)

    def linear_steps(self):
        return [s for s in self.steps if isinstance(s, LinearStep)]

    # --- the forward pass -------------------------------------------------------------
    def forward(self, x: torch.Tensor, state: dict, until: str | None = None) -> dict:
        """Values of every node up to the explained node (or `until`), from input x."""
        stop = until or self.explained_name
        values = {self.input_name: x}
        for step in self.steps:
            inputs = [values[n] for n in step.inputs]
            _check_batched(step, inputs, x)
            try:
                values[step.name] = step.forward(inputs, state)
            except XaibenchError:
                raise
            except (RuntimeError, ValueError, IndexError) as error:
                shapes = [tuple(values[n].shape) for n in step.inputs if torch.is_tensor(values[n])]
                raise InputError(
                    f"layer '{step.path}' ({step.kind}) cannot take inputs of shape "
                    f"{', '.join(map(str, shapes))} (model input {tuple(x.shape)}): "
                    f"{str(error).splitlines()[0]}") from None
            out = values[step.name]
            if self.depends[step.name] and torch.is_tensor(out) and (out.dim() == 0 or out.shape[0] != x.shape[0]):
                raise UnsupportedLayerError(
                    step.path, step.kind, f"its output {tuple(out.shape)} does not keep the batch dimension of "
                    f"the input {tuple(x.shape)}: samples would be mixed, and no relevance rule mixes samples")
            if step.name == stop:
                break
        return values

    def map_bounds(self, low: torch.Tensor, high: torch.Tensor, values: dict) -> dict:
        """Carry input-space bounds (of z^B) to the inputs of the first linear layers, through
        the monotone steps before them (activations, pooling, reshapes, padding, scaling,
        adding a constant): f(low) and f(high) bound f(x) elementwise, in one order or the
        other. `values` are the forward pass's (constants and sizes the steps read).
        Returns first layer name -> (low, high); layers the bounds cannot reach are in
        bounds_blocked."""
        mapped = {self.input_name: (low, high)}
        result = {}
        scratch = {"composite": None}  # max pooling keeps indices in its state: not the real one's
        for step in self.steps:
            if isinstance(step, LinearStep) and step.first and step.inputs[0] in mapped:
                result[step.name] = mapped[step.inputs[0]]
            elif step.name in self.bound_carriers:
                live = next(n for n in step.inputs if n in mapped)
                ends = []
                for end in (0, 1):
                    inputs = [mapped[n][end] if n == live else values[n] for n in step.inputs]
                    ends.append(step.forward(inputs, scratch))
                mapped[step.name] = (torch.minimum(*ends), torch.maximum(*ends))
        return result

    # --- the relevance walk -----------------------------------------------------------
    def relevance(self, values: dict, seed: torch.Tensor, state: dict, record=None):
        """Walk from the explained node back to the input.

        seed is the relevance at the explained node [T*B, *out]. Returns the relevance at
        the input and, per step, (step, relevance_out, relevance_in, Absorbed) rows of
        per-(target, sample) sums.
        """
        pending = {self.explained_name: seed}
        pending_total = {self.explained_name: total(seed)}  # each relevance tensor is summed once
        rows = []
        for step in reversed(self.steps):
            if step.name not in pending:
                continue
            relevance = pending.pop(step.name)
            relevance_total = pending_total.pop(step.name)
            inputs = [values[n] for n in step.inputs]
            relevance_in, absorbed = step.relevance(inputs, values[step.name], relevance, state)
            passed = 0.0
            for name, r in zip(step.inputs, relevance_in):
                if r is None:
                    continue
                # pass-through and reshape steps hand on the same elements: same sum
                same = r.data_ptr() == relevance.data_ptr() and r.numel() == relevance.numel()
                r_total = relevance_total if same else total(r)
                if not self.depends[name]:
                    absorbed = absorbed.add(Absorbed(constant=r_total))
                    continue
                passed = passed + r_total
                if name in pending:
                    pending[name] = pending[name] + r
                    pending_total[name] = pending_total[name] + r_total
                else:
                    pending[name], pending_total[name] = r, r_total
            rows.append((step, relevance_total, passed, absorbed))
        relevance_input = pending.pop(self.input_name, None)
        if relevance_input is None:
            relevance_input = torch.zeros((seed.shape[0],) + tuple(values[self.input_name].shape[1:]),
                                          dtype=seed.dtype, device=seed.device)
        return relevance_input, rows


# --- building ---------------------------------------------------------------------------
class LeafTracer(torch.fx.Tracer):
    """Keeps every torch.nn module (but containers) as one node, so each gets a rule."""

    def is_leaf_module(self, m, qualname):
        if isinstance(m, (nn.Sequential, nn.ModuleList, nn.ModuleDict)):
            return False
        return m.__module__.startswith("torch.nn") or super().is_leaf_module(m, qualname)


def trace(model: nn.Module, dtype: torch.dtype | None = None) -> Graph:
    """Trace and canonize a model (its parameters are copied in `dtype`, None: their own, before
    any folding; the model is not changed)."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"expected a torch.nn.Module, got {type(model).__name__}")
    root = model
    if model.__module__.startswith("torch.nn") and not isinstance(model, nn.Sequential):
        root = nn.Sequential(model)  # a bare layer: give it a graph of one node
    try:
        fx_graph = LeafTracer().trace(root)
    except Exception as error:  # tracing runs user code; any failure gets one clear message
        raise UnsupportedLayerError(
            type(model).__name__, type(model).__name__,
            "the model could not be traced symbolically by torch.fx (data-dependent control "
            f"flow or an untraceable operation): {str(error).splitlines()[0]}") from None
    return _Builder(root, fx_graph, dtype).build()


class _Builder:
    def __init__(self, root: nn.Module, fx_graph: torch.fx.Graph, dtype=None):
        self.root = root
        self.dtype = dtype
        self.fx_graph = fx_graph
        self.steps: dict[str, Step] = {}
        self.depends: dict[str, bool] = {}
        self.input_name = None
        self.output_name = None

    def build(self) -> Graph:
        for node in self.fx_graph.nodes:
            if node.op == "placeholder":
                if self.input_name is not None:
                    raise UnsupportedLayerError(node.name, "input", "models with more than one input")
                self.input_name = node.name
                self.depends[node.name] = True
                continue
            if node.op == "output":
                result = node.args[0]
                if not isinstance(result, torch.fx.Node):
                    raise UnsupportedLayerError(
                        "output", type(result).__name__,
                        "the model returns several values; wrap it to return one tensor")
                self.output_name = result.name
                continue
            step = self._step(node)
            step.spatial_dims = _spatial_dims(step.kind) or (step.dims if isinstance(step, MaxPoolStep) else None)
            self.steps[node.name] = step
            self.depends[node.name] = any(self.depends[n] for n in step.inputs)
        if self.input_name is None or self.output_name is None:
            raise UnsupportedLayerError("model", type(self.root).__name__, "no input or no output")
        self._canonize_batchnorm()
        explained, stripped = self._strip_final_normalization()
        self._check_no_inner_softmax(explained)
        order = [s for s in self.steps.values()]
        graph = Graph(order, self.input_name, self.output_name, explained, self.depends, stripped)
        graph.bound_carriers, graph.bounds_blocked = self._mark_first_layers()
        return graph

    # one fx node -> one Step
    def _step(self, node: torch.fx.Node) -> Step:
        inputs = [n.name for n in node.all_input_nodes]
        index = {n: i for i, n in enumerate(node.all_input_nodes)}

        def materialize(values):
            def fetch(n):
                return values[index[n]]
            args = torch.fx.node.map_arg(node.args, fetch)
            kwargs = torch.fx.node.map_arg(node.kwargs, fetch)
            return args, kwargs

        if node.op == "get_attr":
            value = parameter_copy(_get_attr(self.root, node.target), self.dtype)
            return ValueStep(node.name, node.target, "parameter", [], lambda values: value)
        if node.op == "call_module":
            module = self.root.get_submodule(node.target)
            return self._module_step(node, module, inputs)
        target = node.target
        if node.op == "call_method":
            path = f"{node.name} (.{target}())"
            kind = f"Tensor.{target}"
            first = node.args[0] if node.args else None
            if not isinstance(first, torch.fx.Node):
                raise UnsupportedLayerError(path, kind, "method call on a non-tensor")

            def call_method(values, _name=target):
                args, kwargs = materialize(values)
                return getattr(args[0], _name)(*args[1:], **kwargs)

            if target in ("size", "dim") or target in ("numel",):
                return ValueStep(node.name, path, kind, inputs, call_method)
            if target in _RESHAPE_METHODS:
                return ReshapeStep(node.name, path, kind, inputs, call_method)
            if target in ("permute", "transpose"):
                return ReshapeStep(node.name, path, kind, inputs, call_method,
                                   permutation=_permutation(node, target))
            if target in ("relu", "relu_"):
                return PassStep(node.name, path, kind, inputs, lambda values: F.relu(values[0]))
            if target in ("mean", "sum"):
                return NormStep(node.name, path, kind, inputs, _keeping_batch(node, path, kind, call_method))
            if target in _SOFTMAX_METHODS:
                return PassStep(node.name, path, kind, inputs, call_method)
            raise UnsupportedLayerError(path, kind)

        path = f"{node.name} ({_type_name(target)})"
        kind = _type_name(target)

        def call_function(values):
            args, kwargs = materialize(values)
            return target(*args, **kwargs)

        if target is getattr or (target is operator.getitem and not _is_tensor_node(node.args[0])):
            return ValueStep(node.name, path, kind, inputs, call_function)
        if target is operator.getitem:
            return SelectStep(node.name, path, kind, inputs, call_function)
        if target in _SUM_FUNCTIONS:
            return self._sum_step(node, path, kind, index)
        if target in _SCALE_FUNCTIONS:
            return self._scale_step(node, path, kind, inputs, call_function)
        if target in _CAT_FUNCTIONS:
            parts = node.args[0]
            dim = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim", 0)
            slots = [index[p] if isinstance(p, torch.fx.Node) else p for p in parts]
            return ConcatStep(node.name, path, kind, inputs, dim, slots)
        if target in _RESHAPE_FUNCTIONS:
            return ReshapeStep(node.name, path, kind, inputs, call_function)
        if target in (torch.permute, torch.transpose):
            return ReshapeStep(node.name, path, kind, inputs, call_function,
                               permutation=_permutation(node, target.__name__))
        if target in _RELU_FUNCTIONS:
            kwargs = {k: v for k, v in node.kwargs.items() if k != "inplace"}
            extra = tuple(node.args[1:2]) if target is F.leaky_relu else ()

            def activation(values, _f=target, _extra=extra, _kwargs=kwargs):
                return _f(values[0], *_extra, **_kwargs)
            return PassStep(node.name, path, kind, inputs, activation)
        if target in (F.dropout, F.dropout1d, F.dropout2d, F.dropout3d, F.alpha_dropout):
            return PassStep(node.name, path, kind, inputs, lambda values: values[0], transparent=True)
        if target in layers.MAXPOOL_FUNCTIONS:
            return self._maxpool_from_function(node, path, kind, inputs)
        if target is F.pad:
            mode = node.kwargs.get("mode", node.args[2] if len(node.args) > 2 else "constant")
            value = node.kwargs.get("value", node.args[3] if len(node.args) > 3 else None)
            if mode != "constant" or value not in (None, 0, 0.0):
                raise UnsupportedLayerError(path, kind, "only zero padding is supported")
            return SelectStep(node.name, path, kind, inputs, call_function)
        if target in (torch.mean, torch.sum):
            return NormStep(node.name, path, kind, inputs, _keeping_batch(node, path, kind, call_function))
        if target in (F.interpolate, F.upsample):
            return self._resample_step(node, path, kind, inputs, call_function)
        if target in _NORM_FUNCTIONS:
            return NormStep(node.name, path, kind, inputs, call_function)
        if target in _SOFTMAX_FUNCTIONS:
            return PassStep(node.name, path, kind, inputs, call_function)
        raise UnsupportedLayerError(path, kind)

    def _module_step(self, node, module: nn.Module, inputs) -> Step:
        path, kind = node.target, type(module).__name__
        if len(inputs) != 1:
            raise UnsupportedLayerError(path, kind, "modules are supported with one tensor input")
        op = operator_for(module, self.dtype)
        if op is not None:
            return LinearStep(node.name, path, kind, inputs, op)
        if isinstance(module, layers.CONV_OR_LINEAR):
            raise UnsupportedLayerError(path, kind, f"padding_mode '{module.padding_mode}' (only 'zeros')")
        if isinstance(module, layers.BATCHNORM):
            try:
                scale, shift = batchnorm_scale_shift(module, self.dtype)
            except ValueError as error:
                raise UnsupportedLayerError(path, kind, str(error)) from None
            return LinearStep(node.name, path, kind, inputs, AffineOperator(scale, shift))
        if isinstance(module, nn.ReLU):
            return PassStep(node.name, path, kind, inputs, lambda values: F.relu(values[0]))
        if isinstance(module, nn.LeakyReLU):
            slope = module.negative_slope
            return PassStep(node.name, path, kind, inputs, lambda values: F.leaky_relu(values[0], slope))
        if isinstance(module, layers.IDENTITY):
            return PassStep(node.name, path, kind, inputs, lambda values: values[0], transparent=True)
        if isinstance(module, nn.Flatten):
            start, end = module.start_dim, module.end_dim
            return ReshapeStep(node.name, path, kind, inputs,
                               lambda values: torch.flatten(values[0], start, end))
        if isinstance(module, nn.Unflatten):
            dim, sizes = module.dim, module.unflattened_size
            return ReshapeStep(node.name, path, kind, inputs, lambda values: values[0].unflatten(dim, sizes))
        if isinstance(module, tuple(layers.MAXPOOL)):
            if module.return_indices:
                raise UnsupportedLayerError(path, kind, "return_indices=True")
            dims = layers.MAXPOOL[type(module)]
            return MaxPoolStep(node.name, path, kind, inputs, dims, module.kernel_size, module.stride,
                               module.padding, module.dilation, module.ceil_mode)
        if isinstance(module, layers.AVERAGING):
            module_copy = _parameter_free_copy(module)
            step = NormStep(node.name, path, kind, inputs, lambda values: module_copy.forward(values[0]))
            if isinstance(module, nn.Upsample):
                _set_resampling_rule(step, module.mode, module.size, module.scale_factor)
            return step
        if isinstance(module, layers.FINAL):
            module_copy = _parameter_free_copy(module)
            return PassStep(node.name, path, kind, inputs, lambda values: module_copy.forward(values[0]))
        raise UnsupportedLayerError(path, kind)

    def _resample_step(self, node, path, kind, inputs, call_function):
        """F.interpolate / F.upsample: the same rule as nn.Upsample with the same arguments."""
        names = ["input", "size", "scale_factor", "mode"]
        bound = {"size": None, "scale_factor": None, "mode": "nearest", **dict(zip(names, node.args))}
        bound.update({k: v for k, v in node.kwargs.items() if k in names})
        if isinstance(bound["mode"], torch.fx.Node):
            raise UnsupportedLayerError(path, kind, "a resampling mode computed in forward()")
        # a size read from another tensor (size=skip.shape[2:], as U-Nets do) is a traced value:
        # the rule is still known from the mode, the transpose then comes from autograd
        dynamic = any(isinstance(bound[k], torch.fx.Node) for k in ("size", "scale_factor"))
        step = NormStep(node.name, path, kind, inputs, call_function)
        _set_resampling_rule(step, bound["mode"], "traced" if dynamic else bound["size"], bound["scale_factor"])
        return step

    def _sum_step(self, node, path, kind, index):
        sign = _SUM_FUNCTIONS[node.target]
        a, b = node.args[0], node.args[1]
        if node.kwargs.get("alpha", 1) != 1 or len(node.args) > 2:
            raise UnsupportedLayerError(path, kind, "add/sub with alpha")
        operands = []
        for s, arg in ((1.0, a), (sign, b)):
            operands.append((s, index[arg] if isinstance(arg, torch.fx.Node) else arg))
        return SumStep(node.name, path, kind, [n.name for n in node.all_input_nodes], operands)

    def _scale_step(self, node, path, kind, inputs, call_function):
        tensors = [a for a in node.args if isinstance(a, torch.fx.Node)]
        scalars = [a for a in node.args if not isinstance(a, torch.fx.Node)]
        if len(tensors) != 1 or len(scalars) != 1 or not isinstance(scalars[0], (int, float)):
            raise UnsupportedLayerError(path, kind, "products of tensors (only scaling by a number)")
        if scalars[0] == 0:
            raise UnsupportedLayerError(path, kind, "multiplication by zero")
        if node.target in (operator.truediv, torch.div, operator.itruediv) and node.args[0] is not tensors[0]:
            raise UnsupportedLayerError(path, kind, "division of a number by a tensor")
        return ScaleStep(node.name, path, kind, inputs, call_function)

    def _maxpool_from_function(self, node, path, kind, inputs):
        names = ["input", "kernel_size", "stride", "padding", "dilation", "ceil_mode", "return_indices"]
        bound = dict(zip(names, node.args))
        bound.update(node.kwargs)
        if bound.get("return_indices"):
            raise UnsupportedLayerError(path, kind, "return_indices=True")
        return MaxPoolStep(node.name, path, kind, inputs, layers.MAXPOOL_FUNCTIONS[node.target],
                           bound["kernel_size"], bound.get("stride"), bound.get("padding", 0),
                           bound.get("dilation", 1), bound.get("ceil_mode", False))

    # --- canonization -------------------------------------------------------------------
    def _users(self):
        users = {name: [] for name in self.steps}
        users[self.input_name] = []
        for step in self.steps.values():
            for n in step.inputs:
                users[n].append(step.name)
        users[self.output_name].append("<output>")
        return users

    def _canonize_batchnorm(self):
        """Merge each BatchNorm into the linear layer before it (or, where that is exact,
        after it). A BatchNorm that can be merged nowhere stays as a channel-wise affine
        layer with its own rule (the composite's 'batchnorm' entry)."""
        for name, step in list(self.steps.items()):
            if not (isinstance(step, LinearStep) and isinstance(step.op, AffineOperator)):
                continue
            users = self._users()
            scale, shift = step.op.weight, step.op.bias
            producer = self.steps.get(step.inputs[0])
            if (isinstance(producer, LinearStep) and not isinstance(producer.op, AffineOperator)
                    and users[producer.name] == [name]):
                merged = _merge_after(producer.op, scale, shift)
                if merged is not None:
                    producer.op = merged
                    producer.kind = f"{producer.kind}+{step.kind}"
                    self._replace_with_identity(step, f"merged into '{producer.path}'")
                    continue
            consumers = users[name]
            if len(consumers) == 1 and consumers[0] in self.steps:
                consumer = self.steps[consumers[0]]
                if isinstance(consumer, LinearStep) and not isinstance(consumer.op, AffineOperator):
                    merged = _merge_before(consumer.op, scale, shift)
                    if merged is not None:
                        consumer.op = merged
                        consumer.kind = f"{step.kind}+{consumer.kind}"
                        self._replace_with_identity(step, f"merged into '{consumer.path}'")

    def _replace_with_identity(self, step, note):
        self.steps[step.name] = PassStep(step.name, step.path, f"{step.kind} ({note})", step.inputs,
                                         lambda values: values[0], transparent=True)

    def _strip_final_normalization(self):
        explained, stripped = self.output_name, []
        while True:
            step = self.steps.get(explained)
            if step is None or not _is_softmax_step(step):
                break
            stripped.append(step.path)
            explained = step.inputs[0]
        return explained, stripped

    def _check_no_inner_softmax(self, explained):
        seen_explained = False
        for name, step in self.steps.items():
            if _is_softmax_step(step) and not seen_explained:
                raise UnsupportedLayerError(step.path, step.kind,
                                            "softmax/sigmoid is only supported as the final layer")
            if name == explained:
                seen_explained = True

    def _mark_first_layers(self):
        """The first linear layers are those that see the input: reached from it with no
        linear layer in between. Where every step on the way is monotone (see
        _carries_bounds), z^B's input bounds can be carried to them; otherwise the step
        that blocks them is recorded, so z^B can say why it cannot apply.
        Returns (the steps carrying bounds, first layer -> blocking step path)."""
        reach = {self.input_name: "bounds"}   # node -> "bounds" or ("blocked", path); absent: not reached
        carriers, blocked = set(), {}
        for name, step in self.steps.items():
            live = [n for n in step.inputs if n in reach]
            if not live or isinstance(step, ValueStep):
                continue
            if isinstance(step, LinearStep):
                if step.inputs[0] in reach:
                    step.first = True
                    if reach[step.inputs[0]] != "bounds":
                        blocked[name] = reach[step.inputs[0]][1]
                continue
            if len(live) == 1 and reach[live[0]] == "bounds" and _carries_bounds(step, live[0]):
                reach[name] = "bounds"
                carriers.add(name)
            else:
                blocking = next((reach[n] for n in live if reach[n] != "bounds"), ("blocked", step.path))
                reach[name] = blocking
        return carriers, blocked


def _carries_bounds(step, live_input) -> bool:
    """Whether f(low) and f(high) bound f(x) elementwise (in some order) for low <= x <= high:
    monotone elementwise maps, reshapes, selections and zero padding, max pooling, and linear
    maps with non-negative weights (average pooling, means, sums, nearest and (bi/tri)linear
    resampling; not bicubic, whose weights change sign)."""
    if isinstance(step, (ReshapeStep, SelectStep, MaxPoolStep, ScaleStep)):
        return True
    if isinstance(step, PassStep):
        return not _is_softmax_step(step)
    if isinstance(step, NormStep):
        return getattr(step, "monotone", True)
    if isinstance(step, SumStep):  # x + constant, constant - x: one operand depends on the input
        return sum(1 for _sign, slot in step.operands if isinstance(slot, int)
                   and step.inputs[slot] == live_input) == 1
    return False


#: the supported modules and functions whose input must carry a batch dimension -> spatial dims
#: (functional max pooling gets its dims from its MaxPoolStep)
_BATCHED_KINDS = {
    **{module.__name__: d for group in (layers.CONV, layers.CONV_TRANSPOSED, layers.MAXPOOL, layers.AVGPOOL,
                                        layers.ADAPTIVE_AVGPOOL) for module, d in group.items()},
    **{f"{name}{d}d": d for d in (1, 2, 3) for name in ("avg_pool", "adaptive_avg_pool")}}


def _check_batched(step, inputs, x):
    """Convolutions and pooling accept one unbatched sample in torch, and would then treat
    the channels as the batch: name the missing batch dimension instead."""
    dims = getattr(step, "spatial_dims", None)
    if dims is None or not inputs or not torch.is_tensor(inputs[0]):
        return
    if inputs[0].dim() == dims + 1:
        layout = {1: "(N, C, L)", 2: "(N, C, H, W)", 3: "(N, C, D, H, W)"}[dims]
        raise InputError(
            f"layer '{step.path}' ({step.kind}) needs a batch dimension: it takes {dims + 2}-d input {layout} "
            f"but gets {tuple(inputs[0].shape)} (model input {tuple(x.shape)}); for one sample pass "
            "x.unsqueeze(0)")


def _spatial_dims(kind: str):
    return _BATCHED_KINDS.get(kind.lstrip("_"))


def _is_softmax_step(step):
    if not isinstance(step, PassStep):
        return False
    kind = step.kind
    return (kind in {m.__name__ for m in layers.FINAL}
            or kind in {_type_name(f) for f in _SOFTMAX_FUNCTIONS}
            or kind in {f"Tensor.{m}" for m in _SOFTMAX_METHODS})


def _is_tensor_node(arg):
    if not isinstance(arg, torch.fx.Node):
        return False
    return not (arg.op == "call_method" and arg.target in ("size", "dim")) and arg.target is not getattr


def _permutation(node, target):
    args = list(node.args[1:])
    if target == "permute":
        dims = args[0] if len(args) == 1 and isinstance(args[0], (tuple, list)) else args
        dims = node.kwargs.get("dims", dims)
        return tuple(int(d) for d in dims)
    dim0, dim1 = args[0], args[1]
    return ("transpose", int(dim0), int(dim1))


def _get_attr(root, target):
    obj = root
    for part in target.split("."):
        obj = getattr(obj, part)
    if not torch.is_tensor(obj):
        raise UnsupportedLayerError(target, type(obj).__name__, "attribute that is not a tensor")
    return obj


def _parameter_free_copy(module):
    """A copy of a parameter-free module without the user's hooks."""
    import copy

    clone = copy.copy(module)
    clone._forward_hooks = type(module._forward_hooks)()
    clone._forward_pre_hooks = type(module._forward_pre_hooks)()
    return clone


def _merge_after(op, scale, shift):
    """Fold BN(z) = scale * z + shift into the layer producing z."""
    if isinstance(op, DenseOperator):
        if op.weight.shape[0] != scale.shape[0]:
            return None
        weight = op.weight * scale[:, None]
        bias = shift if op.bias is None else op.bias * scale + shift
        return DenseOperator(weight, bias)
    if isinstance(op, ConvOperator):
        weight = op.weight * scale.view((-1,) + (1,) * (op.weight.dim() - 1))
        bias = shift if op.bias is None else op.bias * scale + shift
        merged = object.__new__(ConvOperator)
        merged.__dict__.update(op.__dict__)
        merged.weight, merged.bias = weight, bias
        return merged
    if isinstance(op, ConvTransposeOperator) and op.groups == 1:
        weight = op.weight * scale.view((1, -1) + (1,) * (op.weight.dim() - 2))
        bias = shift if op.bias is None else op.bias * scale + shift
        merged = object.__new__(ConvTransposeOperator)
        merged.__dict__.update(op.__dict__)
        merged.weight, merged.bias = weight, bias
        return merged
    return None


def _merge_before(op, scale, shift):
    """Fold BN(x) = scale * x + shift into the layer consuming it; exact only where the layer
    does not pad (padding would insert zeros where BN(0) = shift is not zero)."""
    if isinstance(op, DenseOperator):
        if op.weight.shape[1] != scale.shape[0]:
            return None
        bias = op.weight @ shift + (0 if op.bias is None else op.bias)
        return DenseOperator(op.weight * scale[None, :], bias)
    if isinstance(op, ConvOperator) and op.groups == 1 and op.explicit_padding is not None \
            and all(p == 0 for p in op.explicit_padding):
        view = (1, -1) + (1,) * (op.weight.dim() - 2)
        bias = (op.weight * shift.view(view)).sum(dim=tuple(range(1, op.weight.dim())))
        if op.bias is not None:
            bias = bias + op.bias
        merged = object.__new__(ConvOperator)
        merged.__dict__.update(op.__dict__)
        merged.weight, merged.bias = op.weight * scale.view(view), bias
        return merged
    return None


def _set_resampling_rule(step, mode, size, scale_factor):
    """Nearest resampling (any size or factor, up or down) copies exactly one input to each
    output, so its relevance goes back to that input whole, by the transpose: the copy rule
    (single_source), for nn.Upsample and F.interpolate alike. Other modes keep the Norm rule;
    bicubic's weights change sign, so it cannot carry z^B bounds."""
    if mode in ("nearest", "nearest-exact"):
        step.single_source = True
        step.explicit_adjoint = _nearest_upsample_adjoint(mode, size, scale_factor)
    step.monotone = mode != "bicubic"


def _keeping_batch(node, path, kind, function):
    """A mean or sum over non-batch dimensions only: over the batch it would mix samples,
    which no rule explains (and may keep the shape, so no later check would see it)."""
    dim = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim", None)

    def checked(values):
        x = values[0]
        dims = None if dim is None else (tuple(dim) if isinstance(dim, (tuple, list)) else (dim,))
        if torch.is_tensor(x) and (dims is None or any(int(d) % max(x.dim(), 1) == 0 for d in dims)):
            raise UnsupportedLayerError(path, kind, "it reduces over the batch dimension (dim 0), mixing samples; "
                                        "reduce over the other dimensions, e.g. x.mean(dim=(1, 2))")
        return function(values)
    return checked


def _nearest_upsample_adjoint(mode, size, scale_factor):
    """The transpose of nearest upsampling by an integer factor is a sum over each block
    (an average pool times the block size): cheaper than autograd through a probe. Other
    nearest resamplings take the autograd transpose (None here)."""
    if mode != "nearest" or size is not None or scale_factor is None:
        return None
    factors = tuple(scale_factor) if isinstance(scale_factor, (tuple, list)) else (scale_factor,)
    if any(f is None or float(f) != int(f) for f in factors):
        return None

    def adjoint(s):
        dims = s.dim() - 2
        kernel = tuple(int(f) for f in factors) if len(factors) == dims else (int(factors[0]),) * dims
        pool = {1: F.avg_pool1d, 2: F.avg_pool2d, 3: F.avg_pool3d}[dims]
        return pool(s, kernel, kernel) * math.prod(kernel)
    return adjoint
