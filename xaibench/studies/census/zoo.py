"""The census zoo: modern architectures on every backend, against the native engine.

The agreement census (agreement.py) covers the small nets every library can mirror; the zoo asks
the other question: which libraries can run today's architectures at all, how far each one's map
is from the native engine's, and why. Each architecture x method x backend that has the method
(census.pairs over sweep.backends(): a backend added to xaibench.api.BACKENDS is picked up here)
is one row of zoo.csv, with the measures of agreement.csv (conservation_residual_max/_median of
the backend's own map, ledger_closure_max of the native one, max/median_relative_difference to
native), its status, note, a verdict and the seconds it took.

Architectures: torchvision classification backbones with seeded random weights that keep the
activations of order one (xaibench.studies.networks.awaken; torchvision's own initialization
leaves MobileNet's and EfficientNet's logits near 1e-9, where epsilon absorbs everything) on
3x64x64 inputs, a small torchvision VisionTransformer on 3x32x32 (the architecture the lxt
backend, LXT 2.1, explains; its rows against native carry LXT's documented differences), plus the two
small networks of xaibench.studies.networks (DiffusionUNet: GroupNorm, SiLU, residual blocks,
a concatenation skip, upsampling; TwoBranchNet). float64, a batch of N_SAMPLES = 2 seeded
inputs spanning [-1, 1], the target the argmax (DiffusionUNet: its centre pixel of channel 0),
the models as built (with biases; bias=True). The options are the census's (stabilizer 1e-12,
epsilon 0.1; integrated gradients a left Riemann sum from zeros).

Everything runs under sweep.Sweep(native_failure="record"): a model the native engine cannot
trace gives its native rows "skipped: UnsupportedLayerError ..." (the layer named), and the other
backends' rows are still measured (their conservation residual), with the difference left NaN
and the note "no native reference". zennit runs such models all the same (it needs no trace) and
falls back to the plain gradient for every module and functional step it has no rule for; the
note says which ("zennit gradient fallback: ...", xaibench.backends.zennit_backend.gradient_fallback).

Verdict, for the non-native rows (VERDICTS): agrees (difference <= AGREEMENT), differs: zennit
gradient fallback, differs: known difference (a "known:" note, table.known_differences),
differs: unexplained, no native reference, skipped, error.

Heavy architectures (the ResNet-50-sized ones, ConvNeXt, DenseNet, EfficientNet, MobileNetV2) are in
the full zoo only; --quick runs the rest (see _TORCHVISION for the measured times).

    xaibench census --zoo --out results/census [--quick]
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch

from xaibench.backends import table
from xaibench.io import write_csv, write_text
from xaibench.progress import Progress
from xaibench.studies.census import agreement
from xaibench.studies.networks import (
    CensusModel,
    DiffusionUNet,
    TwoBranchNet,
    awaken,
    census_inputs,
    census_seed,
)

METHODS = ("lrp.epsilon", "lrp.z", "lrp.gamma", "lrp.alpha1beta0", "lrp.epsilon_plus", "gradient",
           "input_x_gradient", "integrated_gradients")
COLUMNS = agreement.COLUMNS + ["verdict", "seconds"]
N_SAMPLES = 2
DOMAIN = (-1.0, 1.0)
#: float64 maps closer than this (max |difference| / sum |R_native|) agree: the engine and zennit
#: differ by ~1e-11 on the same rules; a rule difference shows at 1e-3 and above
AGREEMENT = 1e-6
VERDICTS = ("reference", "agrees", "differs: zennit gradient fallback", "differs: known difference",
            "differs: unexplained", "no native reference", "skipped", "error")


@dataclass(frozen=True)
class Architecture:
    name: str
    description: str
    build: Callable[[], torch.nn.Module]
    input_shape: tuple[int, ...]
    heavy: bool = False             # in the full zoo only
    target: int | None = None       # None: the argmax; an int: that flat output index

    def spec(self) -> CensusModel:
        """The census's description of the model (its name seeds the inputs)."""
        return CensusModel(self.name, self.description, self.build, self.input_shape, DOMAIN, 0.0, self.target)


def _torchvision(name: str):
    def build():
        import torchvision

        return getattr(torchvision.models, name)(weights=None)
    return build


#: (name, what it has, heavy). Measured on one thread with native and zennit (innvestigate skips them
#: all), while the native engine still failed fast on most: wide_resnet50_2 141 s, resnext50_32x4d
#: 33 s, convnext_tiny 20 s, resnet18 9 s, mobilenet_v2 8 s, densenet121 6 s, efficientnet_b0 5 s,
#: regnet_y_400mf 5 s, shufflenet_v2_x0_5 3 s, mobilenet_v3_small 2 s. With captum and the native
#: engine explaining efficientnet_b0 it took 141 s (2 busy cores): the ones marked heavy are in the
#: full zoo only, the quick zoo keeps residual additions, squeeze-excitation products, Hardswish, channel
#: shuffles, GroupNorm and SiLU (the diffusion U-Net) at a minute or two.
_TORCHVISION = [
    ("resnet18", "ResNet-18: BatchNorm, residual additions", False),
    ("mobilenet_v2", "MobileNetV2: ReLU6, inverted residuals, functional global pooling", True),
    ("mobilenet_v3_small", "MobileNetV3-small: Hardswish, squeeze-excitation (a product)", False),
    ("efficientnet_b0", "EfficientNet-B0: SiLU, squeeze-excitation, stochastic depth", True),
    ("convnext_tiny", "ConvNeXt-tiny: LayerNorm, GELU, layer scale (a product), permutes", True),
    ("regnet_y_400mf", "RegNetY-400MF: grouped convs, squeeze-excitation", False),
    ("shufflenet_v2_x0_5", "ShuffleNetV2 x0.5: channel split and shuffle, functional mean", False),
    ("resnext50_32x4d", "ResNeXt-50 32x4d: grouped convs, residual additions", True),
    ("wide_resnet50_2", "Wide ResNet-50-2: residual additions", True),
    ("densenet121", "DenseNet-121: concatenations, BatchNorm before conv, functional ReLU and pooling", True),
]
def _vision_transformer():
    """torchvision's VisionTransformer at a small size (2 layers, 2 heads, width 16, 8x8 patches of a
    32x32 input). awaken() draws the Linear/Conv2d and LayerNorm parameters; the class token, the
    positional embedding and the attention's input-projection bias (zero or near zero in
    torchvision's init) are drawn here, so that every constant takes a share."""
    from torchvision.models.vision_transformer import VisionTransformer

    model = VisionTransformer(image_size=32, patch_size=8, num_layers=2, num_heads=2, hidden_dim=16, mlp_dim=32,
                              num_classes=10)
    with torch.no_grad():
        model.class_token.normal_(0.0, 0.5)
        model.encoder.pos_embedding.normal_(0.0, 0.5)
        for module in model.modules():
            if isinstance(module, torch.nn.MultiheadAttention):
                module.in_proj_bias.normal_(0.0, 0.1)
    return model


_ARCHITECTURES = [
    *[Architecture(name, description, _torchvision(name), (3, 64, 64), heavy) for name, description, heavy
      in _TORCHVISION],
    Architecture("vit", "VisionTransformer (torchvision, 2 layers, 2 heads, width 16, patch 8): LayerNorm, "
                 "nn.MultiheadAttention, GELU, class token, positional embedding", _vision_transformer, (3, 32, 32)),
    Architecture("diffusion_unet", "diffusion-style U-Net: GroupNorm, SiLU, residual blocks, cat skip, upsampling",
                 lambda: DiffusionUNet(channels=2, width=8, groups=4), (2, 16, 16), target=8 * 16 + 8),
    Architecture("two_branch", "two branches (avg-pooled conv, dilated max-pooled conv), concatenated, dense head",
                 lambda: TwoBranchNet(channels=2, size=8), (2, 8, 8)),
]
ARCHITECTURES = {architecture.name: architecture for architecture in _ARCHITECTURES}


@dataclass(frozen=True)
class ZooSettings:
    architectures: tuple[str, ...]
    integrated_gradients_steps: int


QUICK = ZooSettings(tuple(name for name, a in ARCHITECTURES.items() if not a.heavy), integrated_gradients_steps=8)
DEFAULT = ZooSettings(tuple(ARCHITECTURES), integrated_gradients_steps=32)


def build_architecture(architecture: Architecture, seed: int) -> torch.nn.Module:
    """float64, eval mode, awaken()'s weights under a seed of the run and the name."""
    torch.manual_seed(census_seed(seed, architecture.name))
    return awaken(architecture.build(), census_seed(seed, architecture.name)).double().eval()


def verdict(row: dict) -> str:
    """What one row says (VERDICTS)."""
    status = row["status"]
    if status != "ok":
        return status.split(":", 1)[0]
    if row["backend"] == "native":
        return "reference"
    note = row["note"] or ""
    difference = row["max_relative_difference"]
    if difference is None or math.isnan(difference):
        return "no native reference"
    if difference <= AGREEMENT:
        return "agrees"
    if agreement.FALLBACK in note:
        return "differs: zennit gradient fallback"
    if "known:" in note:
        return "differs: known difference"
    return "differs: unexplained"


def triples_for(backends: list[str], methods: Iterable[str]) -> list[tuple[str, str, str]]:
    """census.pairs, and a native row for every method even where no other backend has it (whether
    the native engine explains an architecture is a finding of its own)."""
    methods = list(methods)
    triples = agreement.pairs(backends, methods)
    if "native" in backends:
        have = {method for method, backend, _ in triples if backend == "native"}
        extra = [(m, "native", m) for m in methods if m not in have and m in table.available("native")]
        order = {m: i for i, m in enumerate(table.METHODS)}
        triples = sorted(triples + extra, key=lambda r: (order[r[0]], 0 if r[1] == "native" else 1))
    return triples


def run_zoo(out_dir: str | Path | None = "results/census", quick: bool = True, seed: int = 0,
            settings: ZooSettings | None = None, backends: Iterable[str] | None = None,
            methods: Iterable[str] | None = None, log: Callable[[str], None] | None = print) -> pd.DataFrame:
    """Run the zoo; write zoo.csv and zoo.md to out_dir (if given); return the table."""
    log = log or (lambda message: None)
    settings = settings or (QUICK if quick else DEFAULT)
    unknown = [name for name in settings.architectures if name not in ARCHITECTURES]
    if unknown:
        raise ValueError(f"unknown zoo architecture(s) {unknown}; architectures: {', '.join(ARCHITECTURES)}")
    backends = agreement.checked_backends(backends)
    triples = triples_for(backends, METHODS if methods is None else methods)
    census_settings = agreement.Settings(models=(), n_samples=N_SAMPLES, smoothgrad_samples=8,
                                         integrated_gradients_steps=settings.integrated_gradients_steps)
    run = agreement.CensusRun(census_settings, seed, log)
    progress = Progress(len(settings.architectures) * len(triples))
    rows, seconds = [], {}
    for name in settings.architectures:
        architecture = ARCHITECTURES[name]
        spec = architecture.spec()
        started = time.perf_counter()
        model = build_architecture(architecture, seed)
        x = census_inputs(spec, N_SAMPLES, seed)
        with torch.no_grad():
            output = model(x)
        target = spec.target if spec.target is not None else output.reshape(len(x), -1).argmax(1)
        cache: dict = {}
        for method, backend, reference in triples:
            row_started = time.perf_counter()
            row = run.row(spec, model, x, target, True, method, backend, reference, cache)
            row["seconds"] = round(time.perf_counter() - row_started, 3)
            row["verdict"] = verdict(row)
            rows.append(row)
            log(f"{progress.step()} {name:20s} {method:22s} {backend:12s} diff {row['max_relative_difference']:9.2e} "
                f"cons {row['conservation_residual_max']:9.2e} {row['seconds']:6.2f} s  {row['verdict']}")
        seconds[name] = time.perf_counter() - started
        log(f"{name}: {seconds[name]:.1f} s")
    zoo = pd.DataFrame(rows, columns=COLUMNS)
    if out_dir is not None:
        write_zoo(zoo, out_dir, settings, seconds)
    return zoo


# --- tables ----------------------------------------------------------------------------------
def per_architecture(zoo: pd.DataFrame) -> pd.DataFrame:
    """Per architecture and non-native backend: which methods agree with native and which not, by verdict."""
    records = []
    for (model, backend), part in zoo.groupby(["model", "backend"], sort=False):
        if backend == "native":
            continue
        record = {"architecture": model, "backend": backend}
        for name in VERDICTS[1:]:
            chosen = part[part["verdict"] == name]
            record[name] = ", ".join(chosen["method"]) if len(chosen) else ""
        records.append(record)
    columns = ["architecture", "backend", *VERDICTS[1:]]
    return pd.DataFrame.from_records(records, columns=columns)


def _native_status(zoo: pd.DataFrame) -> pd.DataFrame:
    """Per architecture: how many native methods ran, and the first failure's reason."""
    records = []
    for model, part in zoo[zoo["backend"] == "native"].groupby("model", sort=False):
        ok = part[part["status"] == "ok"]
        failed = part[part["status"] != "ok"]
        records.append({"architecture": model, "native_ok": f"{len(ok)}/{len(part)}",
                        "native_failure": failed["status"].iloc[0][:160] if len(failed) else ""})
    return pd.DataFrame.from_records(records, columns=["architecture", "native_ok", "native_failure"])


def write_zoo(zoo: pd.DataFrame, out_dir: str | Path, settings: ZooSettings | None = None,
              seconds: dict | None = None):
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_csv(zoo, out / "zoo.csv")
    seconds = seconds or {}
    names = list(dict.fromkeys(zoo["model"]))
    overview = pd.DataFrame({
        "architecture": names,
        "what it has": [ARCHITECTURES[n].description if n in ARCHITECTURES else "" for n in names],
        "input": ["x".join(map(str, ARCHITECTURES[n].input_shape)) if n in ARCHITECTURES else "" for n in names],
        "seconds": [round(seconds.get(n, math.nan), 1) for n in names],
    }).merge(_native_status(zoo), on="architecture", how="left")
    rows = zoo[["model", "method", "backend", "conservation_residual_max", "ledger_closure_max",
                "max_relative_difference", "verdict", "status", "note"]]
    size = "" if settings is None else f" Integrated gradients: {settings.integrated_gradients_steps} steps."
    text = [
        "# Census zoo: modern architectures on every backend",
        "",
        "Computed by `xaibench census --zoo`; seeded random weights that keep activations of order one "
        f"(xaibench.studies.networks.awaken), {N_SAMPLES} seeded inputs spanning [-1, 1], float64, "
        f"stabilizer 1e-12, epsilon 0.1.{size} "
        "Difference: max over samples of max|R_backend - R_native| / sum|R_native|; conservation residual: "
        "max over samples of |sum(R) - output| / |output| of the backend's own map (with biases it includes "
        "what biases and epsilon absorb). Seconds: the whole architecture on every backend, on this "
        "machine's threads.",
        "",
        f"Verdicts: agrees (difference <= {AGREEMENT:g}); differs: zennit gradient fallback (zennit has no "
        "rule for a module or functional step the note names and uses the plain gradient there); differs: "
        "known difference (a documented reason, xaibench.backends.table); differs: unexplained; no native "
        "reference (the native engine cannot explain the model yet: see native_failure); skipped / error "
        "(the status says why).",
        "",
        "## Architectures",
        "",
        overview.to_markdown(index=False),
        "",
        "## Where the libraries agree with native and where not (methods by verdict)",
        "",
        per_architecture(zoo).to_markdown(index=False),
        "",
        "## All rows",
        "",
        rows.to_markdown(index=False, floatfmt=".2e"),
        "",
    ]
    write_text(out / "zoo.md", "\n".join(text))
