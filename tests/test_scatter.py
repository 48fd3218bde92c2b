"""Scatter and gather of the explanation steps (xaibench.studies.chunks; issue 18): chunk
boundaries; the reference cases' and the ground-truth benchmark's chunks, gathered, equal one
unchunked run bit for bit (arrays and attributes), run through the `xaibench` commands the rules
call; the errors of a bad chunk spec and of an incomplete gather. The workflow's chunk jobs are
counted in tests/test_profiles.py. Tiny data and models; the innvestigate tests start its TF
worker once per run (about 20 s each)."""

from __future__ import annotations

import json
import random
import re
import shutil

import numpy as np
import pytest
from conftest import train_small_radar1

from xaibench.cli import main as cli_main
from xaibench.errors import ChunkError, InputError, XaibenchError
from xaibench.studies import chunks
from xaibench.studies.cases import pipeline as cases
from xaibench.studies.chunks import Chunk
from xaibench.studies.data import make_enso, make_groundtruth, read_dataset, write_dataset
from xaibench.studies.groundtruth.benchmark import explain_benchmark, gather_benchmark
from xaibench.studies.models.training import train

CASE_METHODS = ["lrp.epsilon", "lrp.zbox", "gradient", "smoothgrad", "integrated_gradients"]
CASE_BACKENDS = ["native", "zennit", "captum"]
GROUNDTRUTH_METHODS = ["gradient", "smoothgrad", "input_x_gradient", "integrated_gradients", "occlusion", "lrp.z",
                       "lrp.epsilon", "lrp.alpha1beta0"]


# --- fixtures ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def enso(tmp_path_factory):
    root = tmp_path_factory.mktemp("enso")
    write_dataset(make_enso(n_samples=300, seed=0), root / "data.nc")
    train("enso", root / "data.nc", {"epochs": 6, "lr": 0.01}, out=root / "model")
    return root


@pytest.fixture(scope="module")
def radar(tmp_path_factory):
    return train_small_radar1(tmp_path_factory.mktemp("radar"))


@pytest.fixture(scope="module")
def groundtruth(tmp_path_factory):
    root = tmp_path_factory.mktemp("groundtruth")
    write_dataset(make_groundtruth(n_samples=400, stride=3, seed=1), root / "data.nc")
    train("groundtruth", root / "data.nc", {"epochs": 2, "optimizer": "adam"}, out=root / "model")
    return root


# --- comparing files -----------------------------------------------------------------------------
def assert_same_dataset(whole, gathered, name, ignore=()):
    """Bit for bit: the same variables in the same order, dtypes, values, dims, coordinates and
    attributes (xarray's identical), the file's attributes included."""
    whole, gathered = whole.drop_vars(list(ignore)), gathered.drop_vars(list(ignore))
    assert list(gathered.variables) == list(whole.variables), name
    for variable in whole.variables:
        assert gathered[variable].dtype == whole[variable].dtype, (name, variable)
    assert gathered.attrs == whole.attrs, name
    assert gathered.identical(whole), name


def assert_same_folder(whole, gathered):
    names = sorted(path.name for path in whole.iterdir())
    assert sorted(path.name for path in gathered.iterdir()) == names
    for name in names:
        if name.endswith(".nc"):
            assert_same_dataset(read_dataset(whole / name), read_dataset(gathered / name), name)
        else:
            assert (gathered / name).read_bytes() == (whole / name).read_bytes(), name


def _explain_case_command(root, case, out, *extra):
    return cli_main(["explain-case", case, "--model", str(root / "model"), "--data", str(root / "data.nc"),
                     "--out", str(out), "--samples", "4", "--backends", ",".join(CASE_BACKENDS),
                     "--methods", *CASE_METHODS, *extra])


# --- chunk boundaries ----------------------------------------------------------------------------
def test_chunks_are_runs_of_whole_batches_that_hold_every_sample_once():
    for n in range(0, 23):
        for batch_size in (None, 1, 2, 3, 5, 8, 30):
            every = chunks.batches(n, batch_size)
            for count in range(1, 8):
                spans = [Chunk(index, count).rows(n, batch_size) for index in range(1, count + 1)]
                rows = [row for start, stop in spans for row in range(start, stop)]
                assert rows == list(range(n)), (n, batch_size, count)   # each once, in chunk order
                boundaries = {0, n} | {start for start, _ in every}
                assert all(start in boundaries and stop in boundaries for start, stop in spans)
                sizes = [len(Chunk(index, count).batches(n, batch_size)) for index in range(1, count + 1)]
                assert sizes == sorted(sizes, reverse=True) and sizes[0] - sizes[-1] <= 1   # balanced, empty last
                assert spans == [Chunk(index, count).rows(n, batch_size) for index in range(1, count + 1)]


def test_more_chunks_than_batches_leaves_the_last_chunks_empty():
    assert chunks.batches(10, 4) == [(0, 4), (4, 8), (8, 10)]
    assert [Chunk(index, 5).rows(10, 4) for index in range(1, 6)] == [(0, 4), (4, 8), (8, 10), (10, 10), (10, 10)]
    assert [Chunk(index, 3).rows(10, None) for index in range(1, 4)] == [(0, 10), (10, 10), (10, 10)]


@pytest.mark.parametrize("spec, message", [
    ("3", "'3' is not I/N"),
    ("2/4/1", "'2/4/1' is not I/N"),
    ("a/b", "'a/b' is not I/N"),
    ("", "'' is not I/N"),
    ("-1/4", "'-1/4' is not I/N"),
    ("0/4", "chunk 0/4: the chunk number counts from 1 to 4"),
    ("5/4", "chunk 5/4: the chunk number counts from 1 to 4"),
    ("5-of-4", "chunk 5/4: the chunk number counts from 1 to 4"),
    ("1/0", "chunk 1/0: the number of chunks must be at least 1"),
])
def test_a_bad_chunk_spec_is_refused_naming_it(spec, message, capsys):
    with pytest.raises(ChunkError, match=re.escape(message)) as caught:
        Chunk.parse(spec)
    assert isinstance(caught.value, XaibenchError) and isinstance(caught.value, InputError)
    # the command line: a usage error (status 2) with the same message, no traceback
    with pytest.raises(SystemExit) as exited:
        cli_main(["explain-case", "enso", "--model", "m", "--data", "d.nc", "--out", "o", f"--chunk={spec}"])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_chunk_specs_read_both_ways_and_bad_batch_sizes_are_refused():
    assert Chunk.parse("2/4") == Chunk.parse("2-of-4") == Chunk.parse(" 2 / 4 ") == Chunk(2, 4)
    assert str(Chunk(2, 4)) == "2/4"
    for bad in (0, -1, 2.5, True):
        with pytest.raises(InputError, match="batch_size"):
            chunks.batches(10, bad)
    with pytest.raises(ChunkError, match="must be an integer"):
        Chunk(1.0, 2)


# --- the reference cases -------------------------------------------------------------------------
@pytest.mark.parametrize("case, batch_size, count, sizes", [
    ("enso", 3, 4, [3, 3, 2, 0]),        # 8 samples (4 test, 4 real winters): the last chunk is empty
    ("enso", None, 1, [8]),              # the quick configuration: one chunk, one call
    ("radar1", 2, 3, [2, 2, 2]),         # 3 maps x 2 pixels; a region per sample
])
def test_gathered_case_chunks_equal_the_unchunked_run(case, batch_size, count, sizes, enso, radar, tmp_path):
    root = {"enso": enso, "radar1": radar}[case]
    batch = [] if batch_size is None else ["--batch-size", str(batch_size)]
    assert _explain_case_command(root, case, tmp_path / "whole", *batch) == 0
    folders = []
    for index in range(1, count + 1):
        folder = tmp_path / "chunks" / f"{index}-of-{count}"
        assert _explain_case_command(root, case, folder, *batch, "--chunk", f"{index}-of-{count}") == 0
        folders.append(folder)
    # the chunks really split the samples (and an empty one holds only its manifest)
    for folder, size in zip(folders, sizes):
        manifest = json.loads((folder / cases.CHUNK_FILE).read_text())
        assert manifest["rows"][1] - manifest["rows"][0] == size
        if size:
            assert read_dataset(folder / "lrp.epsilon__native.nc").sizes["sample"] == size
        else:
            assert [path.name for path in folder.iterdir()] == [cases.CHUNK_FILE]
    shuffled = random.Random(0).sample(folders, len(folders))   # the gather orders them itself
    assert cli_main(["gather-case", case, "--chunks", *map(str, shuffled), "--out", str(tmp_path / "gathered")]) == 0
    assert_same_folder(tmp_path / "whole", tmp_path / "gathered")
    names = {path.name for path in (tmp_path / "whole").glob("*.nc")}
    expected = {f"{method}__native.nc" for method in CASE_METHODS} | {"smoothgrad__captum.nc", "lrp.zbox__zennit.nc"}
    assert expected <= names


@pytest.mark.tf
def test_gathered_case_chunks_equal_the_unchunked_run_on_innvestigate(enso, tmp_path, innvestigate_worker):
    """innvestigate's SmoothGrad continues its noise stream from call to call (chunks.HISTORY_DEPENDENT):
    each chunk runs it on every batch. Each run here gets a fresh worker, as each job of the workflow does."""
    settings = dict(methods=["lrp.epsilon", "smoothgrad"], backends=["innvestigate"], n_samples=4, batch_size=3)
    cases.explain_case("enso", enso / "model", enso / "data.nc", tmp_path / "whole", **settings)
    folders = []
    for index in (1, 2):
        innvestigate_worker.shutdown()
        folders.append(tmp_path / f"chunk{index}")
        cases.explain_case("enso", enso / "model", enso / "data.nc", folders[-1], chunk=f"{index}/2", **settings)
    innvestigate_worker.shutdown()
    cases.gather_case("enso", folders, tmp_path / "gathered")
    assert_same_folder(tmp_path / "whole", tmp_path / "gathered")
    assert read_dataset(folders[1] / "smoothgrad__innvestigate.nc").sizes["sample"] == 2


def test_a_pair_one_chunk_skipped_is_skipped_in_the_gathered_folder(enso, tmp_path):
    """An unchunked run skips a pair when any batch fails: the gather does the same, with the reason
    of the first chunk that skipped it."""
    settings = dict(methods=["lrp.epsilon", "gradient"], backends=["native", "zennit"], n_samples=4, batch_size=3)
    folders = [tmp_path / f"chunk{index}" for index in (1, 2)]
    for index, folder in enumerate(folders, 1):
        cases.explain_case("enso", enso / "model", enso / "data.nc", folder, chunk=f"{index}/2", **settings)
    (folders[1] / "gradient__zennit.nc").unlink()
    (folders[1] / cases.SKIPPED_FILE).write_text(",".join(cases.SKIPPED_COLUMNS) + "\n"
                                                 "enso,gradient,zennit,error,RuntimeError: broke on batch 3\n")
    written = cases.gather_case("enso", folders, tmp_path / "gathered")
    assert [path.name for path in written] == ["lrp.epsilon__native.nc", "gradient__native.nc",
                                               "lrp.epsilon__zennit.nc", cases.SKIPPED_FILE]
    assert (tmp_path / "gathered" / cases.SKIPPED_FILE).read_text().splitlines()[1] == \
        "enso,gradient,zennit,error,RuntimeError: broke on batch 3"


def test_an_incomplete_or_mixed_gather_is_refused_naming_the_chunk(enso, tmp_path, capsys):
    settings = dict(methods=["lrp.epsilon"], backends=["native"], n_samples=4, batch_size=3)
    folders = [tmp_path / f"chunk{index}" for index in (1, 2, 3)]
    for index, folder in enumerate(folders, 1):
        cases.explain_case("enso", enso / "model", enso / "data.nc", folder, chunk=f"{index}/3", **settings)
    out = tmp_path / "gathered"
    with pytest.raises(ChunkError, match=r"chunk\(s\) 2/3 missing"):
        cases.gather_case("enso", [folders[0], folders[2]], out)
    with pytest.raises(ChunkError, match="chunk 1/3 given twice"):
        cases.gather_case("enso", [folders[0], folders[0], folders[1], folders[2]], out)
    with pytest.raises(ChunkError, match="is a chunk of case 'enso', not radar1"):
        cases.gather_case("radar1", folders, out)
    other = tmp_path / "other"   # the same chunk of a run in batches of 2
    cases.explain_case("enso", enso / "model", enso / "data.nc", other, chunk="2/3",
                       **{**settings, "batch_size": 2})
    with pytest.raises(ChunkError, match="chunks of different runs: their batch_size differ"):
        cases.gather_case("enso", [folders[0], other, folders[2]], out)
    halves = tmp_path / "halves"   # chunk 2 of a split into two
    cases.explain_case("enso", enso / "model", enso / "data.nc", halves, chunk="2/2", **settings)
    with pytest.raises(ChunkError, match=f"chunks of different splits: {folders[0]} is 1/3, {halves} is 2/2"):
        cases.gather_case("enso", [folders[0], halves, folders[2]], out)
    broken = tmp_path / "broken"
    shutil.copytree(folders[1], broken)
    (broken / "lrp.epsilon__native.nc").unlink()
    with pytest.raises(ChunkError, match="neither explained nor skipped lrp.epsilon on native"):
        cases.gather_case("enso", [folders[0], broken, folders[2]], out)
    (broken / cases.CHUNK_FILE).unlink()
    with pytest.raises(ChunkError, match="not a finished chunk: it has no chunk.json"):
        cases.gather_case("enso", [folders[0], broken, folders[2]], out)
    assert not out.exists()
    # the command: one line naming the problem, status 1, no traceback
    assert cli_main(["gather-case", "enso", "--chunks", str(folders[0]), str(folders[2]), "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert "xaibench gather-case: error: ChunkError: chunk(s) 2/3 missing" in err and "Traceback" not in err


# --- the ground-truth benchmark ------------------------------------------------------------------
def _groundtruth_command(root, out, *extra):
    return cli_main(["groundtruth", "explain", "--model", str(root / "model"), "--data", str(root / "data.nc"),
                     "--out", str(out), "--samples", "12", "--backends", "native,zennit,captum",
                     "--methods", *GROUNDTRUTH_METHODS, *extra])


@pytest.mark.parametrize("batch_size, count, sizes", [(5, 4, [5, 5, 2, 0]), (None, 1, [12])])
def test_gathered_groundtruth_chunks_equal_the_unchunked_run(groundtruth, tmp_path, batch_size, count, sizes):
    batch = [] if batch_size is None else ["--batch-size", str(batch_size)]
    assert _groundtruth_command(groundtruth, tmp_path / "relevance.nc", *batch) == 0
    files = []
    for index in range(1, count + 1):
        files.append(tmp_path / f"relevance_{index}-of-{count}.nc")
        assert _groundtruth_command(groundtruth, files[-1], *batch, "--chunk", f"{index}-of-{count}") == 0
    assert [read_dataset(path).sizes.get("sample", 0) for path in files] == sizes
    shuffled = random.Random(1).sample(files, len(files))
    assert cli_main(["groundtruth", "gather", "--chunks", *map(str, shuffled), "--out",
                     str(tmp_path / "gathered.nc")]) == 0
    whole, gathered = read_dataset(tmp_path / "relevance.nc"), read_dataset(tmp_path / "gathered.nc")
    # everything bit for bit except the wall time of each explanation, summed over the chunks
    assert_same_dataset(whole, gathered, "relevance.nc", ignore=["seconds"])
    assert gathered["seconds"].dims == whole["seconds"].dims and gathered["seconds"].attrs == whole["seconds"].attrs
    assert (gathered["seconds"].values > 0).all()
    assert set(whole["backend"].values.tolist()) == {"native", "zennit", "captum"}
    assert set(whole["model"].values.tolist()) == {"trained", "true_function"}


@pytest.mark.tf
def test_gathered_groundtruth_chunks_equal_the_unchunked_run_on_innvestigate(groundtruth, tmp_path,
                                                                            innvestigate_worker):
    settings = dict(n_samples=6, methods=["smoothgrad", "lrp.epsilon"], backends=["innvestigate"],
                    true_function=False, batch_size=2)
    explain_benchmark(groundtruth / "model", groundtruth / "data.nc", tmp_path / "relevance.nc", **settings)
    files = []
    for index in (1, 2):
        innvestigate_worker.shutdown()
        files.append(tmp_path / f"relevance_{index}.nc")
        explain_benchmark(groundtruth / "model", groundtruth / "data.nc", files[-1], chunk=f"{index}/2", **settings)
    innvestigate_worker.shutdown()
    gather_benchmark(files, tmp_path / "gathered.nc")
    assert_same_dataset(read_dataset(tmp_path / "relevance.nc"), read_dataset(tmp_path / "gathered.nc"),
                        "relevance.nc", ignore=["seconds"])


def test_a_groundtruth_gather_of_other_files_is_refused(groundtruth, tmp_path):
    settings = dict(n_samples=6, methods=["gradient"], backends=["native"], true_function=False, batch_size=2)
    files = [tmp_path / f"relevance_{index}.nc" for index in (1, 2)]
    for index, path in enumerate(files, 1):
        explain_benchmark(groundtruth / "model", groundtruth / "data.nc", path, chunk=f"{index}/2", **settings)
    explain_benchmark(groundtruth / "model", groundtruth / "data.nc", tmp_path / "whole.nc", **settings)
    with pytest.raises(ChunkError, match="whole.nc is not a chunk"):
        gather_benchmark([files[0], tmp_path / "whole.nc"], tmp_path / "gathered.nc")
    with pytest.raises(ChunkError, match=r"chunk\(s\) 2/2 missing"):
        gather_benchmark([files[0]], tmp_path / "gathered.nc")
    explain_benchmark(groundtruth / "model", groundtruth / "data.nc", tmp_path / "other.nc", chunk="2/2",
                      **{**settings, "n_samples": 8})
    with pytest.raises(ChunkError, match="different runs: their chunk_samples differ"):
        gather_benchmark([files[0], tmp_path / "other.nc"], tmp_path / "gathered.nc")
    assert not (tmp_path / "gathered.nc").exists()
    np.testing.assert_array_equal(read_dataset(files[1])["sample"].values,
                                  read_dataset(tmp_path / "whole.nc")["sample"].values[4:])   # 3 batches: 2 + 1
