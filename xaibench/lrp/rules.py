"""LRP rules for linear layers, each with an exact account of what it does not pass on.

Every rule maps the relevance R at a layer's output to relevance at its input and reports
what it absorbed, split into
  bias        the share of the biases (sum_j s_j b_j),
  stabilizer  the share swallowed by the stabilizer shift (sum_j s_j * shift_j),
  dropped     relevance no group of the rule passes on (gamma at z = 0).
These are computed from the rule's own terms, not as a difference of sums, so
sum(R_in) + absorbed = sum(R_out) is a real check of the implementation.

All rules are written as groups of "streams" (after zennit's formulation): a stream is a
modified input x' with modified parameters (W', b'); a group sums its streams into one
denominator and distributes c * R / denominator back through every stream:

    d_g    = sum_s sign_s (W'_s x'_s + b'_s)
    s_g    = c_g * mask_g * R / stabilize(d_g)
    R_in  += sum_s sign_s * x'_s * (W'_s^T s_g)

Shapes: x [B, *in] and z [B, *out] are per sample; R [T*B, *out] carries T targets
stacked target-major, so one modified forward pass serves every target.
"""

from __future__ import annotations

import abc
from collections.abc import Callable
from dataclasses import dataclass

import torch

from .operators import LinearOperator
from .stabilizer import stabilize

Tensor = torch.Tensor

DEFAULT_STABILIZER = 1e-6
DEFAULT_EPSILON = 0.1
DEFAULT_GAMMA = 0.25


def per_target(factor: Tensor, relevance: Tensor) -> Tensor:
    """factor [B, ...] * relevance [T*B, ...], broadcast over the T targets."""
    return (relevance.view((-1,) + tuple(factor.shape)) * factor).view(relevance.shape)


def per_target_divide(relevance: Tensor, denominator: Tensor) -> Tensor:
    """relevance [T*B, ...] / denominator [B, ...], broadcast over the T targets."""
    return (relevance.view((-1,) + tuple(denominator.shape)) / denominator).view(relevance.shape)


def per_target_(relevance: Tensor, factor: Tensor) -> Tensor:
    """per_target in place: relevance [T*B, ...] *= factor [B, ...]. Only for a relevance
    tensor the caller has just made (a transposed layer's output), never one it was given."""
    relevance.view((-1,) + tuple(factor.shape)).mul_(factor)
    return relevance


def row_dot(relevance: Tensor, factor: Tensor) -> Tensor:
    """sum over all but the first dimension of relevance [T*B, ...] * factor [B, ...], as a
    batched dot product (no full-size temporary)."""
    rows, per = relevance.shape[0], factor.shape[0]
    stacked = relevance.reshape(rows // per, per, -1)
    flat = factor.reshape(per, -1)
    if per > 64 or flat.shape[1] <= 65536:
        # many samples or short rows: one fused kernel beats a loop of small products (ENSO's
        # dense layers, 64 rows of 8: 0.004 ms against 0.26 ms for the loop)
        return torch.linalg.vecdot(stacked, flat.unsqueeze(0)).reshape(rows)
    # one matrix-vector product (BLAS) per sample, over all its targets: measured 10x faster
    # than einsum's batched matmul for long rows
    return torch.stack([stacked[:, b] @ flat[b] for b in range(per)], 1).reshape(rows)


def total(t: Tensor) -> Tensor:
    """Sum over all but the first dimension: one number per (target, sample) row."""
    return t.reshape(t.shape[0], -1).sum(1)


@dataclass
class Absorbed:
    """Relevance a layer did not pass to its inputs, per (target, sample) row."""

    bias: Tensor | float = 0.0
    stabilizer: Tensor | float = 0.0
    dropped: Tensor | float = 0.0
    constant: Tensor | float = 0.0

    def add(self, other: Absorbed) -> Absorbed:
        return Absorbed(
            self.bias + other.bias,
            self.stabilizer + other.stabilizer,
            self.dropped + other.dropped,
            self.constant + other.constant,
        )

    def total(self):
        return self.bias + self.stabilizer + self.dropped + self.constant


@dataclass(frozen=True)
class Stream:
    """One modified copy of the layer: input x', weight W', bias b' (None: no bias)."""

    input: Callable[[Tensor], Tensor]
    weight: Callable[[Tensor], Tensor]
    bias: Callable[[Tensor], Tensor] | None
    sign: float = 1.0


@dataclass(frozen=True)
class Group:
    coefficient: float
    streams: tuple[Stream, ...]
    #: selects the output positions this group explains, from the layer's output z
    mask: Callable[[Tensor], Tensor] | None = None


def _identity(t):
    return t


def _positive(t):
    return t.clamp(min=0)


def _negative(t):
    return t.clamp(max=0)


class Rule(abc.ABC):
    """Base of all linear-layer rules: a name, a bias switch, a stabilizer."""

    name = "rule"

    def __init__(self, stabilizer: float = DEFAULT_STABILIZER, bias: bool = True):
        self.stabilizer = float(stabilizer)
        self.bias = bool(bias)

    @abc.abstractmethod
    def relevance(self, op: LinearOperator, x: Tensor, z: Tensor, relevance: Tensor, context=None):
        """Return (relevance at the input [T*B, *in], Absorbed)."""

    def __repr__(self):
        return f"{type(self).__name__}({self._params()})"

    def _params(self):
        return f"stabilizer={self.stabilizer:g}, bias={self.bias}"


class Epsilon(Rule):
    """LRP-epsilon: R_i = sum_j x_i w_ij / (z_j + eps sign z_j) R_j.

    Uses the layer output stored by the forward pass as z, so it costs one transposed
    application of the layer: the same work as a gradient.
    """

    name = "epsilon"

    def __init__(self, epsilon: float = DEFAULT_EPSILON, bias: bool = True):
        super().__init__(stabilizer=epsilon, bias=bias)

    @property
    def epsilon(self):
        return self.stabilizer

    def relevance(self, op, x, z, relevance, context=None):
        # The hot path of the engine: kept to one division, one transposed layer and one
        # product over full-size tensors; the ledger's shares are reductions (dot products
        # per row), which read the tensors without writing new ones.
        has_bias = op.bias is not None
        if has_bias and not self.bias:
            z = z - op.bias_like_output(op.bias, z.shape)
        denominator, shift = stabilize(z, self.stabilizer)
        if relevance.shape == denominator.shape:   # one target: s takes the denominator's memory (made here)
            s = torch.div(relevance, denominator, out=denominator)
        else:
            s = per_target_divide(relevance, denominator)
        del denominator
        relevance_in = per_target_(op.adjoint(s, op.weight, x.shape), x)  # the adjoint's output is new
        absorbed = Absorbed(stabilizer=row_dot(s, shift))
        if has_bias and self.bias:
            absorbed.bias = op.bias_dot(s, op.bias)
        return relevance_in, absorbed

    def _params(self):
        return f"epsilon={self.stabilizer:g}, bias={self.bias}"


class Z(Epsilon):
    """LRP-0: epsilon reduced to a stabilizer (default 1e-6)."""

    name = "z"

    def __init__(self, stabilizer: float = DEFAULT_STABILIZER, bias: bool = True):
        super().__init__(epsilon=stabilizer, bias=bias)


class StreamRule(Rule):
    """A rule given as groups of streams (see the module docstring)."""

    @abc.abstractmethod
    def groups(self, context) -> tuple[Group, ...]:
        """The rule's groups of streams; context holds per-call data such as bounds."""

    def relevance(self, op, x, z, relevance, context=None):
        # Every full-size tensor here is one this call made (a modified input, a layer output, a
        # transposed layer's output), so sums and products go in place: each fresh tensor is
        # memory the allocator faults in, which cost more than the arithmetic (lrp.alpha2beta1 on
        # ENSO's 64 x 16200 input: 16x one gradient with a new tensor per operation).
        relevance_in = None
        absorbed = Absorbed()
        covered = 0.0
        modified = {}  # stream input function -> (x', whether any of it is non-zero): once per call
        use_bias = self.bias and op.bias is not None
        for group in self.groups(context):
            denominator = None
            terms = []
            for stream in group.streams:
                if stream.input not in modified:
                    x_mod = stream.input(x)
                    modified[stream.input] = (x_mod, bool(torch.any(x_mod)))
                x_mod, nonzero = modified[stream.input]
                bias = stream.bias(op.bias) if stream.bias is not None and use_bias else None
                if bias is None and not nonzero:
                    continue  # e.g. the negative part of a post-ReLU input: contributes nothing
                weight = stream.weight(op.weight)
                out = op.apply(x_mod, weight, bias)  # a new tensor
                if denominator is None:
                    denominator = out if stream.sign > 0 else out.neg_()
                else:
                    denominator.add_(out) if stream.sign > 0 else denominator.sub_(out)
                terms.append((stream.sign, x_mod, weight, bias))
            if denominator is None:
                denominator = torch.zeros_like(z)
            denominator, shift = stabilize(denominator, self.stabilizer)
            s = per_target_divide(relevance, denominator)  # c_g * mask_g * R / d_g, made here
            if group.coefficient != 1.0:
                s.mul_(group.coefficient)
            if group.mask is not None:
                mask = group.mask(z).to(z.dtype)
                per_target_(s, mask)
                covered = covered + group.coefficient * mask
            else:
                covered = covered + group.coefficient
            for sign, x_mod, weight, bias in terms:
                term = per_target_(op.adjoint(s, weight, x.shape), x_mod)
                if relevance_in is None:
                    relevance_in = term if sign > 0 else term.neg_()
                else:
                    relevance_in.add_(term) if sign > 0 else relevance_in.sub_(term)
                if bias is not None:
                    absorbed.bias = absorbed.bias + sign * op.bias_dot(s, bias)
            absorbed.stabilizer = absorbed.stabilizer + row_dot(s, shift)
        if relevance_in is None:
            relevance_in = torch.zeros((relevance.shape[0],) + tuple(x.shape[1:]), dtype=relevance.dtype,
                                       device=relevance.device)
        if not (isinstance(covered, float) and covered == 1.0):
            leftover = 1.0 - covered
            if isinstance(leftover, float):
                leftover = torch.full_like(z, leftover)
            absorbed.dropped = row_dot(relevance, leftover)
        return relevance_in, absorbed


class AlphaBeta(StreamRule):
    """LRP-alpha-beta: alpha times the positive, minus beta times the negative contributions,
    each normalized by its own total; alpha - beta = 1. The positive bias joins the positive
    side and the negative bias the negative side (as zennit and innvestigate)."""

    name = "alpha_beta"

    def __init__(self, alpha: float = 1.0, beta: float = 0.0, stabilizer=DEFAULT_STABILIZER, bias=True):
        if alpha < 0 or beta < 0:
            raise ValueError(f"alpha and beta must be non-negative, got alpha={alpha}, beta={beta}")
        if abs((alpha - beta) - 1.0) > 1e-12:
            raise ValueError(f"alpha - beta must equal 1, got alpha={alpha}, beta={beta}")
        super().__init__(stabilizer=stabilizer, bias=bias)
        self.alpha = float(alpha)
        self.beta = float(beta)

    def groups(self, context):
        positive = Group(self.alpha, (
            Stream(_positive, _positive, _positive),
            Stream(_negative, _negative, None),
        ))
        if self.beta == 0:
            return (positive,)
        negative = Group(-self.beta, (
            Stream(_positive, _negative, _negative),
            Stream(_negative, _positive, None),
        ))
        return positive, negative

    def _params(self):
        return f"alpha={self.alpha:g}, beta={self.beta:g}, " + super()._params()


class ZPlus(AlphaBeta):
    """LRP-z+: the positive contributions only (alpha = 1, beta = 0), for any input sign."""

    name = "zplus"

    def __init__(self, stabilizer=DEFAULT_STABILIZER, bias=True):
        super().__init__(1.0, 0.0, stabilizer=stabilizer, bias=bias)


class Gamma(StreamRule):
    """LRP-gamma, generalized to inputs of both signs (zennit 0.5 formulation): for z_j > 0
    the positive contributions are boosted by (1 + gamma), for z_j < 0 the negative ones.
    Relevance at outputs with z_j = 0 exactly is booked as dropped."""

    name = "gamma"

    def __init__(self, gamma: float = DEFAULT_GAMMA, stabilizer=DEFAULT_STABILIZER, bias=True):
        if gamma < 0:
            raise ValueError(f"gamma must be non-negative, got {gamma}")
        super().__init__(stabilizer=stabilizer, bias=bias)
        self.gamma = float(gamma)

    def groups(self, context):
        g = self.gamma

        def boost_positive(t):
            return t + g * t.clamp(min=0)

        def boost_negative(t):
            return t + g * t.clamp(max=0)

        positive = Group(1.0, (
            Stream(_positive, boost_positive, boost_positive),
            Stream(_negative, boost_negative, None),
        ), mask=lambda z: z > 0)
        negative = Group(1.0, (
            Stream(_positive, boost_negative, boost_negative),
            Stream(_negative, boost_positive, None),
        ), mask=lambda z: z < 0)
        return positive, negative

    def _params(self):
        return f"gamma={self.gamma:g}, " + super()._params()


class ZBox(StreamRule):
    """LRP-z^B for a bounded input low <= x <= high (Montavon et al. 2017):
    R_i = sum_j (x_i w_ij - l_i w+_ij - h_i w-_ij) / sum_i(...) R_j.

    As in the deep-Taylor derivation the denominator has no bias (in zennit the bias terms
    of its three streams cancel to the same result), so the bias switch has no effect.
    The bounds are given in the model-input space; the engine maps them to the layer's
    input and passes them in the context as (low, high) tensors shaped like x.
    """

    name = "zbox"

    def __init__(self, low=None, high=None, stabilizer=DEFAULT_STABILIZER, bias=True):
        super().__init__(stabilizer=stabilizer, bias=bias)
        self.low = low
        self.high = high

    def groups(self, context):
        if context is None or context.get("low") is None:
            raise ValueError("the z^B rule needs the input bounds low and high")
        low, high = context["low"], context["high"]
        return (Group(1.0, (
            Stream(_identity, _identity, None),
            Stream(lambda x: low.expand_as(x), _positive, None, sign=-1.0),
            Stream(lambda x: high.expand_as(x), _negative, None, sign=-1.0),
        )),)


def _ones(t):
    return torch.ones_like(t)


def _square(t):
    return t * t


class WSquare(StreamRule):
    """LRP-w^2: R_i = sum_j w_ij^2 / sum_i w_ij^2 R_j, independent of the input.
    With bias=True the squared bias joins the denominator (as zennit)."""

    name = "wsquare"

    def groups(self, context):
        return (Group(1.0, (Stream(_ones, _square, _square),)),)


class Flat(StreamRule):
    """LRP-flat: relevance spread uniformly over each output's receptive field. Bias-free."""

    name = "flat"

    def groups(self, context):
        return (Group(1.0, (Stream(_ones, _ones, None),)),)


RULES = {
    "z": Z,
    "epsilon": Epsilon,
    "gamma": Gamma,
    "alpha_beta": AlphaBeta,
    "zplus": ZPlus,
    "zbox": ZBox,
    "wsquare": WSquare,
    "flat": Flat,
}
