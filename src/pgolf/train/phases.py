"""The run's scheduled changes applied: passes of the middle-range loop, QAT, and the training length.

``schedule.Schedule`` decides each step's passes, QAT and length (``StepPlan``); ``Phases.apply`` sets
the model to the plan, logs every change, and keeps what a checkpoint must carry to resume in the same
phase. The length is only logged here: the trainer reads its batches at ``plan.seq_len``.
"""

from __future__ import annotations

from pgolf.config.run import RunConfig
from pgolf.model.gpt import GPT, loop_passes
from pgolf.quant.qat import enable_qat
from pgolf.runlog import RunLog
from pgolf.train.schedule import StepPlan


class Phases:
    def __init__(self, cfg: RunConfig, model: GPT, log: RunLog) -> None:
        self.cfg, self.model, self.log = cfg, model, log
        self.qat_on = False
        self.seq_len = 0
        """The last logged training length (0: none yet)."""

    def apply(self, plan: StepPlan) -> None:
        """Switch QAT and the loop passes to ``plan``'s, logging each change and the length's."""
        step, m = plan.step, self.model
        if plan.qat and not self.qat_on:
            self.qat_on = True
            n = enable_qat(m, self.cfg.quant)
            self.log.event("qat", f"qat:on step:{step} matrices:{n}", step=step, matrices=n)
        if plan.loop_passes != m.loop_passes:
            m.loop_passes = plan.loop_passes
            depth = len(m.layer_order())
            self.log.event(
                "loop",
                f"looping:on passes:{m.loop_passes} step:{step} virtual_layers:{depth}",
                step=step,
                passes=m.loop_passes,
                depth=depth,
            )
        if self.cfg.train.seq_len_schedule and plan.seq_len != self.seq_len:
            self.seq_len = plan.seq_len
            self.log.event("context", f"seq_len:{plan.seq_len} step:{step}", step=step, seq_len=plan.seq_len)

    def state(self) -> dict:
        return {"looping": self.model.loop_passes, "qat": self.qat_on}

    def load_state(self, state: dict) -> None:
        self.model.loop_passes = loop_passes(state["looping"], self.cfg.model.loop_repeats)
        self.qat_on = bool(state["qat"])
        if self.qat_on:
            enable_qat(self.model, self.cfg.quant)
