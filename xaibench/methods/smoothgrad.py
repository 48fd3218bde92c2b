"""SmoothGrad (Smilkov et al. 2017): the gradient averaged over noisy copies of the input.

The noise of a sample has standard deviation noise_level * (max - min of that sample), drawn
from a torch.Generator seeded by `seed`, so results are reproducible and the global RNG is
left alone. Every target sees the same noisy copies, so [B, T] targets equal T single calls.
kind="input_x_gradient" multiplies the averaged gradient by the (noise-free) input.
"""

from __future__ import annotations

import torch

from .. import targets as targets_module
from ..explanation import Explanation
from . import common

KINDS = ("gradient", "input_x_gradient")
DEFAULTS = {"noise_level": 0.1, "samples": 32, "seed": 0, "kind": "gradient", "batch_samples": None}


def smoothgrad(model, x, target=None, dtype=None, output=None, **options) -> Explanation:
    options = common.take_options("smoothgrad", options, DEFAULTS)
    noise_level = common.number("noise_level", options["noise_level"])
    samples = common.integer("samples", options["samples"])
    seed = common.integer("seed", options["seed"], minimum=0)
    kind = common.choice("kind", options["kind"], KINDS)
    x, graph, output = common.prepare(model, x, dtype, output, method="smoothgrad")
    selected = targets_module.resolve(output, target)
    batch, count = x.shape[0], selected.count
    per_pass = common.chunk("batch_samples", options["batch_samples"], count * batch, x[0].numel())

    flat = x.reshape(batch, -1)
    std = (noise_level * (flat.max(1).values - flat.min(1).values)).view((batch,) + (1,) * (x.dim() - 1))
    generator = torch.Generator(device=x.device).manual_seed(seed)
    total = torch.zeros((count * batch,) + tuple(x.shape[1:]), dtype=x.dtype, device=x.device)
    with torch.enable_grad():
        for first in range(0, samples, per_pass):
            n = min(per_pass, samples - first)
            # one draw per noisy copy, so the numbers do not depend on how copies are chunked
            noise = torch.stack([torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)
                                 for _ in range(n)])
            noisy = (x + std * noise).unsqueeze(1).expand((n, count) + tuple(x.shape))
            noisy = noisy.reshape((n * count * batch,) + tuple(x.shape[1:])).requires_grad_(True)
            cotangent = selected.selection.repeat((n,) + (1,) * (selected.selection.dim() - 1))
            (grad,) = torch.autograd.grad(common.explained(graph, noisy), noisy, cotangent)
            total += grad.view((n,) + tuple(total.shape)).sum(0)
    relevance = total / samples
    if kind == "input_x_gradient":
        relevance = relevance * common.repeat_rows(x, count)
    explained_x = selected.explained(output)
    return Explanation(selected.arrange(relevance), selected.arrange(explained_x), "smoothgrad", "native",
                       selected.description, stripped=graph.stripped)
