"""The training clock and the decision to stop at the cap.

``TrainClock`` counts training time in ms: it runs from construction and is paused around
validation and checkpoints (as in the contest), so only steps and their data reads count. ``sync``
(a CUDA synchronize on GPU) makes queued device work count: with a cap the trainer reads the clock
through it once per step, before deciding whether the next step fits (an unsynchronised reading lags
by the queued steps, so the last one could end past the cap); ``now`` is the time source
(``time.perf_counter``; tests pass a fake one).

``StopRule.decide`` is called before each step and decides, together with the other ranks and in one
all-reduce (none without a cap), whether to stop at the wall-clock cap; the same all-reduce agrees on
the elapsed time (the ranks' maximum), from which ``schedule.Schedule`` takes every other decision
(LR, weight-decay taper, length, loop passes, QAT), so they are identical on every rank. Without a
cap the schedule follows the steps alone and no decision reads the time.

The cap is strict, as the contest's reviewers enforced it (runs that ended at 601-602 s of a 600 s
cap were called out; sota-stack §3.2): a step is started only if ``STOP_MARGIN`` times the larger
of the mean and the last step time still fits before the cap. A step that is slower than that
still overshoots, and the run is then judged off track (``tracks.Track.judge``), never hidden.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

from pgolf import dist

STOP_MARGIN = 1.5
"""Start a step only if this many predicted step times fit before the cap."""


class TrainClock:
    def __init__(self, ms: float, sync: Callable[[], None], now: Callable[[], float] = time.perf_counter):
        self.ms, self.sync, self.now = ms, sync, now
        self.sync()
        self.t0 = self.now()

    def elapsed_ms(self) -> float:
        """Time so far as the host sees it: on CUDA the host runs ahead of the device, so this lags
        by the work still queued (for logs and progress bars, not for decisions)."""
        return self.ms + 1000 * (self.now() - self.t0)

    def read(self) -> float:
        """Time so far with queued device work counted (one device sync): what decisions use."""
        self.sync()
        return self.elapsed_ms()

    def stop(self) -> float:
        self.sync()
        self.ms = self.elapsed_ms()
        return self.ms

    @contextlib.contextmanager
    def paused(self):
        self.stop()
        yield
        self.t0 = self.now()


@dataclass
class StopRule:
    cap_ms: float
    """Where the steps must end (0: no cap, nothing to decide)."""
    device: torch.device
    last_step_ms: float = 0.0
    """The last step's time as this rank saw it (``decide`` measures it between its calls)."""
    previous_ms: float | None = None
    """This rank's reading at the last call (None: none yet)."""

    def decide(self, step: int, elapsed_ms: float) -> tuple[bool, float]:
        """Whether to stop before the step about to start (``step`` steps done, ``elapsed_ms`` this
        rank's clock), and the training time the ranks agree on (their maximum), in one all-reduce."""
        if not self.cap_ms:
            return False, elapsed_ms
        if self.previous_ms is not None:
            self.last_step_ms = elapsed_ms - self.previous_ms
        self.previous_ms = elapsed_ms
        predicted = max(elapsed_ms / step, self.last_step_ms) if step else 0.0
        stop, agreed = dist.max_over_ranks(
            (elapsed_ms + STOP_MARGIN * predicted > self.cap_ms, elapsed_ms), self.device
        )
        return bool(stop), agreed
