"""Progress of long work, in the two forms a reader meets it.

Progress: a line prefix for batch jobs, ``[12/48  25 %, about 1 min 30 s left]``.

Census, zoo and the other batch jobs log one line per unit of work into Snakemake's log files,
where a redrawn bar would be noise; a counter with the estimate of the time left reads the same
in a log file and on a terminal.

    progress = Progress(total=len(work))
    for item in work:
        result = run(item)
        log(f"{progress.step()} {item}: {result}")

TerminalProgress: one line on stderr, ``[3/35] lrp.epsilon: randomization layer 2/5``, rewritten in
place and shown only when stderr is a terminal (xaibench validate, whose summary goes to stdout).
"""

from __future__ import annotations

import shutil
import sys
import time
from collections.abc import Callable


def duration(seconds: float) -> str:
    """A short human duration: '8 s', '1 min 30 s', '2 h 05 min'."""
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {seconds:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


class Progress:
    """Counts finished units out of ``total`` and estimates the time left from the mean so far."""

    def __init__(self, total: int, clock: Callable[[], float] = time.perf_counter):
        if total < 0:
            raise ValueError(f"a progress total must be >= 0, got {total}")
        self.total = total
        self.done = 0
        self._clock = clock
        self._started = clock()

    def step(self, units: int = 1) -> str:
        """Count ``units`` more as finished; the prefix for the line that reports them."""
        self.done = min(self.total, self.done + units)
        width = len(str(self.total))
        share = 100 * self.done / self.total if self.total else 100.0
        text = f"[{self.done:{width}d}/{self.total} {share:3.0f} %"
        if 0 < self.done < self.total:
            elapsed = self._clock() - self._started
            text += f", about {duration(elapsed / self.done * (self.total - self.done))} left"
        return text + "]"


class TerminalProgress:
    """'[k/N] what' on stderr, rewritten in place, only when stderr is a terminal (a pipe, a log
    file or a test's capture gets nothing); stdout, where the summary goes, is never touched."""

    def __init__(self, total: int, stream=None):
        self.stream = sys.stderr if stream is None else stream
        self.total, self.done, self.shown = total, 0, False
        isatty = getattr(self.stream, "isatty", None)
        try:
            self.enabled = bool(isatty and isatty())
        except (ValueError, OSError):   # a closed stream
            self.enabled = False

    def step(self, text: str):
        """Announce the next piece of work."""
        self.done += 1
        if self.enabled:
            width = max(shutil.get_terminal_size().columns - 1, 20)
            self.stream.write("\r\x1b[K" + f"[{min(self.done, self.total)}/{self.total}] {text}"[:width])
            self.stream.flush()
            self.shown = True

    def close(self):
        """Clear the progress line."""
        if self.enabled and self.shown:
            self.stream.write("\r\x1b[K")
            self.stream.flush()
            self.shown = False
