"""The progress prefix of the long batch jobs (xaibench/progress.py) and its use in the census and zoo logs."""

import re

import pytest

from xaibench.progress import Progress, duration
from xaibench.studies.census import agreement as census
from xaibench.studies.census import zoo


def test_the_prefix_counts_and_estimates_the_time_left_from_the_mean_so_far():
    now = [100.0]
    progress = Progress(4, clock=lambda: now[0])
    now[0] += 30.0
    assert progress.step() == "[1/4  25 %, about 1 min 30 s left]"
    now[0] += 30.0
    assert progress.step(2) == "[3/4  75 %, about 20 s left]"
    assert progress.step() == "[4/4 100 %]"
    assert progress.step() == "[4/4 100 %]"          # never past the total


def test_durations_read_as_a_person_would_write_them():
    shown = [duration(seconds) for seconds in (0.4, 59, 90, 3599, 7500)]
    assert shown == ["0 s", "59 s", "1 min 30 s", "59 min 59 s", "2 h 05 min"]
    with pytest.raises(ValueError, match="total must be >= 0"):
        Progress(-1)


def _counted(lines):
    return [tuple(map(int, m.groups())) for m in (re.match(r"\[\s*(\d+)/(\d+)", line) for line in lines) if m]


def test_every_census_row_in_the_log_says_how_far_the_census_is():
    lines = []
    census.run_census(None, settings=census.Settings(models=("dense",), n_samples=2, smoothgrad_samples=2,
                                                      integrated_gradients_steps=2),
                      backends=("native", "zennit"), methods=["lrp.epsilon", "gradient"], log=lines.append)
    counted = _counted(lines)
    total = counted[-1][1]
    assert counted == [(k, total) for k in range(1, total + 1)] and total >= 4


def test_every_zoo_row_in_the_log_says_how_far_the_zoo_is():
    lines = []
    zoo.run_zoo(None, settings=zoo.ZooSettings(("two_branch",), integrated_gradients_steps=2),
                backends=("native", "zennit"), methods=["lrp.epsilon", "gradient"], log=lines.append)
    counted = _counted(lines)
    total = counted[-1][1]
    assert counted == [(k, total) for k in range(1, total + 1)] and total >= 2
