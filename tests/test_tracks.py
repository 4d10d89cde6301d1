"""Track verdicts: every cap, both ways, and the debug track that judges nothing."""

import math

import pytest

from pgolf.config import TrainConfig
from pgolf.errors import ConfigError
from pgolf.tracks import get_track

CPU = get_track("cpu-5min-2mb")


def test_training_time_verdicts():
    assert CPU.judge(train_cap_seconds=300.0, train_seconds=299.9) == []
    assert CPU.judge(train_cap_seconds=300.0, train_seconds=300.0) == []  # the cap itself is allowed
    (over,) = CPU.judge(train_cap_seconds=300.0, train_seconds=300.01)
    assert "training took 300.01 s, over the 300 s cap" in over
    (uncapped,) = CPU.judge(train_cap_seconds=0.0, train_seconds=10.0)
    assert "train.max_wallclock_seconds=0 is not within the cpu-5min-2mb track's 300 s" in uncapped
    assert "not within" in CPU.judge(train_cap_seconds=300.5)[0]  # the configured cap alone (plan)
    assert CPU.judge(train_seconds=301.0) == ["training took 301.00 s, over the 300 s cap"]
    assert len(CPU.judge(train_cap_seconds=301.0, train_seconds=301.5)) == 2


def test_eval_and_byte_verdicts():
    assert CPU.judge(eval_seconds=300.0) == [] and CPU.judge(total_bytes=2_000_000) == []
    (slow,) = CPU.judge(eval_seconds=300.5)
    assert "evaluation took 300.50 s, over the cpu-5min-2mb track's 300 s cap" in slow
    (big,) = CPU.judge(total_bytes=2_000_001)
    assert "artifact + code is 2,000,001 bytes, over the cpu-5min-2mb track's 2,000,000 byte cap by 1" in big


def test_the_official_data_verdict_holds_on_every_track():
    """Reading validation targets (eval.val_leak) is off track everywhere, debug included."""
    leak = ["val_leak: the evaluation read validation targets"]
    assert CPU.judge(val_leak=True) == get_track("debug").judge(val_leak=True) == leak
    assert CPU.judge(val_leak=False) == []


def test_the_verdict_judges_only_what_it_is_given_in_one_order():
    assert CPU.judge() == []  # nothing measured, nothing judged
    assert CPU.judge(train_cap_seconds=300.0, train_seconds=1.0, eval_seconds=1.0, total_bytes=1) == []
    every = CPU.judge(
        train_cap_seconds=400.0, train_seconds=400.0, eval_seconds=400.0, total_bytes=3_000_000, val_leak=True
    )
    assert [r.split()[0] for r in every] == [
        "train.max_wallclock_seconds=400",
        "training",
        "evaluation",
        "artifact",
        "val_leak:",
    ]


def test_the_debug_track_judges_nothing_and_is_not_official():
    debug = get_track("debug")
    assert not debug.official and CPU.official and get_track("10min-16mb").official
    assert debug.judge(train_cap_seconds=0.0, train_seconds=1e9, eval_seconds=1e9, total_bytes=10**12) == []


@pytest.mark.parametrize("value", [math.nan, -1.0])
def test_a_cap_that_cannot_be_judged_is_refused(value):
    with pytest.raises(ConfigError, match=r"train\.max_wallclock_seconds must be >= 0"):
        TrainConfig(max_wallclock_seconds=value)
