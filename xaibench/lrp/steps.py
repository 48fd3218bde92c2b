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
from .rules import Absorbed, per_target, per_target_divide, row_dot, total
from .stabilizer import stabilize

Tensor = torch.Tensor


class Step(abc.ABC):
    """One node of the graph."""

    #: computes a gate: 2 a squashing one (sigmoid, tanh, softmax), 1 SiLU or GELU, 0 none (ProductStep)
    gate = 0
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

    def relevance_slots(self) -> tuple:
        """The input slots relevance can be passed to (all the rules this step may use):
        the graph checks that every step relevance can reach has a rule."""
        return (0,)

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
    """Elementwise activations and identities: relevance passes through unchanged.

    recompute: an elementwise activation, cheap to recompute from its input, so a lean forward
    pass keeps its input only (Graph.forward(lean=True))."""

    def __init__(self, name, path, kind, inputs, function, transparent=False, recompute=False):
        super().__init__(name, path, kind, inputs, function)
        self.transparent = transparent
        self.recompute = recompute

    def relevance(self, values, output, relevance, state):
        return self._first_only(relevance, values), Absorbed()

    def rule_name(self, composite=None):
        return "Pass"


def sum_to(relevance: Tensor, factor: Tensor) -> Tensor:
    """relevance [T*B, *out] summed over the dims a factor [B, *f] was broadcast along, to
    [T*B, *f]: the transpose of the broadcast (every copy's relevance goes back to its source)."""
    shape = (relevance.shape[0],) + tuple(factor.shape[1:])
    if tuple(relevance.shape) == shape:
        return relevance
    return relevance.sum_to_size(shape)


class ScaleStep(PassStep):
    """Multiplication by a constant (a number, a size read from a tensor, a parameter such as
    ConvNeXt's layer scale) or division by anything held constant: z_i = c_i x_i, one input
    per output, so the z-rule passes the relevance through unchanged (summed back over the
    dims a broadcast added). `slot` is the input scaled; with divisor_held, the divisor
    depends on the input too but is held constant (the CP-LRP convention for a standard
    deviation written out by hand, (x - mean) / std): it gets no relevance."""

    def __init__(self, name, path, kind, inputs, function, slot: int = 0, divisor_held: bool = False):
        super().__init__(name, path, kind, inputs, function)
        self.slot = slot
        self.divisor_held = divisor_held

    def relevance(self, values, output, relevance, state):
        relevance_in = [None] * len(values)
        relevance_in[self.slot] = sum_to(relevance, values[self.slot])
        return relevance_in, Absorbed()

    def relevance_slots(self):
        return (self.slot,)

    def rule_name(self, composite=None):
        return "Pass (divisor held constant)" if self.divisor_held else "Pass (constant factor)"


class ProductStep(Step):
    """The elementwise product of two tensors that both depend on the input (a
    squeeze-excitation or GLU gate times its features, x * x).

    product='uniform' (the default; AttnLRP's uniform rule): each factor gets half of the
    relevance, R_a = R_b = R / 2 (summed back over broadcast dims), so nothing is absorbed and
    no factor is preferred. product='gate_constant' (CP-LRP's gated-MLP convention): the gate,
    the factor computed by a gating nonlinearity (sigmoid, hard sigmoid, tanh, softmax, SiLU,
    GELU; a squashing gate wins over SiLU/GELU features; `gate_slot` is its slot), is held
    constant and the other factor gets all the relevance.
    """

    def __init__(self, name, path, kind, inputs, slots: tuple[int, int], gate: int | None, gate_reason: str):
        super().__init__(name, path, kind, inputs)
        self.slots = slots
        self.gate_slot = gate       # the slot of the gate, None where it cannot be told
        self.gate_reason = gate_reason

    def forward(self, values, state):
        return values[self.slots[0]] * values[self.slots[1]]

    def relevance(self, values, output, relevance, state):
        mode = state["composite"].product
        relevance_in = [None] * len(values)
        if mode == "uniform":
            half = relevance * 0.5
            for slot in self.slots:
                share = sum_to(half, values[slot])
                relevance_in[slot] = share if relevance_in[slot] is None else relevance_in[slot] + share
            return relevance_in, Absorbed()
        if self.gate_slot is None:
            raise UnsupportedLayerError(
                self.path, self.kind, f"product='gate_constant' needs to know which factor is the gate, but "
                f"{self.gate_reason}; use product='uniform' (half of the relevance to each factor)")
        gated = next(slot for slot in self.slots if slot != self.gate_slot)
        relevance_in[gated] = sum_to(relevance, values[gated])
        return relevance_in, Absorbed()

    def relevance_slots(self):
        return self.slots

    def rule_name(self, composite=None):
        if composite is None:
            return "Product"
        return "Product(uniform: half to each factor)" if composite.product == "uniform" else \
            "Product(gate held constant)"


def _per_target_matmul(s: Tensor, factor: Tensor, factor_on_left: bool) -> Tensor:
    """s @ factor (or factor @ s) with s [T*B, ...] and factor [B, ...]: each sample's factor
    serves its T targets (stacked target-major)."""
    rows, per = s.shape[0], factor.shape[0]
    stacked = s.view((rows // per, per) + tuple(s.shape[1:]))
    out = factor.unsqueeze(0).matmul(stacked) if factor_on_left else stacked.matmul(factor.unsqueeze(0))
    return out.reshape((rows,) + tuple(out.shape[2:]))


class MatmulStep(Step):
    """A matrix product a @ b of two tensors that both depend on the input (attention's
    Q K^T and A V). Each output z_ij = sum_k a_ik b_kj is a sum of terms: relevance goes to
    the terms in proportion to them (the z-rule with the engine's fixed stabilizer, as sums
    and pooling; its share is booked), and then

    - attention='cp' (CP-LRP, the default) where one factor is the attention weights (a
      softmax over the last dim, through reshapes and dropout; `weights_slot`): the weights
      are held constant, so the product is linear in the other factor, which gets all;
    - otherwise (attention='attnlrp', or no attention weights): the uniform rule, half of
      each term's relevance to each factor (AttnLRP, Equation 7).
    """

    def __init__(self, name, path, kind, inputs, slots: tuple[int, int], weights_slot: int | None):
        super().__init__(name, path, kind, inputs)
        self.slots = slots
        self.weights_slot = weights_slot

    def forward(self, values, state):
        return torch.matmul(values[self.slots[0]], values[self.slots[1]])

    def _held(self, composite):
        return composite.attention == "cp" and self.weights_slot is not None

    def relevance(self, values, output, relevance, state):
        composite = state["composite"]
        a, b = values[self.slots[0]], values[self.slots[1]]
        if a.dim() < 2 or b.dim() < 2:
            raise UnsupportedLayerError(self.path, self.kind, "a matrix-vector product (both factors need 2 dims)")
        denominator, shift = stabilize(output, composite.norm_stabilizer)
        s = per_target_divide(relevance, denominator)
        relevance_in = [None] * len(values)
        held = self._held(composite)
        share = 1.0 if held else 0.5
        if a.dim() != s.dim() or b.dim() != s.dim():
            raise UnsupportedLayerError(self.path, self.kind, "a factor without the batch dimension")
        if not (held and self.weights_slot == self.slots[0]):
            # R_a = share * a * (s @ b^T), summed back over the dims a was broadcast along
            r_a = per_target(a, sum_to(_per_target_matmul(s, b.transpose(-2, -1), False), a))
            relevance_in[self.slots[0]] = r_a * share
        if not (held and self.weights_slot == self.slots[1]):
            # R_b = share * b * (a^T @ s)
            r_b = per_target(b, sum_to(_per_target_matmul(s, a.transpose(-2, -1), True), b)) * share
            slot = self.slots[1]
            relevance_in[slot] = r_b if relevance_in[slot] is None else relevance_in[slot] + r_b
        return relevance_in, Absorbed(stabilizer=row_dot(s, shift))

    def relevance_slots(self):
        return self.slots

    def rule_name(self, composite=None):
        if composite is None:
            return "Matmul"
        if self._held(composite):
            return "Matmul(CP-LRP: attention weights held constant)"
        return f"Matmul(uniform: half to each factor, stabilizer={composite.norm_stabilizer:g})"


class SoftmaxStep(PassStep):
    """A softmax inside the network, over dimension `dim`.

    attention='attnlrp': AttnLRP's softmax rule (Achtibat et al. 2024, Proposition 3.1), the
    softmax linearized at its input x: R_in_i = x_i (R_i - s_i sum_j R_j). The rest is the
    linearization's bias, sum_j R_j (1 - x_j + sum_k s_k x_k), booked as absorbed (computed
    from its own terms, so a wrong rule shows in the ledger). Entries masked to -inf (s = 0)
    get none. attention='cp': relevance must not reach a softmax (CP-LRP holds attention
    weights constant in the product they feed); if it does, it is refused, naming it."""

    def __init__(self, name, path, kind, inputs, function, dim: int):
        super().__init__(name, path, kind, inputs, function)
        self.dim = dim

    def relevance(self, values, output, relevance, state):
        if state["composite"].attention != "attnlrp":
            raise UnsupportedLayerError(
                self.path, self.kind, "relevance reached a softmax inside the network: with attention='cp' "
                "(CP-LRP) a softmax is supported as the attention weights of a matrix product, held constant; "
                "attention='attnlrp' gives it AttnLRP's softmax rule")
        x = values[0]
        x = torch.where(torch.isfinite(x), x, torch.zeros_like(x))
        dim = self.dim % x.dim()
        shape = (-1,) + tuple(x.shape)
        r = relevance.view(shape)
        r_sum = r.sum(dim + 1, keepdim=True)
        relevance_in = (x * (r - output * r_sum)).view(relevance.shape)
        mean = (output * x).sum(dim, keepdim=True)
        bias = total((r * (1 - x + mean)).view(relevance.shape))
        return self._first_only(relevance_in, values), Absorbed(bias=bias)

    def rule_name(self, composite=None):
        if composite is not None and composite.attention == "attnlrp":
            return "Softmax(AttnLRP: linearized, bias absorbed)"
        return "Softmax"


class MaskedFillStep(UnaryStep):
    """x.masked_fill(mask, value) with a constant mask (an attention mask): the kept entries
    pass their relevance back; what the filled entries hold is a constant's, booked."""

    transparent = True

    def relevance(self, values, output, relevance, state):
        mask = values[1]
        if not torch.is_tensor(mask):
            mask = torch.as_tensor(mask, device=relevance.device)
        mask = mask.expand(values[0].shape)
        r = relevance.view((-1,) + tuple(values[0].shape))
        kept = r.masked_fill(mask, 0)
        on_filled = total((r - kept).view(relevance.shape))
        relevance_in = [kept.view(relevance.shape)] + [None] * (len(values) - 1)
        return relevance_in, Absorbed(constant=on_filled)

    def rule_name(self, composite=None):
        return "Select (masked entries are constants)"


class NormalizationStep(Step):
    """LayerNorm, GroupNorm, InstanceNorm and RMSNorm: normalized by the sample's own
    statistics. With the standard deviation held constant the layer is linear in its input
    (operators.NormalizationOperator), and the composite's 'norm' rule (the one it gives
    BatchNorm unless it names one) redistributes through the mean subtraction and the
    affine part; the ledger books the bias's and the stabilizer's shares.

    function(values) is the layer as torch computes it; make_operator(values) builds the
    operator at these values (the statistics are the sample's)."""

    def __init__(self, name, path, kind, inputs, function, make_operator):
        super().__init__(name, path, kind, inputs)
        self.function = function
        self.make_operator = make_operator

    def forward(self, values, state):
        return self.function(values)

    def relevance(self, values, output, relevance, state):
        op = self.make_operator(values)
        rule = state["composite"].rule_for("norm", False)
        x = values[0]
        # z from the operator itself (equal to torch's output up to rounding), so that the
        # rule's terms and the ledger's shares come from one and the same linear map
        z = op.apply(x, op.weight, op.bias)
        relevance_in, absorbed = rule.relevance(op, x, z, relevance, None)
        return self._first_only(relevance_in, values), absorbed

    def rule_name(self, composite=None):
        if composite is None:
            return "Norm (std held constant)"
        return f"{composite.rule_for('norm', False)!r} (std held constant)"


class OpaqueStep(UnaryStep):
    """An operation without a relevance rule (torch.sin, a comparison, torch.arange, ...).
    It may compute constants (positional codes from sizes) or a branch relevance never
    reaches (a standard deviation held constant); the graph refuses it, naming it, wherever
    relevance could reach it."""

    def __init__(self, name, path, kind, inputs, function, reason=""):
        super().__init__(name, path, kind, inputs, function)
        self.reason = reason

    def relevance(self, values, output, relevance, state):
        raise UnsupportedLayerError(self.path, self.kind, self.reason)

    def relevance_slots(self):
        return ()


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


class AdaptiveMaxPoolStep(MaxPoolStep):
    """Adaptive max pooling: windows start_j = floor(j L / O), end_j = ceil((j + 1) L / O) per
    dim (they may overlap and differ in size), with the max-pool rules."""

    def __init__(self, name, path, kind, inputs, dims, output_size):
        Step.__init__(self, name, path, kind, inputs)
        self.dims = dims
        self.output_size = _tuple(output_size, dims)
        self.dilation = (1,) * dims

    def _sizes(self, x):
        return tuple(int(x.shape[2 + d]) if o is None else int(o) for d, o in enumerate(self.output_size))

    def forward(self, values, state):
        pool = {1: F.adaptive_max_pool1d, 2: F.adaptive_max_pool2d, 3: F.adaptive_max_pool3d}[self.dims]
        output, indices = pool(values[0], self._sizes(values[0]), return_indices=True)
        state[("indices", self.name)] = indices
        return output

    def _window_sum(self, x):
        sizes = self._sizes(x)
        pool = {1: F.adaptive_avg_pool1d, 2: F.adaptive_avg_pool2d, 3: F.adaptive_avg_pool3d}[self.dims]
        counts = None
        for d, out in enumerate(sizes):
            length = x.shape[2 + d]
            count = torch.tensor([math.ceil((j + 1) * length / out) - (j * length) // out for j in range(out)],
                                 dtype=x.dtype, device=x.device)
            view = [1] * self.dims
            view[d] = out
            count = count.view(view)
            counts = count if counts is None else counts * count
        return pool(x, sizes) * counts


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
            if operand.dim() == output.dim() and operand.shape[0] == output.shape[0]:
                share = sum_to(share, operand)  # a broadcast operand gets back its own shape
            if isinstance(slot, int):
                relevance_in[slot] = share if relevance_in[slot] is None else relevance_in[slot] + share
            else:
                constant = constant + total(share)
        return relevance_in, Absorbed(stabilizer=total(per_target(shift, s)), constant=constant)

    def rule_name(self, composite=None):
        return "Norm" if composite is None else f"Norm(stabilizer={composite.norm_stabilizer:g})"

    def relevance_slots(self):
        return tuple(slot for _sign, slot in self.operands if isinstance(slot, int))


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

    def relevance_slots(self):
        return tuple(p for p in self.parts if isinstance(p, int))


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

    def relevance_slots(self):
        return ()


def _tuple(value, dims):
    if isinstance(value, (tuple, list)):
        return tuple(value)
    return (value,) * dims
