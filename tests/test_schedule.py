"""One schedule: every per-step decision from (step, elapsed) alone, asked once per step by the trainer."""

import pytest
import torch

from pgolf.config import ModelConfig, OptimConfig, QuantConfig, RunConfig, TrainConfig
from pgolf.dist import DistInfo
from pgolf.runlog import RunLog
from pgolf.train.schedule import Schedule, StepPlan
from pgolf.train.trainer import Trainer

OPTIM = OptimConfig(
    warmdown_frac=0.5, min_lr=0.1, wd_taper_from=0.7, wd_taper_mult=0.5,
    muon_momentum=0.95, muon_momentum_warmup_start=0.85, muon_momentum_warmup_steps=100,
)  # fmt: skip


def _cfg(cap_s: float, **quant) -> RunConfig:
    return RunConfig(
        model=ModelConfig(vocab_size=64, num_layers=4, model_dim=64, num_heads=4, num_kv_heads=2,
                          loop_start=1, loop_end=2, loop_repeats=2),
        train=TrainConfig(seq_len=64, batch_tokens=512, microbatches=2, iterations=1000,
                          max_wallclock_seconds=cap_s, seq_len_schedule="32:0.5", loop_pass_fracs="0.3,0.6"),
        optim=OPTIM,
        quant=QuantConfig(qat=True, qat_from_frac=0.4, **quant),
    )  # fmt: skip


def test_every_decision_follows_the_wall_clock_under_a_cap():
    s = Schedule(_cfg(100.0))
    assert s.cap_ms == 100_000.0
    early = s.at(50, 20_000.0)  # halfway through the momentum warm-up
    assert early == StepPlan(step=50, elapsed_ms=20_000.0, progress=0.2, lr_mul=1.0,
                             momentum=pytest.approx(0.9), wd_mul=1.0, seq_len=32,
                             loop_passes=0, qat=False)  # fmt: skip
    late = s.at(500, 75_000.0)  # a quarter of the cap left in a warmdown of half: LR 0.5
    assert late == StepPlan(step=500, elapsed_ms=75_000.0, progress=0.75, lr_mul=0.5, momentum=0.95,
                            wd_mul=0.5, seq_len=64, loop_passes=2, qat=True)  # fmt: skip
    assert s.at(500, 99_000.0).lr_mul == 0.1  # the MIN_LR floor
    # the step count does not move a wall-clock schedule's phases; the time does
    assert s.at(999, 35_000.0).loop_passes == 1 and s.at(1, 45_000.0).qat
    assert [s.at(1, 1000.0 * t).seq_len for t in (49.9, 50.0)] == [32, 64]


def test_without_a_cap_the_steps_alone_decide():
    s = Schedule(_cfg(0.0))
    assert s.cap_ms == 0.0
    a, b = s.at(300, 0.0), s.at(300, 1e9)  # the time is ignored
    assert a == StepPlan(**{**b.__dict__, "elapsed_ms": 0.0})
    assert (a.progress, a.loop_passes, a.qat, a.seq_len) == (0.3, 1, False, 32)
    assert s.at(750, 0.0).lr_mul == 0.5 and s.at(750, 0.0).wd_mul == 0.5


def test_the_calibration_reserve_comes_off_the_cap():
    s = Schedule(_cfg(100.0, matrix="int6", gptq=True, gptq_reserve_seconds=8.0))
    assert s.cap_ms == 92_000.0 and s.at(0, 46_000.0).progress == 0.5


def test_passes_and_qat_only_switch_on():
    s = Schedule(_cfg(0.0))
    plans = [s.at(step, 0.0) for step in range(1000)]
    passes = [p.loop_passes for p in plans]
    assert passes == sorted(passes) and passes[299] == 0 and passes[300] == 1 and passes[600] == 2
    qat = [p.qat for p in plans]
    assert qat.index(True) == 400 and all(qat[400:])


def test_priming_rehearses_each_phase_at_its_start():
    s = Schedule(_cfg(100.0))
    starts = s.phase_starts()
    got = [(p.progress, p.seq_len, p.loop_passes) for p in starts]
    assert got == [(0.0, 32, 0), (0.3, 32, 1), (0.5, 64, 1), (0.6, 64, 2)]
    assert all(p.step == 0 and p.lr_mul == 1.0 and p.momentum == 0.85 for p in starts)


def test_the_trainer_asks_the_schedule_once_per_step(debug_cfg, tmp_path):
    """Each step's plan comes from one ``Schedule.at`` call (one length lookup), and that same plan is
    what the phases apply and the step trains with."""
    cfg = debug_cfg(**{
        "train.iterations": "6", "train.seq_len_schedule": "32:0.5", "model.loop_start": "0",
        "model.loop_end": "1", "model.loop_repeats": "1", "train.loop_from_frac": "0.3",
        "quant.qat": "true", "quant.matrix": "int6", "quant.qat_from_frac": "0.6",
    })  # fmt: skip
    log = RunLog(tmp_path, echo=False)
    trainer = Trainer(cfg, tmp_path, DistInfo(0, 1, 0, torch.device("cpu")), log, False)
    trainer.setup()
    asked, lengths, applied, trained = [], [], [], []
    at, seq_len_at = trainer.schedule.at, trainer.schedule.seq_len_at
    apply, train_step = trainer.phases.apply, trainer.train_step

    def spy(record, fn, out=False):
        def wrapped(*a):
            r = fn(*a)
            record.append(r if out else a)
            return r

        return wrapped

    trainer.schedule.at = spy(asked, at, out=True)
    trainer.schedule.seq_len_at = spy(lengths, seq_len_at)
    trainer.phases.apply = spy(applied, apply)
    trainer.train_step = spy(trained, train_step)
    steps, _, _ = trainer.run_loop()
    assert steps == 6 and [p.step for p in asked] == list(range(6)) and len(lengths) == 6
    assert all(a == (p,) and t == (p,) for p, a, t in zip(asked, applied, trained, strict=True))
    assert [(p.seq_len, p.loop_passes, p.qat) for p in asked] == [
        (32, 0, False), (32, 0, False), (32, 1, False), (64, 1, False), (64, 1, True), (64, 1, True)
    ]  # fmt: skip
    text = (tmp_path / "train.log").read_text()
    for line in ("seq_len:32 step:0", "looping:on passes:1 step:2", "seq_len:64 step:3", "qat:on step:4"):
        assert line in text
