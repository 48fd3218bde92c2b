"""The operations of a traced network, each with its forward map and its relevance rule.

A Step computes its output from the values of its input nodes (forward) and maps the
relevance at its output to relevance at each input (relevance), booking in an Absorbed what
it does not pass on. `values` is aligned with `inputs`; the first input is the tensor the
step acts on, later ones may be sizes or other tensors. Relevance tensors are [T*B, ...]:
T targets stacked target-major over B samples; stored activations are [B, ...].

Per-call settings (the composite, z^B bounds, max-pool indices) live in `state`, so one
traced graph serves every method.
"""

from __future__ import annotations

import abc
import math
from collections.abc import Callable

import torch
import torch.nn.functional as F

from ..errors import UnsupportedLayerError
from .operators import LinearOperator, _autograd_adjoint
from .rules import Absorbed, per_target, total
from .stabilizer import stabilize

Tensor = torch.Tensor


class Step(abc.ABC):
    """One node of the graph."""

    #: shape-only and identity steps are transparent when looking for the first layer
    transparent = False
    #: convolutions and pooling: the spatial dims their input has after (N, C); torch would
    #: take an input without N as one unbatched sample, so the graph checks it
    spatial_dims = None

    def __init__(self, name: str, path: str, kind: str, inputs: list[str]):
        self.name = name
        self.path = path  # the module path or function name, for messages and the ledger
        self.kind = kind  # the module type or function, for messages and the ledger
        self.inputs = inputs

    @abc.abstractmethod
    def forward(self, values: list, state: dict):
        """The step's output from its input values; may keep per-call data in state."""

    @abc.abstractmethod
    def relevance(self, values: list, output, relevance: Tensor, state: dict):
        """Return (list of relevance per input, None where none goes; Absorbed)."""

    def rule_name(self, composite=None) -> str:
        return ""

    def to(self, dtype, device):
        return self

    def _first_only(self, relevance_in, values):
        return [relevance_in] + [None] * (len(values) - 1)


class UnaryStep(Step):
    """A step whose output is function(values): the first value is the tensor acted on."""

    def __init__(self, name, path, kind, inputs, function: Callable[[list], Tensor]):
        super().__init__(name, path, kind, inputs)
        self.function = function
        #: a closed-form transpose s -> (d function / d x)^T s, where one is known
        self.explicit_adjoint = None

    def forward(self, values, state):
        return self.function(values)

    def adjoint(self, values, s):
        """The transpose of this (linear) step with respect to its first input, applied to s."""
        if self.explicit_adjoint is not None:
            return self.explicit_adjoint(s)
        shape = (s.shape[0],) + tuple(values[0].shape[1:])
        rest = list(values[1:])
        return _autograd_adjoint(lambda t: self.function([t] + rest), s, shape)


class LinearStep(Step):
    """A linear layer (dense, conv, transposed conv, affine) explained by the composite's rule."""

    def __init__(self, name, path, kind, inputs, op: LinearOperator):
        super().__init__(name, path, kind, inputs)
        self.op = op
        self.first = False  # fed by the model input through shape-only steps

    def forward(self, values, state):
        return self.op.apply(values[0], self.op.weight, self.op.bias)

    def relevance(self, values, output, relevance, state):
        rule = state["composite"].rule_for(self.op.kind, self.first)
        context = state.get(("bounds", self.name))
        relevance_in, absorbed = rule.relevance(self.op, values[0], output, relevance, context)
        return self._first_only(relevance_in, values), absorbed

    def rule_name(self, composite=None):
        return "" if composite is None else repr(composite.rule_for(self.op.kind, self.first))

    def to(self, dtype, device):
        new = LinearStep(self.name, self.path, self.kind, self.inputs, self.op.to(dtype, device))
        new.first, new.spatial_dims = self.first, self.spatial_dims
        return new


class PassStep(UnaryStep):
    """Elementwise activations and identities: relevance passes through unchanged."""

    def __init__(self, name, path, kind, inputs, function, transparent=False):
        super().__init__(name, path, kind, inputs, function)
        self.transparent = transparent

    def relevance(self, values, output, relevance, state):
        return self._first_only(relevance, values), Absorbed()

    def rule_name(self, composite=None):
        return "Pass"


class ScaleStep(PassStep):
    """Multiplication or division by a non-zero scalar: z_i = c x_i, so the z-rule passes
    relevance through unchanged."""


class ReshapeStep(UnaryStep):
    """Order-preserving reshapes (view, flatten, unflatten, squeeze, ...) and permutations of
    non-batch dimensions: relevance is moved back exactly, nothing is absorbed."""

    transparent = True

    def __init__(self, name, path, kind, inputs, function, permutation=None):
        super().__init__(name, path, kind, inputs, function)
        self.permutation = permutation  # dims of a permute/transpose, else None

    def _dims(self, ndim):
        """The permutation as non-negative dims, or for a transpose its two dims."""
        if self.permutation[0] == "transpose":
            return tuple(d % ndim for d in self.permutation[1:])
        return tuple(d % ndim for d in self.permutation)

    def _undo_permutation(self, relevance):
        dims = self._dims(relevance.dim())
        if self.permutation[0] == "transpose":
            return relevance.transpose(*dims)
        inverse = [0] * len(dims)
        for position, dim in enumerate(dims):
            inverse[dim] = position
        return relevance.permute(inverse)

    def _moves_batch(self, ndim):
        if self.permutation is None:
            return False
        dims = self._dims(ndim)
        return 0 in dims if self.permutation[0] == "transpose" else dims[0] != 0

    def forward(self, values, state):
        x = values[0]
        y = self.function(values)
        if y.shape[0] != x.shape[0] or self._moves_batch(x.dim()):
            raise UnsupportedLayerError(
                self.path, self.kind, "it mixes the batch dimension with others "
                f"(input {tuple(x.shape)} -> output {tuple(y.shape)})")
        return y

    def relevance(self, values, output, relevance, state):
        x = values[0]
        if self.permutation is not None:
            relevance = self._undo_permutation(relevance)
        relevance_in = relevance.reshape((relevance.shape[0],) + tuple(x.shape[1:]))
        return self._first_only(relevance_in, values), Absorbed()

    def rule_name(self, composite=None):
        return "Reshape"


class SelectStep(UnaryStep):
    """Slicing and zero padding of non-batch dimensions: relevance goes back to the selected
    positions (the transpose of the selection). Relevance on padding is absorbed as constant."""

    transparent = True

    def forward(self, values, state):
        x = values[0]
        y = self.function(values)
        if y.shape[0] != x.shape[0]:
            raise UnsupportedLayerError(self.path, self.kind, "it changes the batch dimension")
        return y

    def relevance(self, values, output, relevance, state):
        relevance_in = self.adjoint(values, relevance)
        # Booked from the step's own terms, not as a difference of sums (which would read 0
        # for any wrong transpose): the relevance on output positions that copy no input
        # element, i.e. the padding, found by selecting from a tensor of ones.
        copied = self.function([torch.ones_like(values[0])] + list(values[1:]))
        on_padding = total(per_target(1 - copied, relevance))
        return self._first_only(relevance_in, values), Absorbed(constant=on_padding)

    def rule_name(self, composite=None):
        return "Select"


class NormStep(UnaryStep):
    """Parameter-free linear maps (average pooling, upsampling, means over non-batch dims),
    explained by the z-rule with a fixed stabilizer (zennit's Norm).

    single_source (nearest upsampling by an integer factor): every output copies exactly one
    input, so its relevance goes to that input whole, by the transpose, also where the input
    is 0. The z-rule would give 0 / (0 + eps) = 0 there and absorb what flat and w^2 send to
    the copies of a dead ReLU (40-90 % of the relevance on the radar encoder-decoders)."""

    single_source = False

    def relevance(self, values, output, relevance, state):
        if self.single_source:
            return self._first_only(self.adjoint(values, relevance), values), Absorbed()
        x = values[0]
        denominator, shift = stabilize(output, state["composite"].norm_stabilizer)
        s = per_target(denominator.reciprocal(), relevance)
        relevance_in = per_target(x, self.adjoint(values, s))
        return self._first_only(relevance_in, values), Absorbed(stabilizer=total(per_target(shift, s)))

    def rule_name(self, composite=None):
        if self.single_source:
            return "copy (one source per output)"
        return "Norm" if composite is None else f"Norm(stabilizer={composite.norm_stabilizer:g})"


class MaxPoolStep(Step):
    """Max pooling: winner-take-all (relevance to the maximum of each window, summed where
    windows overlap) or proportional (relevance split in proportion to the window's inputs)."""

    def __init__(self, name, path, kind, inputs, dims, kernel, stride, padding, dilation, ceil_mode):
        super().__init__(name, path, kind, inputs)
        self.dims = dims
        self.kernel = _tuple(kernel, dims)
        self.stride = _tuple(stride if stride else kernel, dims)
        self.padding = _tuple(padding, dims)
        self.dilation = _tuple(dilation, dims)
        self.ceil_mode = ceil_mode

    def forward(self, values, state):
        pool = {1: F.max_pool1d, 2: F.max_pool2d, 3: F.max_pool3d}[self.dims]
        output, indices = pool(values[0], self.kernel, self.stride, self.padding, self.dilation,
                               self.ceil_mode, return_indices=True)
        state[("indices", self.name)] = indices
        return output

    def _window_sum(self, x):
        # the sum over each pooling window, as an average pool with divisor 1
        if self.dims == 1:
            out = F.avg_pool2d(x.unsqueeze(2), (1,) + self.kernel, (1,) + self.stride,
                               (0,) + self.padding, self.ceil_mode, True, 1)
            return out.squeeze(2)
        pool = {2: F.avg_pool2d, 3: F.avg_pool3d}[self.dims]
        return pool(x, self.kernel, self.stride, self.padding, self.ceil_mode, True, 1)

    def relevance(self, values, output, relevance, state):
        x = values[0]
        n = relevance.shape[0]
        composite = state["composite"]
        if composite.maxpool == "winner_take_all":
            indices = state[("indices", self.name)]
            channels = x.shape[1]
            flat_indices = indices.reshape(x.shape[0], channels, -1).repeat(n // x.shape[0], 1, 1)
            relevance_in = torch.zeros((n, channels, math.prod(x.shape[2:])),
                                       dtype=relevance.dtype, device=relevance.device)
            relevance_in.scatter_add_(2, flat_indices, relevance.reshape(n, channels, -1))
            relevance_in = relevance_in.view((n,) + tuple(x.shape[1:]))
            return self._first_only(relevance_in, values), Absorbed()
        if any(d != 1 for d in self.dilation):
            raise UnsupportedLayerError(self.path, self.kind, "proportional max-pool relevance needs dilation 1")
        denominator, shift = stabilize(self._window_sum(x), composite.norm_stabilizer)
        s = per_target(denominator.reciprocal(), relevance)
        shape = (n,) + tuple(x.shape[1:])
        relevance_in = per_target(x, _autograd_adjoint(self._window_sum, s, shape))
        return self._first_only(relevance_in, values), Absorbed(stabilizer=total(per_target(shift, s)))

    def rule_name(self, composite=None):
        return "MaxPool" if composite is None else f"MaxPool({composite.maxpool})"


class SumStep(Step):
    """Sums and differences of tensors and constants (residual additions), by the Norm rule:
    each operand gets its share of the sum; a Python-constant operand's share is absorbed."""

    def __init__(self, name, path, kind, inputs, operands: list):
        super().__init__(name, path, kind, inputs)
        self.operands = operands  # per operand: (sign, index into values or a constant)

    def forward(self, values, state):
        out = None
        for sign, slot in self.operands:
            operand = values[slot] if isinstance(slot, int) else slot
            term = operand if sign > 0 else -operand
            out = term if out is None else out + term
        return out

    def relevance(self, values, output, relevance, state):
        denominator, shift = stabilize(output, state["composite"].norm_stabilizer)
        s = per_target(denominator.reciprocal(), relevance)
        relevance_in = [None] * len(values)
        constant = 0.0
        for sign, slot in self.operands:
            operand = values[slot] if isinstance(slot, int) else slot
            operand = torch.as_tensor(operand, dtype=output.dtype, device=output.device)
            share = per_target((sign * operand).expand_as(output), s)
            if isinstance(slot, int):
                relevance_in[slot] = share if relevance_in[slot] is None else relevance_in[slot] + share
            else:
                constant = constant + total(share)
        return relevance_in, Absorbed(stabilizer=total(per_target(shift, s)), constant=constant)

    def rule_name(self, composite=None):
        return "Norm" if composite is None else f"Norm(stabilizer={composite.norm_stabilizer:g})"


class ConcatStep(Step):
    """torch.cat along a non-batch dimension: relevance is split back along it."""

    def __init__(self, name, path, kind, inputs, dim: int, parts: list):
        super().__init__(name, path, kind, inputs)
        self.dim = dim
        self.parts = parts  # per part: index into values, or a constant tensor

    def forward(self, values, state):
        tensors = [values[p] if isinstance(p, int) else p for p in self.parts]
        if self.dim % tensors[0].dim() == 0:
            raise UnsupportedLayerError(self.path, self.kind, "concatenation along the batch dimension")
        return torch.cat(tensors, self.dim)

    def relevance(self, values, output, relevance, state):
        sizes = [(values[p] if isinstance(p, int) else p).shape[self.dim] for p in self.parts]
        pieces = torch.split(relevance, sizes, self.dim)
        relevance_in = [None] * len(values)
        constant = 0.0
        for part, piece in zip(self.parts, pieces):
            if isinstance(part, int):
                relevance_in[part] = piece if relevance_in[part] is None else relevance_in[part] + piece
            else:
                constant = constant + total(piece)
        return relevance_in, Absorbed(constant=constant)

    def rule_name(self, composite=None):
        return "Split"


class ValueStep(Step):
    """A value relevance never flows through: a parameter read by get_attr, or metadata of
    the input such as x.size(0). Relevance reaching a tensor of this kind is absorbed."""

    def __init__(self, name, path, kind, inputs, function: Callable[[list], object]):
        super().__init__(name, path, kind, inputs)
        self.function = function

    def forward(self, values, state):
        return self.function(values)

    def relevance(self, values, output, relevance, state):
        raise UnsupportedLayerError(self.path, self.kind, "relevance reached a non-input value")


def _tuple(value, dims):
    if isinstance(value, (tuple, list)):
        return tuple(value)
    return (value,) * dims
