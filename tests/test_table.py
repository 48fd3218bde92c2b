"""The one method table (xaibench/backends/table.py) that every backend reads.

It lists what each backend runs, docs/methods.md is generated from it, and each documented
difference between the backends has a control that removes its cause without touching the
model handed in. (How `xaibench validate` uses the controls: tests/test_validate.py.)
"""

from __future__ import annotations

import torch
from strategies import documented_difference_examples, full_snapshot, unchanged

import xaibench
from xaibench.backends import table


def test_table_lists_what_each_backend_runs():
    assert table.available("native") == sorted(xaibench.methods("native"))
    for backend in ("zennit", "innvestigate", "captum"):
        assert table.available(backend) == xaibench.methods(backend)
    assert set(table.NEAREST_NATIVE) <= set(table.available("innvestigate"))
    assert set(table.NEAREST_NATIVE.values()) <= set(table.available("native"))


def test_docs_methods_md_is_generated_from_the_table():
    from pathlib import Path

    docs = Path(__file__).resolve().parents[1] / "docs" / "methods.md"
    assert docs.read_text() == table.markdown(), "regenerate: xaibench methods --markdown docs/methods.md"


def captum_difference_examples():
    """One (backend, method, options, model) per documented difference of captum, keyed by a phrase of its reason."""
    from torch import nn

    torch.manual_seed(0)
    cnn = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Flatten(), nn.Linear(2 * 6 * 6, 3)).eval()
    batchnorm = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.ReLU(), nn.Flatten(),
                              nn.Linear(2 * 6 * 6, 3)).eval()
    return {
        "keep the full bias b": ("captum", "lrp.alpha1beta0", {}, cnn),
        "its own EpsilonRule": ("captum", "lrp.epsilon", {}, batchnorm),
        "weighs its points": ("captum", "integrated_gradients", {}, cnn),
        "NoiseTunnel draws": ("captum", "smoothgrad", {}, cnn),
    }


def test_every_documented_difference_has_a_control_that_removes_its_cause():
    """A control that removes the cause (not native_only) leaves a comparison where the
    difference no longer applies on either side; one that recomputes changes only the native
    side. Either way the model handed in is not touched."""
    examples = {**documented_difference_examples(), **captum_difference_examples()}
    x = torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    for difference in table.DIFFERENCES:
        names = [name for name in examples if name in difference.reason]
        assert len(names) == 1, f"no example (or several) for the documented difference: {difference.reason}"
        backend, method, options, model = examples[names[0]]
        assert difference in table.documented_differences(backend, method, options, model)
        snapshot = full_snapshot(model)
        native, other = table.control([difference], method, options, model, x)
        assert unchanged(model, snapshot) and native.model is not model
        if difference.control.native_only:
            assert other is None
        else:
            for side in (native, other):
                assert difference not in table.documented_differences(backend, side.method, side.options,
                                                                       side.model)
        with torch.no_grad():  # a control never changes the shape of what is explained
            assert native.model(x).shape == model(x).shape


