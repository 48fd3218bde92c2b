"""Linear maps with an explicit adjoint: the layers LRP rules act on.

A rule needs two things of a layer: the forward map with modified parameters
(z = W'x' + b') and the transpose of that map applied to a relevance-sized tensor
(the vector-Jacobian product). Writing the transpose explicitly (conv -> conv_transpose,
linear -> matmul) avoids re-running the forward pass under autograd for every rule, which
is what keeps the engine close to the cost of one plain gradient.

The operators hold detached copies of the parameters: the user's module is never touched.
"""

from __future__ import annotations

import abc
import math

import torch
import torch.nn.functional as F
from torch import nn

_CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}
_CONV_TRANSPOSE = {1: F.conv_transpose1d, 2: F.conv_transpose2d, 3: F.conv_transpose3d}


class LinearOperator(abc.ABC):
    """z = apply(x, weight, bias); adjoint(s, weight, input_shape) = (dz/dx)^T s."""

    #: 'dense', 'conv' or 'batchnorm': the layer kind a composite maps to a rule
    kind: str = "dense"
    weight: torch.Tensor
    bias: torch.Tensor | None

    @abc.abstractmethod
    def apply(self, x, weight, bias):
        """The layer's map with the given (possibly modified) parameters."""

    @abc.abstractmethod
    def adjoint(self, s, weight, input_shape):
        """The transpose of the map without bias, applied to s ([N, *output]): a new tensor,
        never s or a view of it (the rules scale it in place)."""

    @abc.abstractmethod
    def bias_like_output(self, bias, output_shape):
        """Broadcast a bias vector to the layer's output shape (for the ledger)."""

    def bias_dot(self, s, bias):
        """sum_j s_j b_j per row of s: the bias's share of the relevance (for the ledger).
        Channel-wise biases: sum s over positions first, then one small product."""
        if s.dim() == 2 or isinstance(self, DenseOperator):
            return (s.reshape(s.shape[0], -1, bias.shape[0]).sum(1) @ bias)
        return s.reshape(s.shape[0], bias.shape[0], -1).sum(-1) @ bias

    def to(self, dtype=None, device=None) -> LinearOperator:
        new = object.__new__(type(self))
        new.__dict__.update(self.__dict__)
        new.weight = self.weight.to(dtype=dtype, device=device)
        new.bias = None if self.bias is None else self.bias.to(dtype=dtype, device=device)
        return new


class DenseOperator(LinearOperator):
    """nn.Linear: weight [out, in] acting on the last dimension."""

    kind = "dense"

    def __init__(self, weight, bias):
        self.weight = weight.detach().clone()
        self.bias = None if bias is None else bias.detach().clone()

    def apply(self, x, weight, bias):
        return F.linear(x, weight, bias)

    def adjoint(self, s, weight, input_shape):
        return s.matmul(weight)

    def bias_like_output(self, bias, output_shape):
        return bias.expand(output_shape[1:])


class ConvOperator(LinearOperator):
    """nn.ConvNd with zero padding; weight [out, in/groups, *kernel]."""

    kind = "conv"

    def __init__(self, module: nn.modules.conv._ConvNd, weight=None, bias=None):
        self.dims = module.weight.dim() - 2
        self.weight = (module.weight if weight is None else weight).detach().clone()
        b = module.bias if bias is None else bias
        self.bias = None if b is None else b.detach().clone()
        self.stride = module.stride
        self.dilation = module.dilation
        self.groups = module.groups
        self.padding = module.padding
        # The explicit input-gradient needs symmetric integer padding; 'same' with an odd
        # total pad is symmetric, anything else takes the (slower) autograd adjoint.
        self.explicit_padding = _explicit_padding(module)

    def apply(self, x, weight, bias):
        return _CONV[self.dims](x, weight, bias, self.stride, self.padding, self.dilation, self.groups)

    def adjoint(self, s, weight, input_shape):
        shape = (s.shape[0],) + tuple(input_shape[1:])
        if self.explicit_padding is not None:
            # torch.nn.grad.convNd_input passes an expanded 1-element tensor as the input, whose
            # zero strides steer the backend off its fast kernels (radar N=3: the 1x1 output
            # convolution's transpose took 18.7 ms against 4.6 ms); an uninitialized contiguous
            # tensor of the input's shape costs nothing and keeps them
            layout = torch.empty(shape, dtype=s.dtype, device=s.device)
            return torch.ops.aten.convolution_backward(
                s, layout, weight, None, self.stride, self.explicit_padding, self.dilation, False,
                [0] * self.dims, self.groups, (True, False, False))[0]
        return _autograd_adjoint(lambda t: self.apply(t, weight, None), s, shape)

    def bias_like_output(self, bias, output_shape):
        return bias.view((-1,) + (1,) * self.dims).expand(output_shape[1:])


class ConvTransposeOperator(LinearOperator):
    """nn.ConvTransposeNd; weight [in, out/groups, *kernel]. Its adjoint is a convolution."""

    kind = "conv"

    def __init__(self, module: nn.modules.conv._ConvTransposeNd, weight=None, bias=None):
        self.dims = module.weight.dim() - 2
        self.weight = (module.weight if weight is None else weight).detach().clone()
        b = module.bias if bias is None else bias
        self.bias = None if b is None else b.detach().clone()
        self.stride = module.stride
        self.padding = module.padding
        self.output_padding = module.output_padding
        self.dilation = module.dilation
        self.groups = module.groups

    def apply(self, x, weight, bias):
        return _CONV_TRANSPOSE[self.dims](
            x, weight, bias, self.stride, self.padding, self.output_padding, self.groups,
            self.dilation,
        )

    def adjoint(self, s, weight, input_shape):
        return _CONV[self.dims](s, weight, None, self.stride, self.padding, self.dilation, self.groups)

    def bias_like_output(self, bias, output_shape):
        return bias.view((-1,) + (1,) * self.dims).expand(output_shape[1:])


class AffineOperator(LinearOperator):
    """A channel-wise affine map z = scale * x + shift over dim 1: a BatchNorm that could not
    be merged into a neighbouring linear layer. 'weight' is the scale vector."""

    kind = "batchnorm"

    def __init__(self, scale, shift):
        self.weight = scale.detach().clone()
        self.bias = shift.detach().clone()

    @staticmethod
    def _view(v, ndim):
        return v.view((-1,) + (1,) * (ndim - 2))

    def apply(self, x, weight, bias):
        z = x * self._view(weight, x.dim())
        return z if bias is None else z + self._view(bias, x.dim())

    def adjoint(self, s, weight, input_shape):
        return s * self._view(weight, s.dim())

    def bias_like_output(self, bias, output_shape):
        return self._view(bias, len(output_shape)).expand(output_shape[1:])


class NormalizationOperator(LinearOperator):
    """A normalization by the sample's own statistics (LayerNorm, GroupNorm, InstanceNorm,
    RMSNorm) with its standard deviation held constant (CP-LRP, AttnLRP): linear in x,

        y_i = a_i (x_i - mean_g(x)) + b_i,   a_i = gamma_i / std_g   (RMSNorm: no mean),

    per group g of n elements (a LayerNorm row, a GroupNorm group, an InstanceNorm channel).
    Its matrix has, in row i, the diagonal entry p_i = a_i (1 - 1/n) and the off-diagonal
    entries q_i = -a_i / n (RMSNorm and running statistics: diagonal, p = a and no q). Every
    LRP rule modifies a matrix entry by entry (w+, w-, w^2, 1, w + gamma w+), which keeps this
    structure: f applied to p and q.
    So 'weight' is the stacked [p, q] ([2, B, *x]: per sample, as std is; [1, B, *x] without
    mean subtraction), and the map and
    its transpose cost two elementwise products and one sum per group:

        (W x)_i   = (p_i - q_i) x_i + q_i S_g(x),        S_g = the sum over the group,
        (W^T s)_k = (p_k - q_k) s_k + S_g(q s).
    """

    kind = "norm"

    def __init__(self, p, q, bias, groups: int | None):
        # q None: no mean subtraction (RMSNorm, InstanceNorm with running statistics), a diagonal map
        self.weight = p.unsqueeze(0) if q is None else torch.stack([p, q])
        self.bias = bias
        self.groups = groups  # None: the groups are the leading dims, normalized over the last n

    def _group_sum(self, t, n_last):
        """S_g(t) broadcast back to t's shape."""
        if self.groups is None:
            flat = t.reshape(t.shape[:t.dim() - n_last] + (-1,))
            return flat.sum(-1, keepdim=True).reshape(flat.shape[:-1] + (1,) * n_last).expand_as(t)
        flat = t.reshape(t.shape[0], self.groups, -1)
        return flat.sum(-1, keepdim=True).expand_as(flat).reshape(t.shape)

    #: for groups=None, how many trailing dims are normalized (set by the step)
    normalized_dims = 1

    def _others_sum(self, t, n_last):
        """S_g(t) - t_k, the sum over the rest of the group, computed in float64 for float32 and
        half inputs: S_g - t_k cancels where one element dominates its group (a LayerNorm after a
        residual sum), and an off-diagonal sum lost to rounding is a wrong z+ or z- under the
        positive-part rules (measured: ledger residuals of 1e-3 in float32 before, 2e-7 after)."""
        wide = t.double() if t.dtype in (torch.float32, torch.float16, torch.bfloat16) else t
        return (self._group_sum(wide, n_last) - wide).to(t.dtype)

    def apply(self, x, weight, bias):
        if weight.shape[0] == 1:
            y = weight[0] * x
        else:
            # (W x)_k = p_k x_k + q_k (S_g(x) - x_k)
            p, q = weight[0], weight[1]
            y = p * x + q * self._others_sum(x, self.normalized_dims)
        return y if bias is None else y + bias

    def adjoint(self, s, weight, input_shape):
        rows = (-1,) + tuple(weight.shape[1:])  # s is [T*B, *x]: T targets over the B samples of p and q
        if weight.shape[0] == 1:
            return (s.reshape(rows) * weight[0]).reshape(s.shape)
        # (W^T s)_k = p_k s_k + S_g(q s) - q_k s_k
        p, q = weight[0], weight[1]
        diagonal = (s.reshape(rows) * p).reshape(s.shape)
        return diagonal + self._others_sum((s.reshape(rows) * q).reshape(s.shape), self.normalized_dims)

    def bias_like_output(self, bias, output_shape):
        return bias.expand(output_shape[1:])

    def bias_dot(self, s, bias):
        return s.reshape(s.shape[0], -1) @ bias.expand(s.shape[1:]).reshape(-1)


def normalization_operator(function, arguments: dict) -> NormalizationOperator:
    """The NormalizationOperator of F.layer_norm, F.group_norm, F.rms_norm or F.instance_norm
    at its input, from the function's bound arguments (names as in torch.nn.functional).
    The statistics are computed here as torch computes them (biased variance) and held fixed."""
    x = arguments["input"]
    weight, bias = arguments.get("weight"), arguments.get("bias")
    if function in (F.layer_norm, F.rms_norm):
        shape = arguments["normalized_shape"]
        shape = (shape,) if isinstance(shape, int) else tuple(shape)
        dims = tuple(range(x.dim() - len(shape), x.dim()))
        n = math.prod(shape)
        if function is F.rms_norm:
            eps = arguments.get("eps")
            eps = torch.finfo(x.dtype).eps if eps is None else eps
            scale = torch.rsqrt(x.pow(2).mean(dims, keepdim=True) + eps)
        else:
            mean = x.mean(dims, keepdim=True)
            scale = torch.rsqrt((x - mean).pow(2).mean(dims, keepdim=True) + arguments.get("eps", 1e-5))
        a = (scale if weight is None else scale * weight).expand_as(x)
        centered = function is F.layer_norm
        op = NormalizationOperator(a * (1 - 1 / n) if centered else a, -a / n if centered else None,
                                   None if bias is None else bias.expand(x.shape[1:]), None)
        op.normalized_dims = len(shape)
        return op
    channels = x.shape[1]
    view = (1, channels) + (1,) * (x.dim() - 2)
    if function is F.instance_norm and not arguments.get("use_input_stats", True):
        # running statistics (track_running_stats in eval mode): a channel-wise affine map, no centring
        a = torch.rsqrt(arguments["running_var"] + arguments.get("eps", 1e-5))
        if weight is not None:
            a = a * weight
        shift = -arguments["running_mean"] * a
        if bias is not None:
            shift = shift + bias
        a = a.view(view).expand_as(x)
        return NormalizationOperator(a, None, shift.view(view[1:]).expand(x.shape[1:]), channels)
    groups = arguments["num_groups"] if function is F.group_norm else channels
    flat = x.reshape(x.shape[0], groups, -1)
    n = flat.shape[-1]
    mean = flat.mean(-1, keepdim=True)
    scale = torch.rsqrt((flat - mean).pow(2).mean(-1, keepdim=True) + arguments.get("eps", 1e-5))
    a = scale.expand_as(flat).reshape(x.shape)
    if weight is not None:
        a = a * weight.view(view)
    return NormalizationOperator(a * (1 - 1 / n), -a / n,
                                 None if bias is None else bias.view(view[1:]).expand(x.shape[1:]), groups)


def _explicit_padding(module):
    padding = module.padding
    if module.padding_mode != "zeros":
        return None
    if isinstance(padding, str):
        if padding == "valid":
            return (0,) * len(module.kernel_size)
        totals = [d * (k - 1) for d, k in zip(module.dilation, module.kernel_size)]
        if any(t % 2 for t in totals):
            return None
        return tuple(t // 2 for t in totals)
    return tuple(padding)


def _autograd_adjoint(linear_map, s, input_shape):
    """(d linear_map / dx)^T s for a linear map, by autograd at x = 0."""
    with torch.enable_grad():
        probe = torch.zeros(input_shape, dtype=s.dtype, device=s.device, requires_grad=True)
        (grad,) = torch.autograd.grad(linear_map(probe), probe, s)
    return grad


def parameter_copy(t, dtype=None):
    """A detached copy of a parameter or buffer, in `dtype` (None: its own) before any
    arithmetic on it, so that folding and merging happen in the dtype explained."""
    if t is None:
        return None
    t = t.detach()
    if dtype is not None and t.dtype.is_floating_point:
        t = t.to(dtype)
    return t.clone()


def batchnorm_scale_shift(module: nn.modules.batchnorm._BatchNorm, dtype=None):
    """BatchNorm in evaluation mode as scale * x + shift (running statistics), computed in
    `dtype` (None: the module's own)."""
    if module.running_mean is None or module.running_var is None:
        raise ValueError("BatchNorm without running statistics (track_running_stats=False)")
    mean, var = parameter_copy(module.running_mean, dtype), parameter_copy(module.running_var, dtype)
    scale = torch.rsqrt(var + module.eps)
    if module.weight is not None:
        scale = scale * parameter_copy(module.weight, dtype)
    shift = -mean * scale
    if module.bias is not None:
        shift = shift + parameter_copy(module.bias, dtype)
    return scale, shift


def operator_for(module: nn.Module, dtype=None) -> LinearOperator | None:
    """The operator of a supported linear module (parameters copied in `dtype`), or None."""
    if not isinstance(module, (nn.Linear, nn.modules.conv._ConvNd)):
        return None
    weight, bias = parameter_copy(module.weight, dtype), parameter_copy(module.bias, dtype)
    if isinstance(module, nn.Linear):
        return DenseOperator(weight, bias)
    if isinstance(module, nn.modules.conv._ConvTransposeNd):
        if module.padding_mode != "zeros":
            return None
        return ConvTransposeOperator(module, weight, bias)
    if isinstance(module, nn.modules.conv._ConvNd):
        if module.padding_mode != "zeros":
            return None
        return ConvOperator(module, weight, bias)
    return None
