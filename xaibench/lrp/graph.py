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

import functools
import operator
from dataclasses import dataclass, field

import torch
import torch.fx
import torch.nn.functional as F
from torch import nn

from .. import layers
from ..errors import InputError, UnsupportedLayerError, XaibenchError
from .decompose import DecomposingTracer
from .operators import (
    AffineOperator,
    ConvOperator,
    ConvTransposeOperator,
    DenseOperator,
    batchnorm_scale_shift,
    normalization_operator,
    operator_for,
    parameter_copy,
)
from .rules import Absorbed, total
from .steps import (
    AdaptiveMaxPoolStep,
    ConcatStep,
    LinearStep,
    MaskedFillStep,
    MatmulStep,
    MaxPoolStep,
    NormalizationStep,
    NormStep,
    OpaqueStep,
    PassStep,
    ProductStep,
    ReshapeStep,
    ScaleStep,
    SelectStep,
    SoftmaxStep,
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
_SUM_FUNCTIONS = {operator.add: 1.0, operator.iadd: 1.0, torch.add: 1.0, operator.sub: -1.0,
                  operator.isub: -1.0, torch.sub: -1.0, "add": 1.0, "add_": 1.0, "sub": -1.0, "sub_": -1.0}
_SCALE_FUNCTIONS = {operator.mul, operator.truediv, torch.mul, torch.div, operator.imul, operator.itruediv}
_DIVISIONS = {operator.truediv, torch.div, operator.itruediv, "div", "div_"}
#: elementwise nonlinearities that are not monotone (f(low), f(high) do not bound f(x)); PReLU's
#: slope may be negative
_NOT_MONOTONE = {"gelu", "silu", "mish", "hardswish", "prelu", "tensor.prelu"}
_CAT_FUNCTIONS = {torch.cat, torch.concat, torch.concatenate}
#: functions returning a tuple of parts of one tensor (each part a selection from it)
_SPLIT_FUNCTIONS = {torch.chunk, torch.split, torch.unbind, torch.tensor_split}
_SPLIT_METHODS = {"chunk", "split", "unbind", "tensor_split"}
#: tensor attributes that are metadata (sizes, types), not tensors
_METADATA_ATTRIBUTES = {"shape", "dtype", "device", "ndim", "is_cuda", "requires_grad", "layout", "is_sparse"}
#: functions that make a new tensor from sizes: a constant, never a size
_TENSOR_FACTORIES = {torch.arange, torch.zeros, torch.ones, torch.full, torch.empty, torch.linspace, torch.rand,
                     torch.randn, torch.eye, torch.tensor}
_ADAPTIVE_MAXPOOL_FUNCTIONS = {F.adaptive_max_pool1d: 1, F.adaptive_max_pool2d: 2, F.adaptive_max_pool3d: 3}



def _type_name(obj) -> str:
    if isinstance(obj, nn.Module):
        return type(obj).__name__
    return getattr(obj, "__qualname__", None) or getattr(obj, "__name__", None) or repr(obj)


@dataclass(frozen=True)
class _Recipe:
    """An activation's value, to be recomputed from its input (Graph.forward(lean=True))."""

    step: Step


class LeanValues(dict):
    """The values of a lean forward pass: a node held as a _Recipe is recomputed on reading,
    from its input (itself recomputed if need be). Elementwise activations are deterministic,
    so the value read is the one the forward pass computed, bit for bit."""

    def __init__(self, state: dict):
        super().__init__()
        self.state = state

    def __getitem__(self, name):
        value = dict.__getitem__(self, name)
        if isinstance(value, _Recipe):
            return value.step.forward([self[n] for n in value.step.inputs], self.state)
        return value


@dataclass
class Graph:
    """A traced, canonized network: steps in topological order."""

    steps: list[Step]
    input_names: list     # the model's tensor inputs, in the order forward() takes them
    output_name: str      # the node whose value the model returns
    explained_name: str   # the node explained: the output with a final softmax/sigmoid stripped
    depends: dict         # node name -> computed from the model input?
    stripped: list[str]   # the final steps stripped (softmax, sigmoid)
    #: steps between the input and the first linear layers through which z^B bounds are carried
    bound_carriers: set = field(default_factory=set)
    #: first linear layer -> the step that keeps the input's bounds from reaching it
    bounds_blocked: dict = field(default_factory=dict)
    #: the input shapes a trace specialized to them serves (None: every shape; see trace())
    specialized_to: tuple | None = None

    def to(self, dtype=None, device=None) -> Graph:
        steps = [s.to(dtype, device) for s in self.steps]
        return Graph(steps, self.input_names, self.output_name, self.explained_name, self.depends,
                     self.stripped, self.bound_carriers, self.bounds_blocked, self.specialized_to)

    @property
    def input_name(self) -> str:
        """The first input (the only one of a single-input model)."""
        return self.input_names[0]

    def linear_steps(self):
        return [s for s in self.steps if isinstance(s, LinearStep)]

    # --- the forward pass -------------------------------------------------------------
    def forward(self, x, state: dict, until: str | None = None, lean: bool = False) -> dict:
        """Values of every node up to the explained node (or `until`), from input x (a tuple
        of tensors for a model with several inputs).

        lean: an elementwise activation's output (ReLU, GELU, ...; PassStep.recompute) is
        dropped once the forward pass has run every step that reads it, and recomputed from its
        input whenever the relevance walk reads it (LeanValues). The walk needs a linear layer's
        output z and the activation of it, where autograd keeps one of the two: holding both put
        lrp.epsilon's peak memory at 1.8x the gradient's on radar N=3."""
        stop = until or self.explained_name
        model_inputs = tuple(x) if isinstance(x, (tuple, list)) else (x,)
        if len(model_inputs) != len(self.input_names):
            raise InputError(f"the model takes {len(self.input_names)} input tensor(s) "
                             f"({', '.join(self.input_names)}) but got {len(model_inputs)}")
        values = LeanValues(state) if lean else {}
        values.update(zip(self.input_names, model_inputs))
        last_reader, recipes = self._recipes if lean else ({}, {})
        x = model_inputs[0]
        for index, step in enumerate(self.steps):
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
            del out
            for name in step.inputs:   # every reader of an activation has run: keep its recipe only
                if name in recipes and last_reader[name] == index and name != stop:
                    dict.__setitem__(values, name, recipes[name])
            if step.name == stop:
                break
        return values

    @functools.cached_property
    def _kept(self) -> set:
        """The nodes whose values a lean forward pass and a releasing walk always keep."""
        return set(self.input_names) | {self.output_name, self.explained_name}

    @functools.cached_property
    def _recipes(self):
        """For lean forward passes, once per graph: node -> index of the last step reading it,
        and the nodes an elementwise activation computes (not the _kept ones) -> their recipe."""
        last_reader = {}
        for index, step in enumerate(self.steps):
            for name in step.inputs:
                last_reader[name] = index
        recipes = {step.name: _Recipe(step) for step in self.steps
                   if getattr(step, "recompute", False) and step.name not in self._kept}
        return last_reader, recipes

    def map_bounds(self, low: torch.Tensor, high: torch.Tensor, values: dict) -> dict:
        """Carry input-space bounds (of z^B) to the inputs of the first linear layers, through
        the monotone steps before them (activations, pooling, reshapes, padding, scaling,
        adding a constant): f(low) and f(high) bound f(x) elementwise, in one order or the
        other. `values` are the forward pass's (constants and sizes the steps read).
        Returns first layer name -> (low, high); layers the bounds cannot reach are in
        bounds_blocked."""
        lows = low if isinstance(low, (tuple, list)) else (low,)
        highs = high if isinstance(high, (tuple, list)) else (high,)
        mapped = {name: (lo, hi) for name, lo, hi in zip(self.input_names, lows, highs)}
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
    def relevance(self, values: dict, seed: torch.Tensor, state: dict, record=None, release: bool = False):
        """Walk from the explained node back to the input.

        seed is the relevance at the explained node [T*B, *out]. Returns the relevance at
        the input and, per step, (step, relevance_out, relevance_in, Absorbed) rows of
        per-(target, sample) sums.

        release: drop each step's output from `values` once the step is explained: its readers
        all come later in the forward order, so the walk has passed them, and the step itself
        is the last to need it (as z). The model inputs and the explained node are kept. Autograd frees what
        it saved for the backward the same way; holding every activation to the end made each
        new relevance tensor fresh memory (radar N=3: half of the walk's time went to page
        faults, and the peak held the whole forward pass beside the relevance).
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
            if release and step.name not in self._kept:
                del values[step.name]
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
        relevances = []
        for name in self.input_names:
            relevance_input = pending.pop(name, None)
            if relevance_input is None:  # an input the explained output does not use
                relevance_input = torch.zeros((seed.shape[0],) + tuple(values[name].shape[1:]),
                                              dtype=seed.dtype, device=seed.device)
            relevances.append(relevance_input)
        return (relevances[0] if len(relevances) == 1 else tuple(relevances)), rows


# --- building ---------------------------------------------------------------------------
class LeafTracer(DecomposingTracer, torch.fx.Tracer):
    """Keeps every torch.nn module (but containers) as one node, so each gets a rule; attention
    and transformer layers are written out in their operations (decompose.py)."""

    def is_leaf_module(self, m, qualname):
        return _is_leaf(self, m, qualname)


def _is_leaf(tracer, m, qualname):
    if isinstance(m, (nn.Sequential, nn.ModuleList, nn.ModuleDict)):
        return False
    return m.__module__.startswith("torch.nn") or torch.fx.Tracer.is_leaf_module(tracer, m, qualname)


def _shape_tracer():
    """A LeafTracer that knows every tensor's value while tracing (after torch.fx's MetaTracer,
    run on the example input itself rather than on meta tensors, so that leaf modules run with
    their own parameters): x.dim(), x.shape and range(x.dim()) are concrete numbers."""
    from torch.fx.experimental.meta_tracer import MetaTracer

    class LeafShapeTracer(DecomposingTracer, MetaTracer):
        def is_leaf_module(self, m, qualname):
            return _is_leaf(self, m, qualname)

        def create_proxy(self, kind, target, args, kwargs, *rest, **extra):
            proxy = super().create_proxy(kind, target, args, kwargs, *rest, **extra)
            if kind == "get_attr":  # MetaTracer moves parameters to "meta": keep the real ones
                value = self.root
                for atom in target.split("."):
                    value = value._parameters.get(atom, value._buffers.get(atom, None)) \
                        if isinstance(value, nn.Module) and (atom in value._parameters or atom in value._buffers) \
                        else getattr(value, atom)
                proxy.install_tensor_meta(value.detach())
            return proxy

    return LeafShapeTracer()


def trace(model: nn.Module, dtype: torch.dtype | None = None, output=None, example=None) -> Graph:
    """Trace and canonize a model (its parameters are copied in `dtype`, None: their own, before
    any folding; the model is not changed). output: which output is explained when the model
    returns several (an index into a tuple, a key of a dict).

    The trace is symbolic, so sizes read in forward (n, c, h, w = x.shape; x.view(n, c * h * w))
    are graph nodes evaluated on the real tensors: one graph serves every input shape. Python
    code that needs a number at trace time (range(x.dim()), if x.shape[1] > 3) cannot be traced
    so; given an example input (a tensor or a tuple of them), the trace is then specialized to
    its shapes (graph.specialized_to), and the engine traces again for another shape."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"expected a torch.nn.Module, got {type(model).__name__}")
    root = model
    if model.__module__.startswith("torch.nn") and not isinstance(model, nn.Sequential):
        root = nn.Sequential(model)  # a bare layer: give it a graph of one node
    specialized = None
    try:
        fx_graph = LeafTracer().trace(root)
    except UnsupportedLayerError:   # a written-out layer refused by name (decompose.py)
        raise
    except Exception as error:  # tracing runs user code; any failure gets one clear message
        symbolic_error = str(error).splitlines()[0] if str(error) else type(error).__name__
        if example is None:
            raise UnsupportedLayerError(
                type(model).__name__, type(model).__name__,
                "the model could not be traced symbolically by torch.fx (data-dependent control "
                f"flow or an untraceable operation): {symbolic_error}") from None
        fx_graph, specialized = _specialized_trace(model, root, example, symbolic_error)
    graph = _Builder(root, fx_graph, dtype, output).build()
    graph.specialized_to = specialized
    return graph


def shapes_of(example) -> tuple:
    """The input shapes a specialized graph is traced for."""
    inputs = example if isinstance(example, (tuple, list)) else (example,)
    return tuple(tuple(t.shape) for t in inputs)


def _specialized_trace(model, root, example, symbolic_error):
    import inspect
    import warnings

    inputs = example if isinstance(example, (tuple, list)) else (example,)
    names = [p.name for p in inspect.signature(root.forward).parameters.values()
             if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)][:len(inputs)]
    # the trace runs the model's own layers on the example: in the model's dtype (only shapes matter)
    own = next((p.dtype for p in model.parameters() if p.dtype.is_floating_point), None)
    metas = {name: t.detach().to(own) if own is not None and t.is_floating_point() else t.detach()
             for name, t in zip(names, inputs)}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # MetaTracer warns for every node it cannot give a shape
            fx_graph = _shape_tracer().trace(root, metas)
    except UnsupportedLayerError:
        raise
    except Exception as error:
        raise UnsupportedLayerError(
            type(model).__name__, type(model).__name__,
            "the model could not be traced by torch.fx, neither symbolically "
            f"({symbolic_error}) nor with the input's shapes (data-dependent control flow or an "
            f"untraceable operation): {str(error).splitlines()[0]}") from None
    return fx_graph, shapes_of(example)


class _Builder:
    def __init__(self, root: nn.Module, fx_graph: torch.fx.Graph, dtype=None, output=None):
        self.root = root
        self.dtype = dtype
        self.fx_graph = fx_graph
        self.output = output  # which of several outputs is explained (index or key), None: the only one
        self.steps: dict[str, Step] = {}
        self.depends: dict[str, bool] = {}
        self.input_names: list[str] = []
        self.output_name = None
        self.meta: set[str] = set()   # nodes holding sizes (x.shape, c * h * w), not tensors
        self.parts: dict = {}         # split node -> (the tensor split, its function)

    def build(self) -> Graph:
        for node in self.fx_graph.nodes:
            if node.op == "placeholder":
                self.input_names.append(node.name)
                self.depends[node.name] = True
                continue
            if node.op == "output":
                self.output_name = _chosen_output(node.args[0], self.output).name
                continue
            step = self._step(node)
            step.spatial_dims = _spatial_dims(step.kind) or (step.dims if isinstance(step, MaxPoolStep) else None)
            step.gate = _is_gate(node, self.root)
            self.steps[node.name] = step
            self.depends[node.name] = node.name not in self.meta and any(self.depends[n] for n in step.inputs)
        if not self.input_names or self.output_name is None:
            raise UnsupportedLayerError("model", type(self.root).__name__, "no input or no output")
        if not self.depends.get(self.output_name, False):
            raise UnsupportedLayerError("output", type(self.root).__name__, "the output does not depend on the input")
        self._canonize_batchnorm()
        explained, stripped = self._strip_final_normalization()
        self._check_rules_where_relevance_flows(explained)
        order = [s for s in self.steps.values()]
        graph = Graph(order, self.input_names, self.output_name, explained, self.depends, stripped)
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

            out_of_place = _out_of_place_method(target)

            def call_method(values, _name=out_of_place):
                args, kwargs = materialize(values)
                kwargs = {k: v for k, v in kwargs.items() if k != "inplace"}
                return getattr(args[0], _name)(*args[1:], **kwargs)

            if target in ("size", "dim", "numel") or first.name in self.meta:
                return self._meta(node, ValueStep(node.name, path, kind, inputs, call_method))
            if not self._live(inputs):   # computed from constants only (a relative position bias)
                return OpaqueStep(node.name, path, kind, inputs, call_method)
            if target in _RESHAPE_METHODS:
                return ReshapeStep(node.name, path, kind, inputs, call_method)
            if target == "roll":
                return self._roll_step(node, path, kind, inputs, call_method)
            if target in ("permute", "transpose"):
                return ReshapeStep(node.name, path, kind, inputs, call_method,
                                   permutation=_permutation(node, target))
            if target in layers.ACTIVATION_METHODS:
                return PassStep(node.name, path, kind, inputs, call_method)
            if target in ("mean", "sum"):
                return NormStep(node.name, path, kind, inputs, _keeping_batch(node, path, kind, call_method))
            if target == "softmax":
                return self._softmax_step(node, path, kind, inputs, call_method)
            if target in _SOFTMAX_METHODS:
                return PassStep(node.name, path, kind, inputs, call_method)
            if target == "matmul":
                return self._matmul_step(node, path, kind, inputs, call_method)
            if target == "masked_fill" and self._constant(node.args[1]):
                return MaskedFillStep(node.name, path, kind, inputs, call_method)
            if target in _SPLIT_METHODS:
                return self._parts(node, path, kind, inputs, call_method)
            if target in ("mul", "mul_", "div", "div_"):
                return self._product_step(node, path, kind, inputs, call_method)
            if target in ("add", "add_", "sub", "sub_") and len(node.args) == 2 and not node.kwargs:
                return self._sum_step(node, path, kind, index)
            return OpaqueStep(node.name, path, kind, inputs, call_method)

        path = f"{node.name} ({_type_name(target)})"
        kind = _type_name(target)

        function, positional_inplace = _out_of_place_function(target)

        def call_function(values):
            # every value stays as the forward pass computed it: the rules read them afterwards,
            # so an in-place operation (F.relu(x, inplace=True), x *= 2) is run out of place
            args, kwargs = materialize(values)
            kwargs = {k: v for k, v in kwargs.items() if k != "inplace"}
            if positional_inplace is not None and len(args) > positional_inplace:
                args = args[:positional_inplace] + (False,) + args[positional_inplace + 1:]
            return function(*args, **kwargs)

        node_args = [a for a in node.all_input_nodes]
        if target is getattr and node.args[1] not in _METADATA_ATTRIBUTES:
            # x.T, x.mT, x.data, ...: a tensor, not metadata; refused where relevance reaches it
            return OpaqueStep(node.name, path, kind, inputs, call_function, f"the attribute .{node.args[1]}")
        if target is getattr or (node_args and all(n.name in self.meta for n in node_args)
                                 and target not in _TENSOR_FACTORIES):
            # sizes and arithmetic on them (n, c, h, w = x.shape; c * h * w; c // groups): evaluated on
            # the real tensors at every forward, so the graph serves every input shape
            return self._meta(node, ValueStep(node.name, path, kind, inputs, call_function))
        if inputs and not self._live(inputs):   # computed from constants only: no relevance reaches it
            return OpaqueStep(node.name, path, kind, inputs, call_function)
        if target is operator.getitem and node.args[0].name in self.parts:
            return self._part(node, path, kind)
        if target is operator.getitem:
            return SelectStep(node.name, path, kind, inputs, call_function)
        if target in _SUM_FUNCTIONS:
            return self._sum_step(node, path, kind, index)
        if target in _SCALE_FUNCTIONS:
            return self._product_step(node, path, kind, inputs, call_function)
        if target in _CAT_FUNCTIONS:
            parts = node.args[0]
            dim = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim", 0)
            slots = [index[p] if isinstance(p, torch.fx.Node) else p for p in parts]
            return ConcatStep(node.name, path, kind, inputs, dim, slots)
        if target in _RESHAPE_FUNCTIONS:
            return ReshapeStep(node.name, path, kind, inputs, call_function)
        if target is torch.roll:
            return self._roll_step(node, path, kind, inputs, call_function)
        if target in (torch.permute, torch.transpose):
            return ReshapeStep(node.name, path, kind, inputs, call_function,
                               permutation=_permutation(node, target.__name__))
        if target in _SPLIT_FUNCTIONS:
            return self._parts(node, path, kind, inputs, call_function)
        if target in layers.ACTIVATION_FUNCTIONS:
            # the identity rule (relevance passes through, as ReLU's): LRP's and AttnLRP's choice
            return PassStep(node.name, path, kind, inputs, call_function)
        if target in (F.dropout, F.dropout1d, F.dropout2d, F.dropout3d, F.alpha_dropout, F.feature_alpha_dropout):
            return PassStep(node.name, path, kind, inputs, lambda values: values[0], transparent=True)
        if _is_stochastic_depth(target):
            # torchvision.ops.stochastic_depth (a leaf of its fx trace): the identity in evaluation
            bound = {**dict(zip(["input", "p", "mode", "training"], node.args)), **node.kwargs}
            if bound.get("training", True) and bound.get("p", 1.0) != 0:
                raise UnsupportedLayerError(path, kind, "stochastic depth in training mode drops whole samples "
                                            "at random; explain in evaluation mode (mode='eval')")
            return PassStep(node.name, path, kind, inputs, lambda values: values[0], transparent=True)
        if target in layers.MAXPOOL_FUNCTIONS:
            return self._maxpool_from_function(node, path, kind, inputs)
        if target in _ADAPTIVE_MAXPOOL_FUNCTIONS:
            bound = {"output_size": None, **dict(zip(["input", "output_size", "return_indices"], node.args)),
                     **node.kwargs}
            if bound.get("return_indices"):
                raise UnsupportedLayerError(path, kind, "return_indices=True")
            return AdaptiveMaxPoolStep(node.name, path, kind, inputs, _ADAPTIVE_MAXPOOL_FUNCTIONS[target],
                                       bound["output_size"])
        if target in layers.SAMPLE_NORM_FUNCTIONS:
            return self._normalization_function(node, path, kind, inputs, materialize, call_function)
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
        if target in (F.softmax, torch.softmax):
            return self._softmax_step(node, path, kind, inputs, call_function)
        if target in _SOFTMAX_FUNCTIONS:
            return PassStep(node.name, path, kind, inputs, call_function)
        if target in (torch.matmul, operator.matmul):
            return self._matmul_step(node, path, kind, inputs, call_function)
        if target is F.linear:
            return self._linear_function(node, path, kind, inputs, call_function)
        return OpaqueStep(node.name, path, kind, inputs, call_function)

    def _meta(self, node, step):
        self.meta.add(node.name)
        return step

    def _parts(self, node, path, kind, inputs, function):
        """chunk / split / unbind: a tuple of tensors. Each getitem on it becomes a selection from
        the tensor split (_part), so relevance goes back to it directly."""
        self.parts[node.name] = (node.args[0].name, function)
        return ValueStep(node.name, path, kind, inputs, function)

    def _part(self, node, path, kind):
        source, function = self.parts[node.args[0].name]
        item = node.args[1]
        if isinstance(item, torch.fx.Node):
            raise UnsupportedLayerError(path, kind, "a part of a split chosen by a value computed in forward()")
        split_step = self.steps[node.args[0].name]
        rest = split_step.inputs[1:]

        def select(values):
            return function([values[0]] + list(values[1:]))[item]
        return SelectStep(node.name, f"{node.name} ({kind} [{item}] of '{split_step.path}')", kind,
                          [source] + rest, select)

    def _product_step(self, node, path, kind, inputs, call_function):
        """x * c, c * x, x / c (c a number, a size, a parameter or a buffer): scaling. a * b with
        both depending on the input: the product rule. a / b with both depending on it: b is
        held constant (a standard deviation written out by hand)."""
        division = node.target in _DIVISIONS
        tensors = [a for a in node.args[:2] if isinstance(a, torch.fx.Node)]
        live = [a for a in tensors if self.depends.get(a.name, False)]
        numbers = [a for a in node.args[:2] if not isinstance(a, torch.fx.Node)]
        if len(node.args) != 2 or node.kwargs.get("rounding_mode") is not None:
            raise UnsupportedLayerError(path, kind, "only a product or quotient of two operands")
        if any(isinstance(a, (int, float)) and a == 0 for a in numbers) and not division:
            raise UnsupportedLayerError(path, kind, "multiplication by zero")
        if not live:
            return OpaqueStep(node.name, path, kind, inputs, call_function)  # a constant
        numerator = node.args[0]
        slot = {n.name: i for i, n in enumerate(node.all_input_nodes)}
        if division:
            if not (isinstance(numerator, torch.fx.Node) and numerator in live):
                raise UnsupportedLayerError(path, kind, "division of a constant by a tensor that depends on the input")
            return ScaleStep(node.name, path, kind, inputs, call_function, slot=slot[numerator.name],
                             divisor_held=len(live) == 2)
        if len(live) == 1:
            return ScaleStep(node.name, path, kind, inputs, call_function, slot=slot[live[0].name])
        slots = (slot[live[0].name], slot[live[1].name])
        gate, reason = self._gate(live)
        return ProductStep(node.name, path, kind, inputs, slots, None if gate is None else slots[gate], reason)

    def _roll_step(self, node, path, kind, inputs, function):
        """torch.roll over non-batch dims: a permutation of the elements, so relevance is rolled back
        (the transpose of a selection). Without dims torch rolls the flattened tensor, across samples."""
        bound = {**dict(zip(["input", "shifts", "dims"], node.args)), **node.kwargs}
        dims = bound.get("dims")
        dims = dims if isinstance(dims, (tuple, list)) else (dims,)
        if any(d is None or isinstance(d, torch.fx.Node) or int(d) == 0 for d in dims):
            return OpaqueStep(node.name, path, kind, inputs, function,
                              "a roll over the batch dimension or the flattened tensor mixes samples; roll over "
                              "the other dims (dims=(1, 2))")
        return SelectStep(node.name, path, kind, inputs, function)

    def _linear_function(self, node, path, kind, inputs, call_function):
        """F.linear(x, weight, bias) with a constant weight and bias (parameters, slices of them: what
        nn.MultiheadAttention's projections are): a dense layer, as nn.Linear."""
        bound = {**dict(zip(["input", "weight", "bias"], node.args)), **node.kwargs}
        x, weight, bias = bound.get("input"), bound.get("weight"), bound.get("bias")
        if not isinstance(x, torch.fx.Node) or not self.depends.get(x.name, False):
            return OpaqueStep(node.name, path, kind, inputs, call_function)  # a constant
        if not (self._constant(weight) and self._constant(bias)):
            return OpaqueStep(node.name, path, kind, inputs, call_function,
                              "F.linear with a weight or bias computed from the input (a product of two "
                              "input-dependent tensors: write it as torch.matmul)")
        op = DenseOperator(self._constant_value(weight), self._constant_value(bias))
        # LinearStep acts on its first input: the weight and bias nodes follow it
        ordered = [x.name] + [name for name in inputs if name != x.name]
        return LinearStep(node.name, path, kind, ordered, op)

    def _constant_value(self, arg):
        """The value of a node that does not depend on the input (a parameter, a slice of one),
        computed from the steps built so far (parameters already copied in the graph's dtype)."""
        if not isinstance(arg, torch.fx.Node):
            return arg
        values = {}

        def value(name):
            if name not in values:
                step = self.steps[name]
                values[name] = step.forward([value(n) for n in step.inputs], {"composite": None})
            return values[name]
        return value(arg.name)

    def _live(self, names) -> bool:
        """Whether any of these nodes depends on the model input."""
        return any(self.depends.get(name, False) for name in names)

    def _constant(self, arg) -> bool:
        """A tensor (or number) that does not depend on the input."""
        return not (isinstance(arg, torch.fx.Node) and self.depends.get(arg.name, False))

    def _softmax_step(self, node, path, kind, inputs, function):
        """A softmax over a given dim: AttnLRP's rule or, under CP-LRP, the attention weights
        held constant (steps.SoftmaxStep); without a dim it stays a final-layer softmax."""
        names = ["input", "dim"]
        bound = {**dict(zip(names, node.args)), **node.kwargs}
        dim = bound.get("dim")
        if not isinstance(dim, int):
            return PassStep(node.name, path, kind, inputs, function)
        return SoftmaxStep(node.name, path, kind, inputs, function, dim)

    def _matmul_step(self, node, path, kind, inputs, function):
        """a @ b: with both factors depending on the input, steps.MatmulStep. A product with a
        constant matrix is a linear layer the engine has no operator for yet: refused where
        relevance reaches it."""
        if len(node.args) != 2 or node.kwargs:
            return OpaqueStep(node.name, path, kind, inputs, function, "matmul with out= or extra arguments")
        a, b = node.args
        if self._constant(a) or self._constant(b):
            return OpaqueStep(node.name, path, kind, inputs, function,
                              "a matrix product with a constant matrix (use nn.Linear)")
        slot = {n.name: i for i, n in enumerate(node.all_input_nodes)}
        slots = (slot[a.name], slot[b.name])
        weights = [self._is_attention_weights(a.name), self._is_attention_weights(b.name)]
        weights_slot = slots[weights.index(True)] if weights.count(True) == 1 else None
        return MatmulStep(node.name, path, kind, inputs, slots, weights_slot)

    def _is_attention_weights(self, name) -> bool:
        """Whether a tensor is a softmax's output, through reshapes, selections and dropout."""
        step = self.steps.get(name)
        while isinstance(step, (ReshapeStep, SelectStep)) or (isinstance(step, PassStep) and step.transparent):
            step = self.steps.get(step.inputs[0])
        return isinstance(step, SoftmaxStep)

    def _gate(self, factors):
        """Which factor of a product is the gate: the one a gating nonlinearity computes
        (through reshapes and pass-throughs). Returns (0 or 1 or None, why not)."""
        def is_gate(name):
            step = self.steps.get(name)
            while isinstance(step, (ReshapeStep, SelectStep)) or (isinstance(step, PassStep) and step.transparent):
                step = self.steps.get(step.inputs[0])
            return 0 if step is None else int(step.gate)
        # 2: a squashing gate (sigmoid, hard sigmoid, tanh, softmax); 1: SiLU or GELU (the gate of a
        # GLU-style MLP, but also the activation of the features an SE gate scales)
        levels = [is_gate(f.name) for f in factors]
        top = max(levels)
        if top and levels.count(top) == 1:
            return levels.index(top), ""
        if not top:
            return None, "neither factor comes from a gating nonlinearity (sigmoid, tanh, softmax, SiLU, GELU)"
        return None, "both factors come from gating nonlinearities of the same kind"

    def _normalization_function(self, node, path, kind, inputs, materialize, call_function):
        target = node.target
        names = {F.layer_norm: ["input", "normalized_shape", "weight", "bias", "eps"],
                 F.group_norm: ["input", "num_groups", "weight", "bias", "eps"],
                 F.rms_norm: ["input", "normalized_shape", "weight", "eps"],
                 F.instance_norm: ["input", "running_mean", "running_var", "weight", "bias", "use_input_stats",
                                   "momentum", "eps"]}[target]

        def make_operator(values):
            args, kwargs = materialize(values)
            bound = {**dict(zip(names, args)), **kwargs}
            return normalization_operator(target, bound)
        return NormalizationStep(node.name, path, kind, inputs, call_function, make_operator)

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
            return PassStep(node.name, path, kind, inputs, lambda values: F.relu(values[0]), recompute=True)
        if isinstance(module, nn.LeakyReLU):
            slope = module.negative_slope
            return PassStep(node.name, path, kind, inputs, lambda values: F.leaky_relu(values[0], slope),
                            recompute=True)
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
            module_copy = _parameter_free_copy(module)  # out of place (inplace=False on the copy)
            step = NormStep(node.name, path, kind, inputs, lambda values: module_copy.forward(values[0]))
            if isinstance(module, nn.Upsample):
                _set_resampling_rule(step, module.mode, module.size, module.scale_factor)
            return step
        if isinstance(module, layers.FINAL):
            module_copy = _parameter_free_copy(module)  # out of place (inplace=False on the copy)
            return PassStep(node.name, path, kind, inputs, lambda values: module_copy.forward(values[0]))
        if isinstance(module, nn.PReLU):
            weight = parameter_copy(module.weight, self.dtype)
            return PassStep(node.name, path, kind, inputs, lambda values: F.prelu(values[0], weight), recompute=True)
        if isinstance(module, layers.ACTIVATIONS):
            # the identity rule (relevance passes through, as ReLU's): LRP's and AttnLRP's choice
            module_copy = _parameter_free_copy(module)  # out of place (inplace=False on the copy)
            return PassStep(node.name, path, kind, inputs, lambda values: module_copy.forward(values[0]),
                            recompute=True)
        if isinstance(module, (*layers.SAMPLE_NORMS, layers.INSTANCENORM)):
            return self._normalization_module(node, module, path, kind, inputs)
        if isinstance(module, tuple(layers.ADAPTIVE_MAXPOOL)):
            if module.return_indices:
                raise UnsupportedLayerError(path, kind, "return_indices=True")
            return AdaptiveMaxPoolStep(node.name, path, kind, inputs, layers.ADAPTIVE_MAXPOOL[type(module)],
                                       module.output_size)
        raise UnsupportedLayerError(path, kind)

    def _normalization_module(self, node, module, path, kind, inputs):
        """LayerNorm, GroupNorm, RMSNorm, InstanceNorm as their functional form with the
        parameters copied in the dtype explained."""
        def copy(name):
            return parameter_copy(getattr(module, name, None), self.dtype)
        if isinstance(module, nn.LayerNorm):
            function = F.layer_norm
            bound = {"normalized_shape": tuple(module.normalized_shape), "weight": copy("weight"),
                     "bias": copy("bias"), "eps": module.eps}
        elif isinstance(module, nn.RMSNorm):
            function = F.rms_norm
            bound = {"normalized_shape": tuple(module.normalized_shape), "weight": copy("weight"), "eps": module.eps}
        elif isinstance(module, nn.GroupNorm):
            function = F.group_norm
            bound = {"num_groups": module.num_groups, "weight": copy("weight"), "bias": copy("bias"),
                     "eps": module.eps}
        else:
            function = F.instance_norm
            running = module.track_running_stats and not module.training
            bound = {"running_mean": copy("running_mean"), "running_var": copy("running_var"),
                     "weight": copy("weight"), "bias": copy("bias"), "use_input_stats": not running,
                     "momentum": 0.0, "eps": module.eps}

        def forward(values):
            return function(values[0], **bound)

        def make_operator(values):
            return normalization_operator(function, {"input": values[0], **bound})
        return NormalizationStep(node.name, path, kind, inputs, forward, make_operator)

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
        for name in self.input_names:
            users[name] = []
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

    def _check_rules_where_relevance_flows(self, explained):
        """Every step relevance can reach from the explained node needs a rule: an operation
        without one (OpaqueStep) or a softmax inside the network is refused there, naming the
        first such layer. Steps relevance never reaches (constants, a divisor held constant)
        only compute values."""
        reached, todo = set(), [explained]
        while todo:
            name = todo.pop()
            if name in reached or name not in self.steps:
                continue
            reached.add(name)
            step = self.steps[name]
            for slot in step.relevance_slots():
                source = step.inputs[slot]
                if self.depends.get(source, False):
                    todo.append(source)
        for name, step in self.steps.items():
            if name not in reached:
                continue
            if isinstance(step, OpaqueStep):
                raise UnsupportedLayerError(step.path, step.kind, step.reason)
            if name != explained and _is_softmax_step(step) and not _is_sigmoid_step(step) \
                    and not isinstance(step, SoftmaxStep):
                raise UnsupportedLayerError(step.path, step.kind,
                                            "softmax is only supported as the final layer")

    def _mark_first_layers(self):
        """The first linear layers are those that see the input: reached from it with no
        linear layer in between. Where every step on the way is monotone (see
        _carries_bounds), z^B's input bounds can be carried to them; otherwise the step
        that blocks them is recorded, so z^B can say why it cannot apply.
        Returns (the steps carrying bounds, first layer -> blocking step path)."""
        # node -> "bounds" or ("blocked", path); absent: not reached
        reach = {name: "bounds" for name in self.input_names}
        carriers, blocked = set(), {}
        for name, step in self.steps.items():
            live = [n for n in step.inputs if n in reach]
            if not live or isinstance(step, ValueStep):
                continue
            if isinstance(step, NormalizationStep):
                continue  # a layer with a rule of its own: what follows is not a first layer
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
        return not _is_softmax_step(step) and step.kind.lower().lstrip("_") not in _NOT_MONOTONE
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


def _is_stochastic_depth(target) -> bool:
    """torchvision.ops.stochastic_depth, recognized without importing torchvision."""
    return getattr(target, "__name__", "") == "stochastic_depth" and \
        getattr(target, "__module__", "").startswith("torchvision")


def _is_sigmoid_step(step):
    """A sigmoid inside the network is an elementwise nonlinearity (the identity rule)."""
    return step.kind.split(".")[-1].lower().rstrip("_") == "sigmoid"


def _is_gate(node, root) -> int:
    """Whether a node computes a gate, the factor product='gate_constant' holds constant: 2 for
    a squashing one (sigmoid, hard sigmoid, tanh, softmax), 1 for SiLU or GELU, else 0."""
    if node.op == "call_module":
        module = root.get_submodule(node.target)
        return (1 if isinstance(module, (nn.SiLU, nn.GELU)) else 2) if isinstance(module, layers.GATES) else 0
    if node.op == "call_method":
        return 2 if node.target in ("sigmoid", "sigmoid_", "tanh", "tanh_", "softmax") else 0
    if node.op == "call_function" and node.target in layers.GATE_FUNCTIONS:
        return 1 if node.target in (F.silu, F.gelu) else 2
    return 0


def _chosen_output(result, output):
    """The output node explained: the model's only output, or output= of several (a tuple
    or list by index, a dict by key). Without output=, the error lists the choices."""
    if isinstance(result, torch.fx.Node):
        if output is not None:
            raise InputError(f"output={output!r} chooses among several outputs, but the model returns one tensor")
        return result
    if isinstance(result, dict):
        choices = list(result)
    elif isinstance(result, (tuple, list)):
        choices = list(range(len(result)))
    else:
        raise UnsupportedLayerError("output", type(result).__name__, "the model returns no tensor")
    what = (f"a dict with keys {', '.join(map(repr, choices))}" if isinstance(result, dict)
            else f"a {type(result).__name__} of {len(choices)} values")
    if output is None:
        raise InputError(f"the model returns {what}; choose the output explained with output= (one of "
                         f"{', '.join(map(repr, choices))})")
    if output not in choices:
        raise InputError(f"output={output!r} is not one of the model's outputs: it returns {what}")
    chosen = result[output]
    if not isinstance(chosen, torch.fx.Node):
        raise InputError(f"output {output!r} of the model is not a tensor ({type(chosen).__name__})")
    return chosen


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
    """A copy of a parameter-free module without the user's hooks, computing out of place
    (the rules read the stored input of every step after the forward pass)."""
    import copy

    clone = copy.copy(module)
    clone._forward_hooks = type(module._forward_hooks)()
    clone._forward_pre_hooks = type(module._forward_pre_hooks)()
    if getattr(clone, "inplace", False):
        clone.inplace = False
    return clone


_IN_PLACE_OPERATORS = {operator.iadd: operator.add, operator.isub: operator.sub, operator.imul: operator.mul,
                       operator.itruediv: operator.truediv}


def _out_of_place_function(target):
    """(the out-of-place form of a function, the position of its `inplace` argument or None)."""
    target = _IN_PLACE_OPERATORS.get(target, target)
    try:
        import inspect

        names = list(inspect.signature(target).parameters)
    except (TypeError, ValueError):  # builtins without a signature have no inplace argument
        return target, None
    return target, (names.index("inplace") if "inplace" in names else None)


def _out_of_place_method(name: str) -> str:
    """x.relu_() -> x.relu(), x.mul_(2) -> x.mul(2): the stored x stays as it was."""
    return name[:-1] if name.endswith("_") and not name.startswith("_") else name


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
        # aten's own backward of nearest upsampling: the same block sums as an average pool
        # times the block size, at a fifth of its time (radar N=3, 256x256: 2.7 ms against 13.8)
        dims = s.dim() - 2
        kernel = tuple(int(f) for f in factors) if len(factors) == dims else (int(factors[0]),) * dims
        backward = {1: torch.ops.aten.upsample_nearest1d_backward, 2: torch.ops.aten.upsample_nearest2d_backward,
                    3: torch.ops.aten.upsample_nearest3d_backward}[dims]
        output_size = list(s.shape[2:])
        input_size = list(s.shape[:2]) + [n // k for n, k in zip(output_size, kernel)]
        return backward(s, output_size, input_size, *(float(k) for k in kernel))
    return adjoint
