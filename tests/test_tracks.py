"""Track verdicts: every cap, both ways, and the debug track that judges nothing."""

import math

import pytest

from pgolf.config import TrainConfig
from pgolf.errors import ConfigError
from pgolf.tracks import get_track

CPU = get_track("cpu-5min-2mb")


def test_training_time_verdicts():
    assert CPU.judge_train(300.0, 299.9) == []
    assert CPU.judge_train(300.0, 300.0) == []  # the cap itself is allowed
    (over,) = CPU.judge_train(300.0, 300.01)
    assert "training took 300.01 s, over the 300 s cap" in over
    (uncapped,) = CPU.judge_train(0.0, 10.0)
    assert "train.max_wallclock_seconds=0 is not within" in uncapped
    assert len(CPU.judge_train(301.0, 301.5)) == 2


def test_eval_and_byte_verdicts():
    assert CPU.judge_eval(300.0) == [] and CPU.judge_bytes(2_000_000) == []
    assert "evaluation took 300.50 s, over the cpu-5min-2mb track's 300 s cap" in CPU.judge_eval(300.5)[0]
    assert "over the cpu-5min-2mb track's 2,000,000 byte cap by 1" in CPU.judge_bytes(2_000_001)[0]


def test_the_debug_track_judges_nothing_and_is_not_official():
    debug = get_track("debug")
    assert not debug.official and CPU.official and get_track("10min-16mb").official
    assert debug.judge_train(0.0, 1e9) == debug.judge_eval(1e9) == debug.judge_bytes(10**12) == []


@pytest.mark.parametrize("value", [math.nan, -1.0])
def test_a_cap_that_cannot_be_judged_is_refused(value):
    with pytest.raises(ConfigError, match=r"train\.max_wallclock_seconds must be >= 0"):
        TrainConfig(max_wallclock_seconds=value)
