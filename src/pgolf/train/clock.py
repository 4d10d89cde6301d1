"""The training clock and every decision taken from it.

``TrainClock`` counts training time in ms: it runs from construction and is paused around
validation and checkpoints (as in the contest), so only steps and their data reads count. ``sync``
(a CUDA synchronize on GPU) makes queued device work count before each reading; ``now`` is the time
source (``time.perf_counter``; tests pass a fake one).

``PhaseSwitch.decide`` is called before each step and takes, together with the other ranks and in
one all-reduce (none when there is nothing to decide), every decision that depends on time: stop at
the wall-clock cap, switch the middle-range loop on once ``train.loop_from_frac`` of the budget is
used, and switch QAT on at ``quant.qat_from_frac``.

The cap is strict, as the contest's reviewers enforced it (runs that ended at 601-602 s of a 600 s
cap were called out; sota-stack §3.2): a step is started only if ``STOP_MARGIN`` times the larger
of the mean and the last step time still fits before the cap. A step that is slower than that
still overshoots, and the run is then judged off track (``tracks.Track.judge_train``), never hidden.
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
        return self.ms + 1000 * (self.now() - self.t0)

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
class PhaseSwitch:
    cap_ms: float
    """Training-time cap (0: none)."""
    iterations: int
    loop_from_frac: float
    device: torch.device
    qat_from_frac: float = 0.0
    last_step_ms: float = 0.0

    def decide(
        self, step: int, elapsed_ms: float, loop_pending: bool, qat_pending: bool = False
    ) -> tuple[bool, bool, bool]:
        """(stop now, switch the loop on now, switch QAT on now) for the step about to start;
        ``step`` steps are done."""
        if not self.cap_ms and not loop_pending and not qat_pending:
            return False, False, False
        predicted = max(elapsed_ms / step, self.last_step_ms) if step else 0.0
        progress = elapsed_ms / self.cap_ms if self.cap_ms else step / self.iterations
        stop, start_loop, start_qat = dist.any_rank(
            (
                bool(self.cap_ms) and elapsed_ms + STOP_MARGIN * predicted > self.cap_ms,
                loop_pending and progress >= self.loop_from_frac,
                qat_pending and progress >= self.qat_from_frac,
            ),
            self.device,
        )
        return stop, start_loop and not stop, start_qat and not stop
