"""Layer-type groups, defined once for the whole library (imports only torch).

Two kinds of group, and callers keep to the one they mean:

- dicts class -> spatial rank, for exact-type lookups (`type(module) in CONV`, `CONV[type(module)]`):
  a subclass is NOT a member. Iterate or `tuple(...)` them for an isinstance test.
- tuples (or one base class) for `isinstance(module, ...)`: subclasses are members.

By rank (dict class -> number of spatial dimensions):
  CONV              Conv1d/2d/3d: keras_export (layers it mirrors), receptive_field (windows).
  CONV_TRANSPOSED   ConvTranspose1d/2d/3d: receptive_field.
  MAXPOOL, AVGPOOL  max / average pooling: lrp.graph (MaxPoolStep dims, Norm-rule modules),
                    keras_export (pool layers), receptive_field (windows).
  LPPOOL            LPPool1d/2d (windows in receptive_field; not LPPool3d).
  POOL              MAXPOOL | AVGPOOL | LPPOOL, every windowed pool: receptive_field.
  ADAPTIVE_AVGPOOL  AdaptiveAvgPool1d/2d/3d: lrp.graph (Norm rule), keras_export.
  ADAPTIVE_MAXPOOL  AdaptiveMaxPool1d/2d/3d; ADAPTIVE_POOL = both: receptive_field.
  MAXPOOL_FUNCTIONS F.max_pool1d/2d/3d -> rank, the functional max pools: lrp.graph.

For isinstance:
  CONV_ANY          nn.modules.conv._ConvNd, every convolution, transposed ones included:
                    backends.table (bias, explicit padding checks).
  CONV_OR_LINEAR    (nn.Linear, CONV_ANY), the layers with a weight the LRP rules apply to:
                    lrp.graph (padding_mode error), backends.table (bias check).
  BATCHNORM         nn.modules.batchnorm._BatchNorm, every batch norm (SyncBatchNorm, lazy ones):
                    lrp.graph (merging), backends.table (BatchNorm known difference).
  BATCHNORM_ND      (BatchNorm1d, BatchNorm2d, BatchNorm3d), the concrete ones: keras_export.
  INSTANCENORM      nn.modules.instancenorm._InstanceNorm: receptive_field (pointwise).
  DROPOUT           Dropout, Dropout1d/2d/3d, AlphaDropout.
  IDENTITY          nn.Identity and DROPOUT, identities in eval mode: lrp.graph (transparent
                    pass-through), keras_export (skipped).
  SOFTMAX_SIGMOID   Softmax, LogSoftmax, Sigmoid: the final layers keras_export strips.
  FINAL             SOFTMAX_SIGMOID and Softmin, the final squashing lrp.graph passes and strips.
  ACTIVATIONS       pointwise nonlinearities (ReLU, LeakyReLU, ELU, GELU, SiLU, Tanh, Sigmoid,
                    Softplus, ReLU6, Hardtanh, PReLU, Hardswish, Hardsigmoid, Mish, SELU, CELU,
                    RReLU, Softsign): the identity rule in lrp.graph; ACTIVATION_FUNCTIONS and
                    ACTIVATION_METHODS are the same as functions and Tensor methods.
  SAMPLE_NORMS      LayerNorm, GroupNorm, RMSNorm (and SAMPLE_NORM_FUNCTIONS, with instance_norm):
                    normalized by each sample's own statistics (lrp.graph's NormalizationStep).
  GATES             the nonlinearities whose output gates a product (GATE_FUNCTIONS as functions):
                    the "gate as constant" product rule finds the gate by them.
  POINTWISE         ACTIVATIONS, IDENTITY, BATCHNORM, INSTANCENORM: modules acting per position,
                    for receptive fields.
  AVERAGING         AVGPOOL, ADAPTIVE_AVGPOOL and nn.Upsample, parameter-free linear modules
                    (the Norm rule in lrp.graph).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

# ---------------------------------------------------------------------------------------------
# By rank: exact type -> spatial dimensions

CONV = {nn.Conv1d: 1, nn.Conv2d: 2, nn.Conv3d: 3}
CONV_TRANSPOSED = {nn.ConvTranspose1d: 1, nn.ConvTranspose2d: 2, nn.ConvTranspose3d: 3}
MAXPOOL = {nn.MaxPool1d: 1, nn.MaxPool2d: 2, nn.MaxPool3d: 3}
AVGPOOL = {nn.AvgPool1d: 1, nn.AvgPool2d: 2, nn.AvgPool3d: 3}
LPPOOL = {nn.LPPool1d: 1, nn.LPPool2d: 2}
POOL = {**MAXPOOL, **AVGPOOL, **LPPOOL}
ADAPTIVE_AVGPOOL = {nn.AdaptiveAvgPool1d: 1, nn.AdaptiveAvgPool2d: 2, nn.AdaptiveAvgPool3d: 3}
ADAPTIVE_MAXPOOL = {nn.AdaptiveMaxPool1d: 1, nn.AdaptiveMaxPool2d: 2, nn.AdaptiveMaxPool3d: 3}
ADAPTIVE_POOL = {**ADAPTIVE_AVGPOOL, **ADAPTIVE_MAXPOOL}

#: functional max pooling -> spatial dimensions
MAXPOOL_FUNCTIONS = {F.max_pool1d: 1, F.max_pool2d: 2, F.max_pool3d: 3}

# ---------------------------------------------------------------------------------------------
# For isinstance

CONV_ANY = nn.modules.conv._ConvNd
CONV_OR_LINEAR = (nn.Linear, CONV_ANY)
BATCHNORM = nn.modules.batchnorm._BatchNorm
BATCHNORM_ND = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
INSTANCENORM = nn.modules.instancenorm._InstanceNorm
DROPOUT = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout, nn.FeatureAlphaDropout)
IDENTITY = (nn.Identity, *DROPOUT)
SOFTMAX_SIGMOID = (nn.Softmax, nn.LogSoftmax, nn.Sigmoid)
FINAL = (*SOFTMAX_SIGMOID, nn.Softmin)
ACTIVATIONS = (nn.ReLU, nn.LeakyReLU, nn.ELU, nn.GELU, nn.SiLU, nn.Tanh, nn.Sigmoid, nn.Softplus, nn.ReLU6,
               nn.Hardtanh, nn.PReLU, nn.Hardswish, nn.Hardsigmoid, nn.Mish, nn.SELU, nn.CELU, nn.RReLU,
               nn.Softsign)
#: elementwise nonlinearities as functions and Tensor methods (the identity rule in lrp.graph)
ACTIVATION_FUNCTIONS = (F.relu, torch.relu, F.leaky_relu, F.relu6, F.elu, F.gelu, F.silu, torch.tanh, F.tanh,
                        F.softplus, F.hardtanh, F.prelu, F.hardswish, F.hardsigmoid, F.mish, F.selu, torch.selu,
                        F.celu, torch.celu, F.rrelu, F.softsign, torch.sigmoid, F.sigmoid)
ACTIVATION_METHODS = ("relu", "relu_", "tanh", "tanh_", "sigmoid", "sigmoid_")
#: normalizations by statistics of the input itself (each sample apart): lrp.graph's Normalization step
SAMPLE_NORMS = (nn.LayerNorm, nn.GroupNorm, nn.RMSNorm)
SAMPLE_NORM_FUNCTIONS = (F.layer_norm, F.group_norm, F.rms_norm, F.instance_norm)
POINTWISE = (*ACTIVATIONS, *IDENTITY, BATCHNORM, INSTANCENORM)
#: the nonlinearities that gate a product (squeeze-excitation, GLU): 'gate as constant' finds the gate by them
GATES = (nn.Sigmoid, nn.Hardsigmoid, nn.Tanh, nn.Softmax, nn.SiLU, nn.GELU)
GATE_FUNCTIONS = (torch.sigmoid, F.sigmoid, F.hardsigmoid, torch.tanh, F.tanh, F.softmax, torch.softmax, F.silu,
                  F.gelu)
AVERAGING = (*AVGPOOL, *ADAPTIVE_AVGPOOL, nn.Upsample)
