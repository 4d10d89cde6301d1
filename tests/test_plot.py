"""Loss-curve PNGs: runs grouped by configuration (seeds together), each drawn to its own end, on a
steps or seconds axis; one run's curve. Run folders are written by hand (no training)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from pgolf.config.run import RunConfig
from pgolf.errors import PgolfError
from pgolf.tools.cli import main
from pgolf.tools.plot import band, group_runs, load_runs, plot_run, read_log, runs_figure

PNG = b"\x89PNG\r\n\x1a\n"


def _config(seed: int, root: str = "/data", **model) -> dict:
    cfg = RunConfig(preset="debug").to_dict()
    cfg["train"]["seed"], cfg["data"]["root"] = seed, root
    cfg["model"].update(model)
    return cfg


def _run(folder: Path, config: dict, steps: int, *, ms_per_step: float = 500.0, log: bool = True) -> Path:
    """A run folder: a loss falling from 7 with a little noise, a log line every 5 steps (and a
    validation at the middle and the end), a final round trip 0.1 nats under the last validation."""
    rng = np.random.default_rng(config["train"]["seed"])
    loss = 7.0 * np.exp(-np.arange(1, steps + 1) / 20) + 3.0 + rng.normal(0, 0.05, steps)
    history = [{"step": i + 1, "train_loss": float(v)} for i, v in enumerate(loss)]
    final = float(loss[-1]) - 0.1
    folder.mkdir(parents=True)
    seconds = steps * ms_per_step / 1000
    result = {"config": config, "history": history, "preset": config["preset"], "steps": steps,
              "train_seconds": seconds, "val_loss": final, "val_bpb": final / 2}  # fmt: skip
    (folder / "result.json").write_text(json.dumps(result))
    logged = [s for s in range(1, steps + 1) if s == 1 or s % 5 == 0]
    lines = [f"step:{s}/{steps} train_loss:{loss[s - 1]:.4f} train_time:{s * ms_per_step:.0f}ms "
             f"step_avg:{ms_per_step:.2f}ms" for s in logged]  # fmt: skip
    for s in (steps // 2, steps):
        lines.append(f"step:{s}/{steps} val_loss:{loss[s - 1]:.4f} val_bpb:{loss[s - 1] / 2:.4f} "
                     f"train_time:{s * ms_per_step + 7:.0f}ms step_avg:{ms_per_step:.2f}ms")  # fmt: skip
    lines.append(f"final_int8_zlib_roundtrip val_loss:{final:.4f} val_bpb:{final / 2:.4f} eval_time:10ms")
    lines.append(f"final_int8_zlib_roundtrip_exact val_loss:{final:.8f} val_bpb:{final / 2:.8f}")
    if log:
        (folder / "train.log").write_text("\n".join(lines) + "\n")
    return folder


@pytest.fixture
def runs(tmp_path) -> list[Path]:
    """Two seeds of one configuration (30 and 60 steps, data in different places) and another
    configuration (wider MLP, 40 steps, twice as slow per step)."""
    return [
        _run(tmp_path / "a1", _config(1), 30),
        _run(tmp_path / "a2", _config(2, root="/elsewhere"), 60),
        _run(tmp_path / "b", _config(1, mlp_mult=3.0), 40, ms_per_step=1000.0),
    ]


def test_seeds_of_one_configuration_are_one_group_and_others_another(runs):
    groups = group_runs(load_runs(runs))
    assert [len(g.runs) for g in groups] == [2, 1]
    assert [r.seed for r in groups[0].runs] == [1, 2]
    assert groups[0].digest != groups[1].digest and groups[0].name.startswith("debug ")
    assert groups[1].differs == "model.mlp_mult=3.0" and groups[0].differs == "model.mlp_mult=2.0"


def test_every_run_is_drawn_to_its_own_end(runs):
    group = group_runs(load_runs(runs))[0]
    b = band(group, "steps", 1)
    assert b.x[-1] == 60 and list(b.count[[0, 29, 30, 59]]) == [2, 2, 1, 1]
    longer = group.runs[1]
    np.testing.assert_allclose(b.mean[30:], longer.loss[30:])  # where one seed has data, that seed
    np.testing.assert_allclose(b.mean[:30], (group.runs[0].loss + longer.loss[:30]) / 2)
    fig = runs_figure(load_runs(runs))
    ends = [line.get_xdata()[np.isfinite(line.get_ydata())].max() for line in fig.axes[0].lines]
    assert max(ends) == 60 and 40 in ends  # the other configuration's last step too


def test_the_seconds_axis_reads_the_logs_train_time(runs, tmp_path):
    a1, a2, b = load_runs(runs)
    assert len(a1.clock) == 7 and a1.val.shape == (2, 3) and a1.label == "int8_zlib"
    np.testing.assert_allclose(a1.seconds(np.array([1.0, 10.0, 12.0, 30.0, 32.0])), [0.5, 5, 6, 15, 16])
    assert band(group_runs([b])[0], "seconds", 1).x[-1] == pytest.approx(40.0)
    fig = runs_figure([a1, a2, b], "seconds")
    assert fig.axes[0].get_xlabel() == "training time (s)"
    ends = [line.get_xdata()[np.isfinite(line.get_ydata())].max() for line in fig.axes[0].lines]
    assert max(ends) == pytest.approx(40.0) and 30.0 in ends  # b: 40 steps of 1 s; a2: 60 of 0.5 s
    bare = load_runs([_run(tmp_path / "nolog", _config(3), 10, log=False)])
    with pytest.raises(PgolfError, match="--x steps"):
        runs_figure(bare, "seconds")
    runs_figure(bare, "steps")


def test_a_log_gives_times_validations_and_the_round_trips_label():
    clock, val, label = read_log(
        "step:1/9 train_loss:7.0 train_time:400ms step_avg:400.00ms\n"
        "stopping_early: wallclock_cap train_time:1200ms step:3/9\n"
        "step:3/9 val_loss:5.5000 val_bpb:3.2000 train_time:1300ms step_avg:433.33ms\n"
        "final_int8_zlib_docs64_lora_roundtrip val_loss:5.4000 val_bpb:3.1000 eval_time:5ms\n"
        "final_int8_zlib_docs64_lora_roundtrip_exact val_loss:5.40000000 val_bpb:3.10000000\n"
    )
    assert clock.tolist() == [[1, 0.4], [3, 1.2]]  # the stop's time, not the validation's after it
    assert val.tolist() == [[3, 5.5, 3.2]] and label == "int8_zlib_docs64_lora"


def test_pngs_are_written_from_the_cli_and_for_one_run(runs, tmp_path, capsys):
    png = tmp_path / "out" / "runs.png"
    assert main(["plot", *map(str, runs), "--x", "seconds", "--out", str(png)]) == 0
    assert png.read_bytes()[:8] == PNG and png.stat().st_size > 20_000
    one = plot_run(runs[1], tmp_path / "loss_curve.png", title="pgolf demo: debug")
    assert one.read_bytes()[:8] == PNG and one.stat().st_size > 20_000
    record = tmp_path / "record"
    record.mkdir()
    for seed, run in ((1, runs[0]), (2, runs[1])):
        (record / f"result_seed{seed}.json").write_text((run / "result.json").read_text())
        (record / f"train_seed{seed}.log").write_text((run / "train.log").read_text())
    seeds = load_runs([record])
    assert [r.seed for r in seeds] == [1, 2] and len(seeds[1].clock) == 13
    with pytest.raises(PgolfError, match="not a run folder"):
        load_runs([tmp_path / "out"])
