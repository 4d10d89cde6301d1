import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from pgolf.config import ConfigError
from pgolf.data.shards import ShardError
from pgolf.dist import DistInfo
from pgolf.train import CHECKPOINT_NAME, Trainer, train


def _weights(path: Path) -> dict:
    return torch.load(path / CHECKPOINT_NAME, weights_only=True)["model"]


def test_short_run_lowers_loss_and_reports_everything(debug_cfg, tmp_path):
    r = train(debug_cfg(**{"train.iterations": "40"}), out_dir=tmp_path, echo=False)
    losses = [h["train_loss"] for h in r.history]
    assert len(losses) == 40 and r.steps == 40 and r.stopped_by == "iterations"
    assert sum(losses[-5:]) / 5 < losses[0] - 1.0  # ln(1024) = 6.93 at init
    assert r.roundtrip.val_loss < 6.0 and r.roundtrip.val_bpb < r.roundtrip.val_loss / 0.69
    # the debug model is below the fp-passthrough threshold, so the round trip is fp16-exact-ish
    assert abs(r.roundtrip.val_bpb - r.pre_quant.val_bpb) < 1e-3
    assert r.size.total_bytes == r.size.model_bytes + r.size.code_bytes and r.size.fits
    result = json.loads((tmp_path / "result.json").read_text())
    assert result["val_bpb"] == r.roundtrip.val_bpb and result["bytes_total"] == r.size.total_bytes
    log = (tmp_path / "train.log").read_text()
    assert "step:40/40 val_loss:" in log and "final_int8_zlib_roundtrip_exact val_loss:" in log
    assert "Total submission size int8+zlib:" in log
    events = [json.loads(line) for line in (tmp_path / "events.jsonl").read_text().splitlines()]
    assert {"train", "val", "size", "final_exact"} <= {e["event"] for e in events}


def test_wallclock_cap_is_honoured(debug_cfg, tmp_path):
    cap = 1.5
    r = train(
        debug_cfg(**{"train.iterations": "100000", "train.max_wallclock_seconds": str(cap)}),
        out_dir=tmp_path,
        echo=False,
    )
    assert r.stopped_by == "wallclock" and 0 < r.steps < 100_000
    step_avg = r.train_seconds / r.steps
    assert r.train_seconds <= cap + step_avg  # a step is never started that should end past the cap
    assert "stopping_early: wallclock_cap" in (tmp_path / "train.log").read_text()


def test_priming_steps_leave_no_trace(debug_cfg, tmp_path):
    kw = {"train.iterations": "8", "train.checkpoint_every": "8"}
    train(debug_cfg(**kw), out_dir=tmp_path / "a", echo=False)
    train(debug_cfg(**kw, **{"train.warmup_steps": "3"}), out_dir=tmp_path / "b", echo=False)
    a, b = _weights(tmp_path / "a"), _weights(tmp_path / "b")
    assert all(torch.equal(a[k], b[k]) for k in a)


def _cli(args: list[str], **popen) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "pgolf", *args], env=env, **popen)


@pytest.mark.slow
def test_killed_run_resumes_to_the_same_weights(data_root, tmp_path):
    args = [
        "train",
        "--preset",
        "debug",
        "--data.root",
        str(data_root),
        "--train.iterations",
        "80",
        "--train.checkpoint_every",
        "10",
    ]
    full = _cli([*args, "--out", str(tmp_path / "full")], stdout=subprocess.DEVNULL)
    assert full.wait(timeout=300) == 0

    victim = _cli([*args, "--out", str(tmp_path / "cut")], stdout=subprocess.DEVNULL)
    ckpt = tmp_path / "cut" / CHECKPOINT_NAME
    deadline = time.time() + 120
    while not ckpt.exists() and time.time() < deadline and victim.poll() is None:
        time.sleep(0.01)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    killed_at = torch.load(ckpt, weights_only=True)["step"]
    assert 10 <= killed_at < 80 and not (tmp_path / "cut" / "result.json").exists()

    resumed = _cli([*args, "--out", str(tmp_path / "cut"), "--resume"], stdout=subprocess.DEVNULL)
    assert resumed.wait(timeout=300) == 0
    a, b = _weights(tmp_path / "full"), _weights(tmp_path / "cut")
    assert all(torch.equal(a[k], b[k]) for k in a), "resumed weights differ from the uninterrupted run"
    ra = json.loads((tmp_path / "full" / "result.json").read_text())
    rb = json.loads((tmp_path / "cut" / "result.json").read_text())
    assert ra["val_bpb"] == rb["val_bpb"] and ra["history"] == rb["history"]


def test_resume_refuses_a_different_config(debug_cfg, tmp_path):
    train(debug_cfg(**{"train.iterations": "4", "train.checkpoint_every": "2"}), out_dir=tmp_path, echo=False)
    with pytest.raises(ConfigError, match="different config; cannot resume"):
        train(
            debug_cfg(**{"train.iterations": "6", "train.checkpoint_every": "2"}),
            out_dir=tmp_path,
            resume=True,
            echo=False,
        )


@pytest.mark.slow
def test_two_gloo_processes_match_one(data_root, tmp_path, debug_cfg):
    """Same global batch: 1 process x 2 micro-batches vs 2 processes x 1 micro-batch."""
    kw = {"train.iterations": "12", "train.checkpoint_every": "12"}
    one = train(debug_cfg(**kw), out_dir=tmp_path / "one", echo=False)
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        "-m",
        "pgolf",
        "train",
        "--preset",
        "debug",
        "--data.root",
        str(data_root),
        "--out",
        str(tmp_path / "two"),
        "--train.iterations",
        "12",
        "--train.checkpoint_every",
        "12",
    ]
    proc = subprocess.run(
        cmd, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    a, b = _weights(tmp_path / "one"), _weights(tmp_path / "two")
    for k in a:
        assert torch.allclose(a[k], b[k], atol=2e-5, rtol=1e-4), k
    two = json.loads((tmp_path / "two" / "result.json").read_text())
    assert two["val_tokens"] == one.roundtrip.tokens and two["val_bytes"] == one.roundtrip.bytes
    assert two["val_bpb"] == pytest.approx(one.roundtrip.val_bpb, abs=1e-4)
    assert "world_size:2 grad_accum_steps:1" in (tmp_path / "two" / "train.log").read_text()


def test_bad_inputs_fail_clearly(debug_cfg, data_root, tmp_path):
    with pytest.raises(FileNotFoundError, match="tokenizer model not found"):
        train(debug_cfg(**{"data.root": str(tmp_path / "none")}), out_dir=tmp_path / "r1", echo=False)
    tok = str(data_root / "tokenizers" / "pgolf_demo_1024_bpe.model")
    with pytest.raises(ShardError, match="data folder not found"):
        train(
            debug_cfg(**{"data.tokenizer": tok, "data.dataset": "datasets/missing"}),
            out_dir=tmp_path / "r2",
            echo=False,
        )
    with pytest.raises(ConfigError, match=r"vocab mismatch: .* has 1024 pieces but model.vocab_size=512"):
        train(debug_cfg(**{"model.vocab_size": "512"}), out_dir=tmp_path / "r3", echo=False)
    with pytest.raises(ShardError, match="shorter than one window"):
        train(debug_cfg(**{"eval.seq_len": "10000000"}), out_dir=tmp_path / "r4", echo=False)
    with pytest.raises(ShardError, match=r"need .* contiguous training tokens"):
        train(
            debug_cfg(**{"train.batch_tokens": str(2**26), "train.seq_len": "64"}),
            out_dir=tmp_path / "r5",
            echo=False,
        )
    with pytest.raises(ConfigError, match=r"world size 3 must divide train.microbatches=2"):
        Trainer(debug_cfg(), tmp_path / "r6", DistInfo(0, 3, 0, torch.device("cpu")), False, False)


def test_loop_switch_and_averaging_reach_the_artifact(debug_cfg, tmp_path):
    from pgolf.artifact import read_artifact
    from pgolf.evaluate import evaluate_artifact

    cfg = debug_cfg(**{
        "train.iterations": "10", "model.loop_start": "0", "model.loop_end": "1", "model.loop_repeats": "1",
        "train.loop_from_frac": "0.5", "train.averaging": "ema", "train.ema_decay": "0.8",
    })  # fmt: skip
    r = train(cfg, out_dir=tmp_path, echo=False)
    log = (tmp_path / "train.log").read_text()
    assert "looping:on step:5 virtual_layers:3" in log and "averaging:ema: decay 0.8" in log
    _, meta = read_artifact(r.artifact_path)
    assert meta["looping"] is True
    again = evaluate_artifact(r.artifact_path, {"data.root": cfg.data.root})
    assert again["val_bpb"] == r.roundtrip.val_bpb
