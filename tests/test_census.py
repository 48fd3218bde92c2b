"""The cross-library agreement census (xaibench.studies.census).

The census itself is a measurement; these tests check that it measures what it says: the
documented columns, zennit agreeing with native to rounding where both run the same rule,
skipped rows (never a crash) where a backend cannot mirror a model or is not installed, and the
headline table the README quotes. Tests that start the innvestigate worker are marked tf.
"""

from __future__ import annotations

import math

import pandas as pd
import pytest
import torch

from xaibench.studies.census import agreement as census

TINY = census.Settings(models=("dense",), n_samples=3, smoothgrad_samples=8, integrated_gradients_steps=4)


@pytest.fixture(scope="module")
def tiny_census(tmp_path_factory):
    """A census of the dense net on native and zennit (no TF needed), written to a folder."""
    out = tmp_path_factory.mktemp("census")
    table = census.run_census(out, settings=TINY, backends=("native", "zennit"),
                              methods=["lrp.epsilon", "lrp.zplus", "gradient"], log=None)
    return out, table


def test_census_writes_the_csv_with_the_documented_columns(tiny_census):
    out, table = tiny_census
    written = pd.read_csv(out / "agreement.csv")
    assert list(written.columns) == census.COLUMNS
    for column in ("method", "backend", "reference", "model", "bias", "n_samples", "conservation_residual_max",
                   "conservation_residual_median", "max_relative_difference", "median_relative_difference",
                   "status"):
        assert column in written.columns
    assert set(written["backend"]) == {"native", "zennit"}
    assert set(written["bias"]) == {True, False}
    assert (written["status"] == "ok").all(), written[written["status"] != "ok"]
    assert (written["n_samples"] == TINY.n_samples).all()


def test_zennit_agrees_with_native_on_epsilon_in_float64(tiny_census):
    _, table = tiny_census
    rows = table[(table["method"] == "lrp.epsilon") & (table["backend"] == "zennit")]
    assert len(rows) == 2   # with and without biases
    assert (rows["max_relative_difference"] < 1e-8).all(), rows
    assert (rows["dtype"] == "float64").all()


def test_native_rows_report_conservation_and_the_ledger_closure(tiny_census):
    _, table = tiny_census
    native = table[(table["backend"] == "native") & (table["method"] == "lrp.zplus")]
    assert (native["ledger_closure_max"] < 1e-12).all()
    bias_free = native[~native["bias"]]
    # without biases z+ conserves: sum R = output up to the 1e-12 stabilizer
    assert float(bias_free["conservation_residual_max"].iloc[0]) < 1e-9
    assert native["max_relative_difference"].isna().all()   # native is the reference
    gradient = table[(table["method"] == "gradient") & (table["backend"] == "native")]
    assert gradient["conservation_residual_max"].isna().all()   # no conservation property


def test_markdown_holds_the_headline_table_and_the_full_table(tiny_census):
    out, table = tiny_census
    text = (out / "agreement.md").read_text()
    assert "## Headline (worst over models)" in text
    assert "## All rows" in text
    headline = census.headline(table)
    assert list(headline.columns[:3]) == ["method", "backend", "reference"]
    assert {"max_relative_difference_bias", "max_relative_difference_no_bias", "conservation_residual_bias",
            "conservation_residual_no_bias"} <= set(headline.columns)
    epsilon = headline[(headline["method"] == "lrp.epsilon") & (headline["backend"] == "zennit")]
    assert float(epsilon["max_relative_difference_bias"].iloc[0]) < 1e-8
    headline_part = text.split("## Headline (worst over models)")[1].split("## All rows")[0]
    assert "| lrp.epsilon" in headline_part and "zennit" in headline_part


def test_a_model_innvestigate_cannot_mirror_gives_skipped_rows_not_a_crash(tmp_path):
    # the exporter refuses ConvTranspose2d before any worker starts: no TF environment needed
    settings = census.Settings(models=("conv_transposed",), n_samples=2, smoothgrad_samples=8,
                               integrated_gradients_steps=4)
    table = census.run_census(tmp_path, settings=settings, backends=("native", "innvestigate"),
                              methods=["lrp.epsilon"], log=None)
    rows = table[table["backend"] == "innvestigate"]
    assert len(rows) == 2
    assert rows["status"].str.startswith("skipped: ExportError").all(), rows["status"].tolist()
    assert rows["status"].str.contains("ConvTranspose2d").all()
    assert rows["max_relative_difference"].isna().all()
    assert (table[table["backend"] == "native"]["status"] == "ok").all()
    assert "Rows skipped: 2" in (tmp_path / "agreement.md").read_text()


def test_an_unavailable_backend_gives_skipped_rows(monkeypatch):
    from xaibench.backends import innvestigate_backend

    innvestigate_backend.shutdown()
    monkeypatch.setenv("XAIBENCH_TF_PYTHON", "/nonexistent/python")
    try:
        table = census.run_census(None, settings=TINY, backends=("native", "innvestigate"),
                                  methods=["lrp.epsilon", "gradient"], log=None)
    finally:
        innvestigate_backend.shutdown()
    rows = table[table["backend"] == "innvestigate"]
    assert len(rows) == 4
    assert rows["status"].str.startswith("skipped: BackendUnavailableError").all(), rows["status"].tolist()


def test_innvestigate_only_methods_name_their_nearest_native_reference():
    triples = census.pairs(methods=["deep_taylor", "deep_taylor.bounded", "lrp.epsilon"])
    assert ("deep_taylor", "innvestigate", "lrp.zplus") in triples
    assert ("deep_taylor.bounded", "innvestigate", "lrp.zbox") in triples
    assert ("lrp.zplus", "native", "lrp.zplus") in triples   # the reference gets its own native row
    assert ("lrp.epsilon", "zennit", "lrp.epsilon") in triples
    assert not any(method == "occlusion" for method, _, _ in census.pairs())


def test_census_models_are_deterministic_and_inputs_span_the_domain():
    spec = census.MODELS["conv2d"]
    first, second = census.build(spec, 3), census.build(spec, 3)
    for a, b in zip(first.parameters(), second.parameters()):
        assert torch.equal(a, b)
    x = census.inputs(spec, 5, 3)
    flat = x.reshape(5, -1)
    assert torch.equal(flat.min(1).values, torch.full((5,), spec.domain[0], dtype=torch.float64))
    assert torch.equal(flat.max(1).values, torch.full((5,), spec.domain[1], dtype=torch.float64))
    bias_free = census.bias_free_copy(first)
    def biases(model):
        return [float(m.bias.detach().abs().max()) for m in model.modules() if getattr(m, "bias", None) is not None]

    assert all(b == 0 for b in biases(bias_free)) and any(b > 0 for b in biases(first))


# --- with the TF environment ------------------------------------------------------------------
@pytest.mark.tf
def test_innvestigate_rows_on_the_dense_net(innvestigate_worker):
    table = census.run_census(None, settings=TINY, backends=("native", "innvestigate"),
                              methods=["lrp.epsilon", "lrp.alpha1beta0", "integrated_gradients", "smoothgrad",
                                       "deep_taylor.bounded"], log=None)
    rows = table[table["backend"] == "innvestigate"].set_index(["method", "bias"])
    assert (rows["status"] == "ok").all(), rows["status"]
    assert rows.loc[("lrp.epsilon", True), "max_relative_difference"] < 1e-8
    assert rows.loc[("integrated_gradients", True), "max_relative_difference"] < 1e-8
    # bias-free, innvestigate's alpha-beta agrees; with biases it divides by the full bias (issue 116)
    assert rows.loc[("lrp.alpha1beta0", False), "max_relative_difference"] < 1e-8
    assert rows.loc[("lrp.alpha1beta0", True), "max_relative_difference"] > 1e-3
    assert "known:" in rows.loc[("lrp.alpha1beta0", True), "note"]
    # z^B on the first layer although integrated gradients and SmoothGrad were asked for before it
    # (the worker gives innvestigate's wrappers a Keras twin of their own)
    assert rows.loc[("deep_taylor.bounded", False), "max_relative_difference"] < 1e-8
    assert "statistical comparison" in rows.loc[("smoothgrad", True), "note"]
    assert math.isnan(rows.loc[("smoothgrad", True), "conservation_residual_max"])


def test_cli_has_the_census_command():
    from xaibench import cli
    from xaibench.studies.census import commands

    parser, handlers = cli.build_parser()
    args = parser.parse_args(["census", "--out", "somewhere", "--quick"])
    assert (args.command, args.out, args.quick, args.seed) == ("census", "somewhere", True, 0)
    assert handlers["census"] is commands._census
