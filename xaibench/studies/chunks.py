"""Chunks of an explanation step: how the reference cases (`xaibench explain-case --chunk I/N`)
and the ground-truth benchmark (`xaibench groundtruth explain --chunk I/N`) scatter their samples
over several jobs, one GPU job each on a cluster (workflows/profiles/slurm), and what their
gather steps (`xaibench gather-case`, `xaibench groundtruth gather`) check.

Identical to one job by construction, not by luck. A batched computation's last bits depend on
the batch it runs in: BLAS and cuDNN pick their kernels by the batch's size (measured here with
MKL: rows of a 75-sample batch through one Linear layer differ from the same rows of a
300-sample batch by 2e-15 in float64). So the unit of work is the batch: `batch_size` samples of
the selection in order (the last one shorter; None: all of them in one call), the same in every
run, and a chunk is a run of whole batches. Every explanation call then gets exactly the input
it gets in an unchunked run, and the gathered files equal the unchunked files bit for bit (on
the same machine with the same threads). `batch_size` changes bits; the number of chunks does not.

    Chunk.parse("2/4") -> Chunk(index=2, count=4)    (Snakemake's scatter item "2-of-4" too)
    batches(n, batch_size)        [(start, stop)] of the n samples, in order
    Chunk.batches(n, batch_size)  the batches of this chunk; Chunk.rows(n, batch_size): its rows
    in_order(chunks, names)       the chunks of one split, each once: their positions in order
    explain_in_batches(explain, batches), take_rows(explanation, start, stop)
    runs_whole(method, backend)   the pairs a chunk explains on every batch (below)

Batches go to chunks like numpy.array_split: contiguous, in order, the first (batches mod count)
chunks one batch more. More chunks than batches leaves the last chunks empty, and that is not
an error: how many samples a case explains (its correctly classified El Nino maps, say) is known
only when the job runs, never when the workflow is planned, so an empty chunk writes that it is
empty and the gather passes over it.

One pair depends on the calls before it, not only on its batch: innvestigate's SmoothGrad draws
its noise from a TensorFlow random op seeded once per model graph, so each call continues the
stream of the calls before it (HISTORY_DEPENDENT). A chunk runs such a pair on every batch, in the
unchunked order, and keeps its own rows. Native SmoothGrad (a generator seeded per call) and
captum's (torch's generator seeded per call) depend on their batch only.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from xaibench.errors import ChunkError, InputError
from xaibench.explanation import Explanation

#: (method, backend) pairs whose result for a batch depends on the calls made before it
HISTORY_DEPENDENT = {
    ("smoothgrad", "innvestigate"): "innvestigate's SmoothGrad noise comes from a TensorFlow random op seeded once "
                                    "per model graph: each call continues the stream of the calls before it",
}
_SPEC = re.compile(r"^\s*(\d+)\s*(?:/|-of-)\s*(\d+)\s*$")


@dataclass(frozen=True, order=True)
class Chunk:
    """Chunk `index` of `count` (both counted from 1, as Snakemake's scatter items are)."""

    index: int
    count: int

    def __post_init__(self):
        for name in ("index", "count"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise ChunkError(f"chunk {name} must be an integer, got {value!r}")
        if self.count < 1:
            raise ChunkError(f"chunk {self.index}/{self.count}: the number of chunks must be at least 1")
        if not 1 <= self.index <= self.count:
            raise ChunkError(f"chunk {self.index}/{self.count}: the chunk number counts from 1 to {self.count}")

    @classmethod
    def parse(cls, spec) -> Chunk:
        """'I/N' (or Snakemake's scatter item 'I-of-N'): chunk I of N, I from 1 to N."""
        if isinstance(spec, Chunk):
            return spec
        match = _SPEC.match(str(spec))
        if match is None:
            raise ChunkError(f"chunk {spec!r} is not I/N (e.g. 2/4, the second of four chunks)")
        return cls(int(match.group(1)), int(match.group(2)))

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"

    def batches(self, n: int, batch_size: int | None) -> list[tuple[int, int]]:
        """This chunk's batches of the n samples: a contiguous run, possibly empty (module docstring)."""
        every = batches(n, batch_size)
        first, size = self._span(len(every))
        return every[first:first + size]

    def rows(self, n: int, batch_size: int | None) -> tuple[int, int]:
        """(start, stop) of this chunk's samples; start == stop for an empty chunk."""
        every = batches(n, batch_size)
        first, size = self._span(len(every))
        if size:
            return every[first][0], every[first + size - 1][1]
        start = every[first][0] if first < len(every) else n   # empty: where its rows would begin
        return start, start

    def _span(self, n_batches: int) -> tuple[int, int]:
        """(first batch, number of batches) of this chunk: numpy.array_split's shares."""
        share, extra = divmod(n_batches, self.count)
        position = self.index - 1
        return position * share + min(position, extra), share + (position < extra)


def batches(n: int, batch_size: int | None) -> list[tuple[int, int]]:
    """[(start, stop)] of n samples in batches of batch_size (None: one batch of all n)."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise InputError(f"the number of samples must be a non-negative integer, got {n!r}")
    if batch_size is not None and (isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1):
        raise InputError(f"batch_size must be None or a positive integer, got {batch_size!r}")
    step = batch_size or max(n, 1)
    return [(start, min(start + step, n)) for start in range(0, n, step)]


def runs_whole(method: str, backend: str) -> bool:
    """Whether a chunk must explain this pair on every batch (HISTORY_DEPENDENT) to get the rows
    an unchunked run gets."""
    return (method, backend) in HISTORY_DEPENDENT


def in_order(chunks: Sequence[Chunk], names: Sequence[str]) -> list[int]:
    """Positions of `chunks` sorted by chunk number, after checking that they are the chunks
    1..N of one split, each given once; `names` (the files or folders) go into the messages."""
    if not chunks:
        raise ChunkError("no chunks given")
    counts = {chunk.count for chunk in chunks}
    if len(counts) > 1:
        listed = ", ".join(f"{name} is {chunk}" for chunk, name in zip(chunks, names))
        raise ChunkError(f"chunks of different splits: {listed}")
    count = counts.pop()
    seen: dict[int, str] = {}
    for chunk, name in zip(chunks, names):
        if chunk.index in seen:
            raise ChunkError(f"chunk {chunk} given twice: {seen[chunk.index]} and {name}")
        seen[chunk.index] = name
    missing = [f"{index}/{count}" for index in range(1, count + 1) if index not in seen]
    if missing:
        raise ChunkError(f"chunk(s) {', '.join(missing)} missing: the gather needs all {count} "
                         f"(given: {', '.join(str(chunk) for chunk in sorted(chunks))})")
    return sorted(range(len(chunks)), key=lambda position: chunks[position].index)


def explain_in_batches(explain: Callable[[int, int], Explanation], spans: Sequence[tuple[int, int]]) -> Explanation:
    """One Explanation of the rows of `spans`: explain(start, stop) per batch, the per-sample
    tensors concatenated (several batches: no ledger, one per batch would not be one ledger;
    conservation_error is kept)."""
    parts = [explain(start, stop) for start, stop in spans]
    if not parts:
        raise InputError("no batches to explain")
    first = parts[0]
    if len(parts) == 1:
        return first
    first.relevance = torch.cat([part.relevance for part in parts])
    first.output = torch.cat([part.output for part in parts])
    targets = [torch.as_tensor(part.target) for part in parts]
    if all(target.dim() > 0 for target in targets):
        first.target = torch.cat(targets)
    if first.conservation_error is not None:
        first.conservation_error = torch.cat([part.conservation_error for part in parts])
    first.ledger = None
    return first


def take_rows(explanation: Explanation, start: int, stop: int) -> Explanation:
    """The explanation of rows start:stop of the batch it explains (a chunk's rows of a pair it
    ran whole); the ledger, which is per batch, is dropped."""
    rows = explanation.output.shape[0]
    explanation.relevance = explanation.relevance[start:stop]
    explanation.output = explanation.output[start:stop]
    target = torch.as_tensor(explanation.target)
    if target.dim() > 0 and target.shape[0] == rows:
        explanation.target = target[start:stop]
    if explanation.conservation_error is not None:
        explanation.conservation_error = explanation.conservation_error[start:stop]
    explanation.ledger = None
    return explanation
