"""The training clock and every decision taken from it.

``TrainClock`` counts training time in ms: it runs from construction and is paused around
validation and checkpoints (as in the contest), so only steps and their data reads count. ``sync``
(a CUDA synchronize on GPU) makes queued device work count: the trainer reads the clock through it
once per step, before deciding whether the next step fits (an unsynchronised reading lags by the
queued steps, so the last one could end past the cap); ``now`` is the time source
(``time.perf_counter``; tests pass a fake one).

``PhaseSwitch.decide`` is called before each step and takes, together with the other ranks and in
one all-reduce (none when there is nothing to decide), every decision that depends on time: stop at
the wall-clock cap, switch the next pass of the middle-range loop on at its fraction of the budget
(``train.loop_from_frac`` or ``train.loop_pass_fracs``), and switch QAT on at ``quant.qat_from_frac``.
The same all-reduce agrees on the elapsed time (the ranks' maximum), so everything scheduled from it
(LR, weight-decay taper, sequence length) is identical on every rank.

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


@dataclass(frozen=True)
class Decision:
    stop: bool
    """Stop before this step."""
    loop: bool
    """Switch the next pass of the middle-range loop on."""
    qat: bool
    """Switch QAT on."""
    elapsed_ms: float
    """Training time so far, the same on every rank."""
    progress: float
    """Fraction of the run used: of the wall-clock cap, else of the steps."""


@dataclass
class PhaseSwitch:
    cap_ms: float
    """Training-time cap (0: none)."""
    iterations: int
    device: torch.device
    last_step_ms: float = 0.0

    def progress(self, step: int, elapsed_ms: float) -> float:
        return elapsed_ms / self.cap_ms if self.cap_ms else step / self.iterations

    def decide(
        self, step: int, elapsed_ms: float, loop_next: float | None = None, qat_next: float | None = None
    ) -> Decision:
        """The decisions for the step about to start (``step`` steps are done); ``loop_next`` and
        ``qat_next`` are the fractions of the run at which the next loop pass and QAT turn on (None:
        nothing pending)."""
        if not self.cap_ms and loop_next is None and qat_next is None:
            return Decision(False, False, False, elapsed_ms, self.progress(step, elapsed_ms))
        predicted = max(elapsed_ms / step, self.last_step_ms) if step else 0.0
        progress = self.progress(step, elapsed_ms)
        stop, start_loop, start_qat, agreed = dist.max_over_ranks(
            (
                bool(self.cap_ms) and elapsed_ms + STOP_MARGIN * predicted > self.cap_ms,
                loop_next is not None and progress >= loop_next,
                qat_next is not None and progress >= qat_next,
                elapsed_ms,
            ),
            self.device,
        )
        stop = bool(stop)
        loop, qat = bool(start_loop) and not stop, bool(start_qat) and not stop
        return Decision(stop, loop, qat, agreed, self.progress(step, agreed))
