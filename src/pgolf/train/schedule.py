"""The run's schedule: every per-step decision, taken once per step from (step, elapsed time).

``Schedule.at(step, elapsed_ms)`` returns a frozen ``StepPlan``: the fraction of the run used
(``progress``: of the wall-clock cap less the calibration reserve, else of the steps), the LR
multiplier (warmdown, MIN_LR floor), Muon's momentum (warm-up) and weight-decay multiplier (late
taper), the training length (progressive context, PR #2014), the extra passes of the middle-range
loop (all at ``train.loop_from_frac``, or one by one at ``train.loop_pass_fracs``: progressive
recurrence, PR #1412) and whether QAT is on (from ``quant.qat_from_frac``). The trainer asks once
per step, with the training time the ranks agreed on (``clock.StopRule``), so every rank holds the
same plan; the optimizers take its LR, momentum and decay, and ``phases.Phases`` applies its passes
and QAT to the model and logs what changed. Nothing else derives a per-step quantity.

Every decision is a pure function of (step, elapsed), monotone in both: a pass or QAT, once on,
stays on, and a resumed run recomputes the same plan from its checkpoint's step and time.
"""

from __future__ import annotations

from dataclasses import dataclass

from pgolf.config.optim import OptimConfig
from pgolf.config.run import RunConfig


@dataclass(frozen=True, kw_only=True)
class StepPlan:
    step: int
    """Optimizer steps done before this one."""
    elapsed_ms: float
    """Training time so far, the same on every rank."""
    progress: float
    """Fraction of the run used: of the wall-clock cap, else of the steps."""
    lr_mul: float
    """Multiplier of every group's base LR."""
    momentum: float
    """Muon's momentum."""
    wd_mul: float
    """Multiplier of Muon's weight decay."""
    seq_len: int
    """Training sequence length in tokens."""
    loop_passes: int
    """Extra passes of the middle-range loop on (0 .. model.loop_repeats)."""
    qat: bool
    """QAT's fake quantisation on."""


class Schedule:
    def __init__(self, cfg: RunConfig) -> None:
        self.cfg = cfg
        tc = cfg.train
        reserve = cfg.quant.gptq_reserve_seconds if cfg.quant.calibrates else 0.0
        self.cap_ms = 1000 * (tc.max_wallclock_seconds - reserve) if tc.max_wallclock_seconds else 0.0
        """Where the steps must end: the training cap less the GPTQ calibration reserve (0: no cap; the
        config refuses a reserve that would leave none). Only with a cap does a decision read the time."""

    def progress(self, step: int, elapsed_ms: float) -> float:
        return elapsed_ms / self.cap_ms if self.cap_ms else step / self.cfg.train.iterations

    def at(self, step: int, elapsed_ms: float) -> StepPlan:
        """The plan of the step about to start (``step`` steps done, ``elapsed_ms`` agreed over ranks)."""
        return self._plan(step, elapsed_ms, self.progress(step, elapsed_ms))

    def rehearse(self, progress: float) -> StepPlan:
        """A step of the phase at ``progress`` with step 0's LR and momentum, as priming and preflight run
        it: their steps are undone or only timed, so only the phase (length, passes) matters."""
        return self._plan(0, 0.0, progress)

    def _plan(self, step: int, elapsed_ms: float, progress: float) -> StepPlan:
        cfg = self.cfg
        lr_mul = lr_multiplier(
            step, elapsed_ms, iterations=cfg.train.iterations, max_wallclock_ms=self.cap_ms, cfg=cfg.optim
        )
        return StepPlan(
            step=step,
            elapsed_ms=elapsed_ms,
            progress=progress,
            lr_mul=lr_mul,
            momentum=muon_momentum(step, cfg.optim),
            wd_mul=weight_decay_multiplier(progress, cfg.optim),
            seq_len=self.seq_len_at(progress),
            loop_passes=self.passes_at(progress),
            qat=cfg.quant.qat and progress >= cfg.quant.qat_from_frac,
        )

    def seq_len_at(self, progress: float) -> int:
        """The training length at ``progress``: each LEN of train.seq_len_schedule until its fraction,
        then train.seq_len."""
        schedule = self.cfg.train.seq_schedule
        return next(length for length, until in schedule if progress < until or until == 1.0)

    def passes_at(self, progress: float) -> int:
        """Extra loop passes on at ``progress``: one per fraction of train.loop_pass_fracs reached, else
        all of model.loop_repeats from train.loop_from_frac."""
        tc, repeats = self.cfg.train, self.cfg.model.loop_repeats
        if tc.pass_fracs:
            return sum(f <= progress for f in tc.pass_fracs)
        return repeats if repeats and progress >= tc.loop_from_frac else 0

    def phase_starts(self) -> list[StepPlan]:
        """The plan (``rehearse``) at the start of each distinct (length, loop passes) phase of the run,
        in order: the graphs a compiled model will trace (QAT's switch is not among them)."""
        tc = self.cfg.train
        starts = {0.0, *(until for _, until in tc.seq_schedule[:-1]), *tc.pass_fracs}
        if self.cfg.model.loop_repeats and not tc.pass_fracs:
            starts.add(tc.loop_from_frac)
        plans, seen = [], set()
        for p in sorted(starts):
            plan = self.rehearse(p)
            if (plan.seq_len, plan.loop_passes) not in seen:
                seen.add((plan.seq_len, plan.loop_passes))
                plans.append(plan)
        return plans


def muon_momentum(step: int, cfg: OptimConfig) -> float:
    """Linear warm-up from muon_momentum_warmup_start to muon_momentum."""
    if cfg.muon_momentum_warmup_steps <= 0:
        return cfg.muon_momentum
    f = min(step / cfg.muon_momentum_warmup_steps, 1.0)
    return (1 - f) * cfg.muon_momentum_warmup_start + f * cfg.muon_momentum


def lr_multiplier(
    step: int, elapsed_ms: float, *, iterations: int, max_wallclock_ms: float, cfg: OptimConfig
) -> float:
    """Constant 1, then a linear decay to 0 at whichever cap (steps or wall clock) ends the run.

    Step cap: decay over the last ``warmdown_iters`` steps (or ``warmdown_frac`` of the steps).
    Wall-clock cap: decay over the last ``warmdown_iters * mean step time`` ms (or
    ``warmdown_frac`` of the budget), linear in remaining time. In both, a warmdown longer than
    the run is clamped to the whole run, so the LR starts at 1 (the contest script instead starts
    below 1, e.g. at 0.25 for 300 steps with warmdown 1200: seed-techniques §6.3). With ``min_lr``
    the decay stops at that floor (PR #1787: max((1 - frac) / warmdown_frac, 0.1)).
    """
    if cfg.warmdown_frac > 0:
        wd_steps = cfg.warmdown_frac * iterations
    else:
        wd_steps = min(cfg.warmdown_iters, iterations)
    mul = 1.0
    if wd_steps > 0 and step >= iterations - wd_steps:
        mul = max(iterations - step, 0) / wd_steps
    if max_wallclock_ms > 0:
        if cfg.warmdown_frac > 0:
            wd_ms = cfg.warmdown_frac * max_wallclock_ms
        else:
            wd_ms = min(cfg.warmdown_iters * elapsed_ms / max(step, 1), max_wallclock_ms)
        remaining = max(max_wallclock_ms - elapsed_ms, 0.0)
        if wd_ms > 0 and remaining <= wd_ms:
            mul = min(mul, remaining / wd_ms)
    return max(mul, cfg.min_lr)


def weight_decay_multiplier(progress: float, cfg: OptimConfig) -> float:
    """The late Muon weight-decay taper (PR #1729): ``wd_taper_mult`` from ``wd_taper_from`` of the run
    on (``progress`` is the fraction of the wall-clock cap, else of the steps, already used)."""
    return cfg.wd_taper_mult if cfg.wd_taper_from and progress >= cfg.wd_taper_from else 1.0
