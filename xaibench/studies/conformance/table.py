"""The engine's conformance table.

Two parts, both written by `xaibench conformance` (and the Snakemake rule `conformance`):

1. rules x layers: the largest error of the engine against the dense-matrix float64
   reference (xaibench/lrp/reference.py) for every rule on every single layer type;
2. methods x networks: on small networks that cover the supported graph shapes (dense,
   conv 1/2/3-D with pooling, transposed-conv decoder, BatchNorm, residual addition,
   U-Net concatenation skip), the conservation residual in float64 and float32, the worst
   per-layer ledger residual, the share of the output absorbed (bias, stabilizer, ...),
   and the largest difference to zennit where zennit has the method.

The networks (and Functional, the single functional steps) are the shared test networks of
xaibench/studies/networks.py; this module holds what is measured on them.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from xaibench.io import write_csv, write_text
from xaibench.studies.networks import CONFORMANCE_NETWORKS as NETWORKS
from xaibench.studies.networks import Functional, conformance_network

#: single layers: name -> (builder, input shape without batch)
LAYERS = {
    "linear": (lambda: nn.Linear(7, 5), (7,)),
    "conv1d_stride_pad": (lambda: nn.Conv1d(3, 4, 3, stride=2, padding=1), (3, 9)),
    "conv2d": (lambda: nn.Conv2d(2, 3, 3, padding=1), (2, 5, 5)),
    "conv2d_groups_dilation": (lambda: nn.Conv2d(4, 4, 3, dilation=2, groups=2), (4, 7, 7)),
    "conv2d_same": (lambda: nn.Conv2d(2, 2, 3, padding="same"), (2, 4, 5)),
    "conv3d": (lambda: nn.Conv3d(2, 3, (2, 3, 3), padding=(0, 1, 1)), (2, 3, 4, 4)),
    "convtranspose1d": (lambda: nn.ConvTranspose1d(3, 2, 3, stride=2, padding=1, output_padding=1), (3, 5)),
    "convtranspose2d": (lambda: nn.ConvTranspose2d(2, 3, 3, stride=2), (2, 3, 3)),
    "convtranspose3d": (lambda: nn.ConvTranspose3d(2, 2, 2, stride=2), (2, 2, 2, 3)),
}

#: rules: name -> (canonical method, options, reference rule, reference options)
RULES = {
    "z": ("lrp.z", {}, "z", {}),
    "epsilon": ("lrp.epsilon", {"epsilon": 0.1}, "epsilon", {"epsilon": 0.1}),
    "gamma": ("lrp.gamma", {"gamma": 0.25}, "gamma", {"gamma": 0.25}),
    "zplus": ("lrp.zplus", {}, "zplus", {}),
    "alpha1beta0": ("lrp.alpha1beta0", {}, "alpha_beta", {"alpha": 1.0, "beta": 0.0}),
    "alpha2beta1": ("lrp.alpha2beta1", {}, "alpha_beta", {"alpha": 2.0, "beta": 1.0}),
    "alpha3beta2": ("lrp.alpha_beta", {"alpha": 3.0, "beta": 2.0}, "alpha_beta", {"alpha": 3.0, "beta": 2.0}),
    "zbox": ("lrp.zbox", {}, "zbox", {}),
    "wsquare": ("lrp.wsquare", {}, "wsquare", {}),
    "flat": ("lrp.flat", {}, "flat", {}),
}


def _window_sum(kernel):
    return lambda t: F.avg_pool2d(t, kernel, kernel) * (kernel * kernel)


#: parameter-free layers: name -> (builder, input shape, reference rule, options, reference map)
PARAMETER_FREE = {
    "avgpool1d": (lambda: nn.AvgPool1d(3, stride=2, padding=1), (2, 7), "norm", {}, None),
    "avgpool2d": (lambda: nn.AvgPool2d(2), (2, 4, 6), "norm", {}, None),
    "avgpool3d": (lambda: nn.AvgPool3d((1, 2, 2)), (1, 2, 4, 4), "norm", {}, None),
    "adaptive_avgpool2d": (lambda: nn.AdaptiveAvgPool2d((2, 3)), (2, 5, 7), "norm", {}, None),
    # one source per output: relevance is copied back by the transpose (the "gradient" reference)
    "upsample_nearest": (lambda: nn.Upsample(scale_factor=2, mode="nearest"), (2, 3, 3), "gradient", {}, None),
    "upsample_bilinear": (lambda: nn.Upsample(scale_factor=2, mode="bilinear"), (1, 3, 4), "norm", {}, None),
    "maxpool1d": (lambda: nn.MaxPool1d(2), (3, 8), "gradient", {}, None),
    "maxpool2d_overlapping": (lambda: nn.MaxPool2d(3, stride=2, padding=1), (2, 5, 5), "gradient", {}, None),
    "maxpool3d": (lambda: nn.MaxPool3d((1, 2, 2)), (2, 2, 4, 4), "gradient", {}, None),
    "maxpool2d_proportional": (lambda: nn.MaxPool2d(2), (2, 4, 4), "norm", {"maxpool": "proportional"},
                               _window_sum(2)),

    "interpolate_nearest": (lambda: Functional("interpolate_nearest"), (2, 3, 3), "gradient", {}, None),
    "interpolate_nearest_size": (lambda: Functional("interpolate_nearest_size"), (1, 4, 5), "gradient", {}, None),
    "interpolate_bilinear": (lambda: Functional("interpolate_bilinear"), (1, 3, 4), "norm", {}, None),
    "getitem_slice": (lambda: Functional("getitem_slice"), (3, 5, 6), "gradient", {}, None),
    "pad_zero": (lambda: Functional("pad_zero"), (2, 3, 4), "gradient", {}, None),
    "scale_by_number": (lambda: Functional("scale_by_number"), (2, 3), "identity", {}, None),
    "permute_transpose": (lambda: Functional("permute_transpose"), (2, 3, 4), "gradient", {}, None),
    "mean": (lambda: Functional("mean"), (3, 4, 5), "norm", {}, None),
    "sum": (lambda: Functional("sum"), (3, 4, 5), "norm", {}, None),
    # constants: their share of a sum is absorbed (the z-rule with the constant as a bias)
    "add_buffer": (lambda: Functional("add_buffer"), (2, 3), "z", {}, None),
    "add_parameter": (lambda: Functional("add_parameter"), (2, 3), "z", {}, None),
    "subtract_number": (lambda: Functional("subtract_number"), (2, 3), "z", {}, None),
    # torch.cat with a constant tensor: relevance is split back, the constant's part absorbed
    "cat_constant": (lambda: Functional("cat_constant"), (2, 3), "gradient", {}, lambda t: _cat_zeros(t)),
}


def _cat_zeros(t):
    """The linear part of Functional('cat_constant') for any batch (its constant is batch-sized)."""
    return torch.cat([t, torch.zeros((t.shape[0], 1) + tuple(t.shape[2:]), dtype=t.dtype)], 1)


def _bounds_options(method, x):
    if method in ("lrp.zbox", "lrp.epsilon_gamma_box"):
        return {"low": float(x.min()), "high": float(x.max())}
    return {}


def network_rows(seed=0, batch=4):
    """Per method and network: conservation, ledger residuals, absorption, zennit agreement."""
    import xaibench

    rows = []
    zennit_methods = set(xaibench.methods("zennit"))
    lrp_methods = [m for m in xaibench.methods("native") if m.startswith("lrp.")]
    for name in NETWORKS:
        model, model32, x, target = conformance_network(name, seed, batch)
        for method in lrp_methods:
            options = _bounds_options(method, x)
            e64 = xaibench.explain(model, x, method, target=target, **options)
            e32 = xaibench.explain(model32, x.float(), method, target=target, **options)
            ledger_residual = max(float(row.residual.abs().max()) for row in e64.ledger)
            absorbed = e64.ledger.absorbed()
            absorbed_share = float((absorbed.abs() / e64.output.abs().clamp(min=1e-12)).median())
            zennit_difference = math.nan
            if method in zennit_methods:
                try:
                    ez = xaibench.explain(model, x, method, target=target, backend="zennit", **options)
                    scale = e64.relevance.abs().amax().clamp(min=1e-12)
                    zennit_difference = float((ez.relevance - e64.relevance).abs().amax() / scale)
                except Exception as error:  # zennit may refuse a graph; the table says so
                    zennit_difference = math.nan
                    print(f"zennit failed on {name}/{method}: {error}")
            rows.append({
                "network": name, "method": method,
                "conservation_error_f64": float(e64.conservation_error.max()),
                "relative_conservation_error_f32": float(e32.relative_conservation_error.max()),
                "ledger_row_residual_f64": ledger_residual,
                "median_absorbed_share": absorbed_share,
                "zennit_max_relative_difference": zennit_difference,
            })
    return rows


def layer_rows():
    from xaibench.lrp.reference import engine_vs_reference

    rows = []
    for layer, (build, shape) in LAYERS.items():
        for rule, (method, options, ref_rule, ref_options) in RULES.items():
            for bias in (True, False):
                torch.manual_seed(0)
                error = engine_vs_reference(build(), shape, method, {**options, "bias": bias}, ref_rule,
                                            ref_options)
                rows.append({"layer": layer, "rule": rule, "bias": bias, "max_error_vs_reference": error})
    for layer, (build, shape, ref_rule, options, reference_function) in PARAMETER_FREE.items():
        torch.manual_seed(0)
        error = engine_vs_reference(build(), shape, "lrp.epsilon", options, ref_rule, {},
                                    reference_function=reference_function)
        if layer.startswith("maxpool"):
            rule = "maxpool_" + options.get("maxpool", "winner_take_all")
        else:
            rule = "copy" if ref_rule == "gradient" else "norm"
        rows.append({"layer": layer, "rule": rule, "bias": False, "max_error_vs_reference": error})
    return rows


def write_conformance(out_dir, quick: bool = True):
    """Write conformance.csv (networks), conformance_layers.csv and conformance.md."""
    import pandas as pd

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    networks = pd.DataFrame(network_rows(batch=4 if quick else 16))
    layers = pd.DataFrame(layer_rows())
    write_csv(networks, out / "conformance.csv")
    write_csv(layers, out / "conformance_layers.csv")
    by_rule = layers.groupby("rule")["max_error_vs_reference"].max().reset_index()
    worst = networks.groupby("method").agg(
        conservation_error_f64=("conservation_error_f64", "max"),
        relative_conservation_error_f32=("relative_conservation_error_f32", "max"),
        ledger_row_residual_f64=("ledger_row_residual_f64", "max"),
        zennit_max_relative_difference=("zennit_max_relative_difference", "max"),
    ).reset_index()
    text = [
        "# Engine conformance",
        "",
        "Computed by `xaibench conformance`; synthetic random networks, no data involved.",
        "",
        "## Rules against the dense-matrix float64 reference (worst over layers)",
        "",
        by_rule.to_markdown(index=False, floatfmt=".2e"),
        "",
        "## Methods over the test networks (worst over networks)",
        "",
        "zennit differences are over networks where zennit applies the same rules; the residual",
        "and U-Net networks use a functional addition/concatenation that zennit explains with the",
        "plain gradient, and BatchNorm after a dense layer is merged by both. See the per-network",
        "table for where the libraries part.",
        "",
        worst.to_markdown(index=False, floatfmt=".2e"),
        "",
        "## Per network",
        "",
        networks.to_markdown(index=False, floatfmt=".2e"),
        "",
    ]
    write_text(out / "conformance.md", "\n".join(text))
    return networks, layers
