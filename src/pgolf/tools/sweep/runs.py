"""The runs of a sweep (tooling): each is its own ``pgolf train`` process (a ``torchrun`` job of
``nproc_per_node`` ranks, or of every GPU), followed while it trains, judged against its track.

A run's objective is the round-trip val_bpb of its ``result.json``; a run off its track (over the byte
cap, or over a time cap unless screening at fixed steps) is infeasible, with the reason kept on its
trial. Its validations are read from ``events.jsonl`` while it trains and reported to the pruner (at
equal seconds of training under a wall clock, at equal steps when screening), which may stop a losing
run early. A finished run of the same overrides in its folder is reused; a run left in its folder by a
killed worker of this machine is stopped, and the folder started over.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from pgolf.config.run import apply_overrides
from pgolf.fileio import write_json_atomic
from pgolf.tools.config_files import resolve
from pgolf.tools.studies import host
from pgolf.tools.sweep.spec import SweepSpec, trial_overrides


def launch_command(spec: SweepSpec, overrides: dict[str, str], out_dir: Path) -> list[str]:
    """``pgolf train`` for one run (``--off-track``: the sweep judges its runs itself): a torchrun job
    of ``nproc_per_node`` ranks, or over every GPU of the machine when that is 0 and it has several."""
    flags = ["--off-track", *(x for k, v in overrides.items() for x in (f"--{k}", v))]
    nproc = spec.nproc_per_node or _gpu_count()
    head = (
        [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}"]
        if nproc > 1
        else [sys.executable]
    )
    return [*head, "-m", "pgolf", "train", "--preset", spec.base, "--out", str(out_dir), *flags]


def _gpu_count() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def stop(proc: subprocess.Popen, grace_s: float = 10.0) -> None:
    """Stop a run's whole process group (torchrun and its ranks): SIGTERM, then SIGKILL."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        try:
            proc.wait(timeout=grace_s)
            return
        except subprocess.TimeoutExpired:
            continue


def follow(proc: subprocess.Popen, events: Path, on_val, poll_s: float = 0.5) -> bool:
    """Wait for ``proc``, calling ``on_val(event)`` for each validation event it logs; if ``on_val``
    returns True while the run still runs, the run is stopped and this returns True. A run that has
    already ended is never stopped (its result stands)."""
    offset = 0
    while True:
        done = proc.poll() is not None
        if events.exists():
            with open(events, encoding="utf-8") as f:
                f.seek(offset)
                for line in f:
                    if not line.endswith("\n"):
                        break  # a half-written line: read it next time
                    offset += len(line.encode("utf-8"))
                    event = json.loads(line)
                    if event.get("event") == "val" and on_val(event) and not done:
                        stop(proc)
                        return True
        if done:
            return False
        time.sleep(poll_s)


def judge(result: dict, screening: bool) -> list[str]:
    """Reasons a finished run is infeasible: off its track, where screening at fixed steps does not
    judge the training clock (it has none) but still judges bytes and evaluation time; a dev run's
    evaluation time is judged as projected onto the validation set (``projected_eval``)."""
    reasons = list(result.get("off_track", []))
    if screening:
        reasons = [r for r in reasons if not r.startswith(("train.max_wallclock_seconds", "training took"))]
    if result.get("split") == "dev":
        reasons = [r for r in reasons if not r.startswith("evaluation took")] + projected_eval(result)
    return reasons


def projected_eval(result: dict) -> list[str]:
    """A dev run's evaluation time scaled by the validation set's tokens over the dev split's (the
    track's cap is for validation, whose length differs), judged against the cap; a dataset whose
    manifest is not here is judged on the dev time as measured."""
    from pgolf.config.data import DataConfig
    from pgolf.errors import PgolfError
    from pgolf.tools.data.splits import manifest_split
    from pgolf.tracks import get_track

    seconds, dev = result["eval_seconds"], max(1, result["val_tokens"])
    try:
        val = int((manifest_split(DataConfig(**result["config"]["data"]), "val") or {})["tokens"])
    except (PgolfError, KeyError, TypeError, ValueError):  # no manifest here: judged as measured
        val = dev
    projected = seconds * val / dev
    why = f" (projected onto validation's {val:,} tokens from {seconds:.1f} s on the dev split's {dev:,})"
    return [r + why for r in get_track(result["track"]).judge(eval_seconds=projected)]


def preflight(spec: SweepSpec, params: dict[str, Any]) -> str | None:
    """Why a trial cannot fit its track's byte cap, found before running it (``pgolf plan``'s artifact
    projection, 5% of slack for its error), or None."""
    from pgolf.tools.plan.artifact import project_artifact
    from pgolf.tracks import get_track

    cfg = apply_overrides(resolve(spec.base), trial_overrides(spec, params, spec.seeds[0]))
    cap = get_track(cfg.track).artifact_cap_bytes
    if not cap:
        return None
    est, projected, _ = project_artifact(cfg)
    if projected + est.code_bytes > 1.05 * cap:
        return f"projected at {projected + est.code_bytes:,} bytes before running, over the {cap:,} cap"
    return None


def run_length(spec: SweepSpec) -> int:
    """A run's length in the pruner's unit: steps when screening, else seconds of the training cap."""
    if spec.steps:
        return spec.steps
    cfg = apply_overrides(resolve(spec.base), spec.fixed)
    return int(cfg.train.max_wallclock_seconds) or cfg.train.iterations


def _stop_left_run(out_dir: Path) -> None:
    """Stop a run left behind by a killed worker: its process group, from the pid file, when it was
    this machine's (a folder on a shared disk may hold another machine's pid)."""
    pid_file = out_dir / "run.pid"
    if pid_file.exists():
        pid, _, where = pid_file.read_text().partition(" ")
        with contextlib.suppress(ProcessLookupError, ValueError, PermissionError):
            if where.strip() in ("", host()):
                os.killpg(int(pid), signal.SIGKILL)


def stop_orphans(out_dir: Path) -> None:
    """Stop every run a killed worker left training in this worker's folder (one worker per folder), so
    it does not take the machine from the next trials (their wall-clock results would be skewed)."""
    for pid_file in sorted(Path(out_dir).glob("*/*/run.pid")):
        _stop_left_run(pid_file.parent)


def _stale(out_dir: Path) -> None:
    """Stop a run left behind (``_stop_left_run``), then clear its folder: the run log appends, so a
    rerun must start from an empty one."""
    _stop_left_run(out_dir)
    shutil.rmtree(out_dir)


def run_one(spec: SweepSpec, params: dict, seed: int, out_dir: Path, on_val=None, echo=print) -> dict:
    """One ``pgolf train`` run; returns its result.json (``{"pruned": True}`` if stopped early). A
    finished run of the same overrides in ``out_dir`` is reused; anything else there is stopped and
    started over."""
    overrides = trial_overrides(spec, params, seed)
    result, recorded = out_dir / "result.json", out_dir / "overrides.json"
    if result.exists() and recorded.exists() and json.loads(recorded.read_text()) == overrides:
        return json.loads(result.read_text())
    if out_dir.exists():
        _stale(out_dir)
    cmd = launch_command(spec, overrides, out_dir)
    echo(f"$ {' '.join(cmd[1:])}")
    out_dir.mkdir(parents=True)
    write_json_atomic(recorded, overrides)
    with open(out_dir / "stdout.txt", "w", encoding="utf-8") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        (out_dir / "run.pid").write_text(f"{proc.pid} {host()}")
        try:
            stopped = follow(proc, out_dir / "events.jsonl", on_val or (lambda event: False))
        except BaseException:  # Ctrl-C, or SIGTERM/SIGHUP turned into KeyboardInterrupt (signals_raise)
            stop(proc)
            raise
    (out_dir / "run.pid").unlink()
    if stopped:
        return {"pruned": True}
    if proc.returncode != 0 or not result.exists():
        tail = (out_dir / "stdout.txt").read_text(encoding="utf-8", errors="replace")[-800:]
        raise RuntimeError(f"run {out_dir} failed (exit {proc.returncode}):\n{tail}")
    return json.loads(result.read_text())


def reporter(trial, spec: SweepSpec):
    """The pruner's view of a run: its validations at the same step (screening) or, under a wall
    clock, at equal seconds of training, so fast small models are compared with slow large ones at
    equal time, not equal steps. Runs validate at different times, so each validation is reported
    on a grid of 1/20 of the run, every point since the previous one holding the previous value
    (what was known then): the median pruner then finds every trial at every point. The last tenth
    of the run is never pruned (it is nearly done)."""
    length = run_length(spec)
    grid = max(1, length // 20)
    last = {"at": -1, "value": None}

    def on_val(event: dict) -> bool:
        t = int(event["step"]) if spec.steps else int(event["train_time_ms"] // 1000)
        at = t // grid * grid
        if at >= 0.9 * length:
            return False
        if last["value"] is not None:
            for point in range(last["at"] + grid, at, grid):
                trial.report(last["value"], point)
        trial.report(float(event["val_bpb"]), at)
        last.update(at=at, value=float(event["val_bpb"]))
        return trial.should_prune()

    return on_val
