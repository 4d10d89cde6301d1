"""``pgolf preflight``: the environment, every phase of the schedule timed, the verdict table, exit 1
on a miss; on the CPU for debug and baseline-cpu, and under torchrun with gloo (the all-reduce)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from pgolf.tools.cli import main
from pgolf.tools.preflight import projected_steps, sample_docs


def _preflight(capsys, *argv: str) -> tuple[int, dict]:
    status = main(["preflight", *argv, "--json"])
    return status, json.loads(capsys.readouterr().out)


def test_debug_preflight_reports_every_phase_and_passes(capsys, data_root):
    schedule = ["--train.seq_len_schedule", "32:0.5", "--model.num_layers", "3", "--model.loop_start", "1",
                "--model.loop_end", "2", "--model.loop_repeats", "1", "--train.loop_from_frac", "0.7",
                "--quant.qat", "true", "--quant.matrix", "int6", "--quant.qat_from_frac", "0.8",
                "--quant.gptq", "true"]  # fmt: skip
    status, out = _preflight(capsys, "debug", "--data.root", str(data_root), *schedule)
    assert status == 0 and out["ok"], out["figures"]
    env = out["environment"]
    assert env["attention"] == "flash" and env["world size"] == 1 and "verified" in env["data"]
    phases = [(p["seq_len"], p["loop_passes"], p["qat"]) for p in out["phases"]]
    assert phases == [(32, 0, False), (64, 0, False), (64, 1, False), (64, 1, True)]
    assert all(p["step_ms"] > 0 and p["peak_bytes"] > 0 for p in out["phases"])
    names = {f["name"] for f in out["figures"]}
    assert {"peak memory (training)", "export (the other ranks wait)", "bytes, projected for trained weights",
            "first QAT step (recompiles on the clock)", "calibration"} <= names  # fmt: skip
    ev = out["evaluation"]
    assert ev["sample_tokens"] == ev["full_tokens"] and ev["projected_seconds"] == pytest.approx(
        ev["seconds"]
    )


def test_baseline_cpu_preflight_fits_its_track_and_a_miss_exits_1(capsys, data_root):
    status, out = _preflight(capsys, "baseline-cpu", "--data.root", str(data_root))
    assert status == 0, out["figures"]
    fits = {f["name"]: f for f in out["figures"]}
    assert fits["slowest step x 1.5 (the stop rule)"]["ok"] and fits["peak memory (training)"]["ok"]
    assert any(n.startswith("evaluation on 1 rank(s), projected") and f["ok"] for n, f in fits.items())
    status, out = _preflight(capsys, "debug", "--data.root", str(data_root), "--track", "cpu-5min-2mb",
                             "--train.max_wallclock_seconds", "400")  # fmt: skip
    assert status == 1 and not out["ok"]
    assert [f["name"] for f in out["figures"] if f["ok"] is False] == ["on track before the first step"]
    assert main(["preflight", "debug", "--data.root", str(data_root), "--steps", "0"]) == 2
    assert "--steps 0 must be >= 1" in capsys.readouterr().err
    main(["preflight", "debug", "--data.root", str(data_root)])
    text = capsys.readouterr().out
    assert "verdict:" in text and "preflight: PASS" in text


def test_preflight_under_torchrun_times_the_gradient_all_reduce(data_root):
    """Two gloo ranks, no --out: every rank works in rank 0's scratch folder (the artifact rank 0
    exports is the one every rank scores)."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "pgolf",
           "preflight", "debug", "--data.root", str(data_root), "--json", "--ranks", "8"]  # fmt: skip
    proc = subprocess.run(cmd, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True,
                          timeout=600)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout)  # rank 0 alone prints
    assert out["environment"]["world size"] == 2 and out["evaluation"]["ranks"] == 8
    assert any(f["name"] == "gradient all-reduce per step" for f in out["figures"])


def test_projected_steps_follow_each_phase_share_of_the_clock():
    phases = [{"from": 0.0, "step_ms": 10.0, "qat": False}, {"from": 0.5, "step_ms": 20.0, "qat": False},
              {"from": 0.8, "step_ms": 40.0, "qat": True}]  # fmt: skip
    # 1 s cap: 500 ms at 10 ms, 300 ms at 20 ms, then QAT's 200 ms at 40 ms
    assert projected_steps(phases, 1000.0) == pytest.approx(50 + 15 + 5)
    assert sample_docs(50_000, 0.02, 64) == 1000 and sample_docs(10, 0.02, 64) == 10
