"""Progress on long work: counted code ticks a line at most every ~30 s of wall time (``Ticker``),
tooling shows training's tqdm bar on a terminal (``runlog.bar``); off a terminal a bar prints nothing."""

import io

import torch

from pgolf import runlog
from pgolf.config.quant import QuantConfig
from pgolf.eval.score import EvalClock
from pgolf.runlog import RunLog, Ticker, bar
from pgolf.tools.progress import Progress, track
from pgolf.train.calibration import calibrate
from pgolf.train.clock import TrainClock
from test_eval_adapt import CPU, VOCAB, tiny_model


class Terminal(io.StringIO):
    """A stream that says it is a terminal: forces the bar."""

    def isatty(self) -> bool:
        return True


def test_a_ticker_prints_at_most_one_line_per_interval_and_nothing_without_echo():
    t, lines = [100.0], []
    tick = Ticker(lines.append, "gptq_calibration", 16, now=lambda: t[0])  # TICK_S = 30
    for done, at in enumerate([101.0, 129.9, 130.0, 131.0, 159.0, 175.0]):
        t[0] = at
        tick(done)
    assert lines == ["gptq_calibration:2/16 elapsed:30s", "gptq_calibration:5/16 elapsed:75s"]
    silent = Ticker(None, "eval_mix", 10, now=lambda: t[0])
    t[0] += 60
    silent(5)  # no echo: nothing to call, nothing raised
    items = [object() for _ in range(4)]
    clock = iter([0.0, 0.0, 40.0, 41.0, 90.0])  # creation, then one reading per item
    seen = []
    over = Ticker(seen.append, "fisher_calibration", 4, now=lambda: next(clock))
    assert list(over.over(items)) == items  # the same objects, in order
    assert seen == ["fisher_calibration:1/4 elapsed:40s", "fisher_calibration:3/4 elapsed:90s"]


def test_the_eval_clock_ticks_targets_every_interval_after_its_projection():
    t, lines = [0.0], []
    clock = EvalClock(now=lambda: t[0], echo=lines.append, cap_s=1000.0, project_after_s=10.0)
    with clock.phase("score"):
        clock.progress(0, 1000)
        for done in range(1, 11):
            t[0] = 12.0 * done
            clock.progress(100 * done, 1000)
    assert lines[0].startswith("eval_projection: 100/1000 targets in 12.0 s")
    assert lines[1:] == [f"eval_targets:{n}/1000 elapsed:{s}s" for n, s in ((300, 36), (600, 72), (900, 108))]
    quiet = EvalClock(now=lambda: t[0])  # no echo (in-training validation, diagnostics): no line
    with quiet.phase("score"):
        quiet.progress(0, 10)
        t[0] += 100.0
        quiet.progress(5, 10)
    assert quiet.projection is None


def test_calibration_ticks_through_the_run_log_and_computes_the_same(monkeypatch):
    int8 = {"matrix": "int8", "embed": "int8"}
    cfg = QuantConfig(
        **int8, gptq=True, gptq_batches=3, alloc="fisher", fisher_batches=2, fisher_count_batches=2
    )

    def run(log: RunLog):
        g = torch.Generator().manual_seed(0)
        batches = iter(lambda: torch.randint(0, VOCAB, (2, 17), generator=g), None)
        pairs = ((x[:, :-1], x[:, 1:]) for x in batches)
        return calibrate(tiny_model(), cfg, pairs, TrainClock(0.0, lambda: None), CPU, log)[0]

    quiet = run(RunLog(None, echo=False))
    monkeypatch.setattr(runlog, "TICK_S", 0.0)  # a line every batch
    out = io.StringIO()
    loud = run(RunLog(None, stream=out))
    assert (
        quiet.hessians.keys() == loud.hessians.keys()
        and quiet.sensitivities.keys() == loud.sensitivities.keys()
    )
    assert all(torch.equal(quiet.hessians[k], loud.hessians[k]) for k in quiet.hessians)
    assert all(torch.equal(quiet.sensitivities[k], loud.sensitivities[k]) for k in quiet.sensitivities)
    lines = [line.split(" ")[0] for line in out.getvalue().splitlines()]  # less the elapsed seconds
    assert lines[:5] == [*(f"gptq_calibration:{i}/3" for i in range(3)), "fisher_calibration:0/2",
                         "fisher_calibration:1/2"]  # fmt: skip


def test_bars_are_silent_off_a_terminal_and_draw_on_one():
    pipe = io.StringIO()
    assert bar(pipe, total=3) is None
    with Progress("plan", total=3, unit="stage", stream=pipe) as p:
        p.stage("the model's check pass")
        p.update()
        p.stage("the step time")
    assert list(track(range(5), "data: reading documents", stream=pipe)) == [0, 1, 2, 3, 4]
    log = RunLog(None, stream=pipe)
    log.start_progress(10.0, "s")
    log.progress(5.0)
    assert log.bar is None
    log.close()
    assert pipe.getvalue() == ""

    tty = Terminal()
    with Progress("plan", total=2, unit="stage", stream=tty) as p:
        p.stage("the model's check pass")
        p.stage("the step time")
        assert p.bar.n == 1
    assert "plan" in tty.getvalue() and "the step time" in tty.getvalue()
    tty = Terminal()
    assert list(track(range(3), "data: reading documents", unit="doc", stream=tty)) == [0, 1, 2]
    assert "data: reading documents" in tty.getvalue() and "0/3" in tty.getvalue()  # its length: the total
    log = RunLog(None, stream=tty)
    log.start_progress(10.0, "s")
    assert log.bar is not None
    log.close()
