"""The run's scheduled changes: passes of the middle-range loop, QAT, and the training length.

``clock.PhaseSwitch`` decides (on every rank alike) when a switch is due; ``Phases`` applies it to the
model, logs it, and keeps what a checkpoint must carry to resume in the same phase. Passes turn on
together at ``train.loop_from_frac``, or one by one at ``train.loop_pass_fracs`` (progressive
recurrence, PR #1412); the length follows ``train.seq_len_schedule`` (progressive context, PR #2014)
and is only logged here, since ``TrainConfig.seq_len_at`` gives it from the agreed progress.
"""

from __future__ import annotations

from pgolf.config.run import RunConfig
from pgolf.model.gpt import GPT, loop_passes
from pgolf.quant.qat import enable_qat
from pgolf.runlog import RunLog
from pgolf.train.clock import Decision, PhaseSwitch


class Phases:
    def __init__(self, cfg: RunConfig, model: GPT, log: RunLog) -> None:
        self.cfg, self.model, self.log = cfg, model, log
        self.qat_on = False
        self.seq_len = 0
        """The last logged training length (0: none yet)."""

    def next_loop_frac(self) -> float | None:
        """The fraction of the run at which the next loop pass turns on (None: all are on)."""
        passes, fracs = self.model.loop_passes, self.cfg.train.pass_fracs
        if passes >= self.cfg.model.loop_repeats:
            return None
        return fracs[passes] if fracs else self.cfg.train.loop_from_frac

    def decide(self, switch: PhaseSwitch, step: int, elapsed: float) -> Decision:
        """Stop at the cap, or switch the next loop pass or QAT on, for the step about to start."""
        qat_next = self.cfg.quant.qat_from_frac if self.cfg.quant.qat and not self.qat_on else None
        decision = switch.decide(step, elapsed, self.next_loop_frac(), qat_next)
        if decision.qat:
            self.qat_on = True
            n = enable_qat(self.model, self.cfg.quant)
            self.log.event("qat", f"qat:on step:{step} matrices:{n}", step=step, matrices=n)
        if decision.loop:
            m = self.model
            m.loop_passes = m.loop_passes + 1 if self.cfg.train.pass_fracs else self.cfg.model.loop_repeats
            depth = len(m.layer_order())
            self.log.event(
                "loop", f"looping:on passes:{m.loop_passes} step:{step} virtual_layers:{depth}",
                step=step, passes=m.loop_passes, depth=depth,
            )  # fmt: skip
        if not decision.stop and self.cfg.train.seq_len_schedule:
            seq_len = self.cfg.train.seq_len_at(decision.progress)
            if seq_len != self.seq_len:
                self.seq_len = seq_len
                self.log.event("context", f"seq_len:{seq_len} step:{step}", step=step, seq_len=seq_len)
        return decision

    def passes_at(self, progress: float) -> int:
        """Loop passes on at ``progress`` by the schedule."""
        tc, repeats = self.cfg.train, self.cfg.model.loop_repeats
        if tc.pass_fracs:
            return sum(f <= progress for f in tc.pass_fracs)
        return repeats if repeats and progress >= tc.loop_from_frac else 0

    def priming_plan(self) -> list[tuple[float, int]]:
        """(progress, loop passes) at the start of each distinct (length, passes) phase of the run, in
        order: the graphs a compiled model will trace (QAT's switch is not primed)."""
        tc = self.cfg.train
        starts = {0.0, *(until for _, until in tc.seq_schedule[:-1]), *tc.pass_fracs}
        if self.cfg.model.loop_repeats and not tc.pass_fracs:
            starts.add(tc.loop_from_frac)
        plan, seen = [], set()
        for p in sorted(starts):
            key = (tc.seq_len_at(p), self.passes_at(p))
            if key not in seen:
                seen.add(key)
                plan.append((p, key[1]))
        return plan

    def state(self) -> dict:
        return {"looping": self.model.loop_passes, "qat": self.qat_on}

    def load_state(self, state: dict) -> None:
        self.model.loop_passes = loop_passes(state["looping"], self.cfg.model.loop_repeats)
        self.qat_on = bool(state["qat"])
        if self.qat_on:
            enable_qat(self.model, self.cfg.quant)
