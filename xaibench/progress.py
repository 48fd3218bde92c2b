"""Progress of long loops as a line prefix: ``[12/48  25 %, about 1 min 30 s left]``.

Census, zoo and the other batch jobs log one line per unit of work into Snakemake's log files,
where a redrawn bar would be noise; a counter with the estimate of the time left reads the same
in a log file and on a terminal.

    progress = Progress(total=48)
    for item in work:
        ...
        log(f"{progress.step()} {item}")
"""

from __future__ import annotations

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
