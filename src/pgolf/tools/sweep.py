"""``pgolf sweep``: search a config space with Optuna (tooling; nothing counted imports it). The
space, the seeds and the pruner are declared in a sweep file (``sweepfile``).

Each run is its own ``pgolf train`` process (``torchrun`` over every GPU when there are several),
run one after another, with its folder under ``OUT/trials``. Its objective is the round-trip
val_bpb from ``result.json``; a run off its track (over the byte cap, or over a time cap unless
screening at fixed steps) is pruned as infeasible, with the reason kept on the trial. Intermediate
validations are read from the run's ``events.jsonl`` while it trains and reported to the pruner
(at equal seconds of training under a wall clock, at equal steps when screening), which stops a
losing run early. The study lives in ``OUT/study.db`` (SQLite); rerunning the command resumes it:
finished runs with the same overrides are reused, a run left behind by a killed sweep is stopped
and its trial (marked failed once its heartbeat is 3 minutes stale) replaced by a new one, and
the sampler is re-seeded by the trial count so new trials draw new points. The sweep ends by
re-running the best ``finalists`` on ``final_seeds`` and writing the best as ``OUT/best.toml``;
``pgolf sweep show OUT`` prints every trial and writes the history and importance plots.

Every run scores the dataset's dev split by default (the sweep file's ``split``; ``tools.data.splits``):
the sweep says which split at its start, in ``finalists.json``, ``best.toml`` and ``show``, and keeps it
in the study, so a study is never resumed on another split. ``pgolf check RUN --sweep OUT`` reports it.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path
from typing import Any

from pgolf.config.run import apply_overrides
from pgolf.errors import ConfigError
from pgolf.fileio import write_json_atomic
from pgolf.tools.config_files import as_flag, resolve, write_config_file
from pgolf.tools.data.splits import search_split
from pgolf.tools.sweepfile import SweepSpec, trial_overrides

STUDY = "pgolf"
"""Every sweep folder holds one study of this name."""


def launch_command(spec: SweepSpec, overrides: dict[str, str], out_dir: Path) -> list[str]:
    """``pgolf train`` for one run (``--off-track``: the sweep judges its runs itself); over every GPU
    of the machine when it has more than one."""
    flags = ["--off-track", *(x for k, v in overrides.items() for x in (f"--{k}", v))]
    gpus = _gpu_count()
    head = (
        [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={gpus}"]
        if gpus > 1 else [sys.executable]
    )  # fmt: skip
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
    judge the training clock (it has none) but still judges bytes and evaluation time."""
    reasons = list(result.get("off_track", []))
    if screening:
        reasons = [r for r in reasons if not r.startswith(("train.max_wallclock_seconds", "training took"))]
    return reasons


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


# ---- the study ---------------------------------------------------------------------------------


def _optuna():
    try:
        import optuna
    except ImportError:
        raise ConfigError("pgolf sweep needs Optuna: pip install 'pgolf[sweep]' (or optuna)") from None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna


def open_study(out_dir: Path, spec: SweepSpec | None = None, create: bool = True):
    """The study of a sweep folder (SQLite, with heartbeats so a killed trial is marked failed)."""
    optuna = _optuna()
    db = Path(out_dir) / "study.db"
    if not create and not db.exists():
        raise ConfigError(f"{out_dir}: no sweep here (no study.db)")
    db.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)  # heartbeats: stable enough
        storage = optuna.storages.RDBStorage(f"sqlite:///{db}", heartbeat_interval=60, grace_period=180)
    if not create:
        return optuna.load_study(study_name=STUDY, storage=storage)
    warmup = _run_length(spec) // 3  # judged from a third of the run on (steps or seconds: _reporter)
    pruner = {
        "median": lambda: optuna.pruners.MedianPruner(
            n_startup_trials=spec.startup_trials, n_warmup_steps=warmup
        ),
        "halving": lambda: optuna.pruners.SuccessiveHalvingPruner(min_resource=max(1, warmup)),
        "none": lambda: optuna.pruners.NopPruner(),
    }[spec.pruner]()
    study = optuna.create_study(study_name=STUDY, storage=storage, direction="minimize",
                                pruner=pruner, load_if_exists=True)  # fmt: skip
    # seeded by how far the study got, so a resumed sweep does not replay the first trials' draws
    study.sampler = optuna.samplers.TPESampler(
        seed=spec.sampler_seed + len(study.trials), n_startup_trials=spec.startup_trials
    )
    return study


def _run_length(spec: SweepSpec) -> int:
    """A run's length in the pruner's unit: steps when screening, else seconds of the training cap."""
    if spec.steps:
        return spec.steps
    cfg = apply_overrides(resolve(spec.base), spec.fixed)
    return int(cfg.train.max_wallclock_seconds) or cfg.train.iterations


def _stale(out_dir: Path) -> None:
    """Stop a run left behind by a killed sweep (its process group, from the pid file), then clear
    its folder: the run log appends, so a rerun must start from an empty one."""
    pid_file = out_dir / "run.pid"
    if pid_file.exists():
        with contextlib.suppress(ProcessLookupError, ValueError, PermissionError):
            os.killpg(int(pid_file.read_text()), signal.SIGKILL)
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
        (out_dir / "run.pid").write_text(str(proc.pid))
        try:
            stopped = follow(proc, out_dir / "events.jsonl", on_val or (lambda event: False))
        except BaseException:  # Ctrl-C, or SIGTERM/SIGHUP turned into SystemExit by run_sweep
            stop(proc)
            raise
    (out_dir / "run.pid").unlink()
    if stopped:
        return {"pruned": True}
    if proc.returncode != 0 or not result.exists():
        tail = (out_dir / "stdout.txt").read_text(encoding="utf-8", errors="replace")[-800:]
        raise RuntimeError(f"run {out_dir} failed (exit {proc.returncode}):\n{tail}")
    return json.loads(result.read_text())


def _reporter(trial, spec: SweepSpec):
    """The pruner's view of a run: its validations at the same step (screening) or, under a wall
    clock, at equal seconds of training, so fast small models are compared with slow large ones at
    equal time, not equal steps. Runs validate at different times, so each validation is reported
    on a grid of 1/20 of the run, every point since the previous one holding the previous value
    (what was known then): the median pruner then finds every trial at every point. The last tenth
    of the run is never pruned (it is nearly done)."""
    length = _run_length(spec)
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


def _objective(spec: SweepSpec, out_dir: Path, echo):
    optuna = _optuna()

    def objective(trial) -> float:
        params = {p.key: p.suggest(trial) for p in spec.space}
        try:
            reason = preflight(spec, params)
        except ConfigError as e:  # a combination no single choice shows (e.g. heads vs width)
            reason = f"invalid config: {e}"
        if reason:
            trial.set_user_attr("infeasible", [reason])
            raise optuna.TrialPruned()
        values = []
        for i, seed in enumerate(spec.seeds):  # the pruner judges the first seed's curve only
            run_dir = out_dir / "trials" / f"{trial.number:04d}_seed{seed}"
            result = run_one(spec, params, seed, run_dir, _reporter(trial, spec) if i == 0 else None, echo)
            if result.get("pruned"):
                raise optuna.TrialPruned()
            if reasons := judge(result, bool(spec.steps)):
                trial.set_user_attr("infeasible", reasons)
                raise optuna.TrialPruned()
            values.append(result["val_bpb"])
            trial.set_user_attr(f"seed{seed}", {k: result[k] for k in ("val_bpb", "steps", "bytes_total")})
        return sum(values) / len(values)

    return objective


@contextlib.contextmanager
def _signals_raise():
    """While the sweep runs, SIGTERM and SIGHUP end it like Ctrl-C does, so the running trial's
    process group is stopped on the way out instead of training on beside the next sweep."""

    def handler(signum, frame):
        raise SystemExit(128 + signum)

    previous = {}
    for sig in (signal.SIGTERM, signal.SIGHUP):
        with contextlib.suppress(ValueError):  # not the main thread: leave it
            previous[sig] = signal.signal(sig, handler)
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def run_sweep(spec: SweepSpec, out_dir: Path, echo=print) -> dict | None:
    """Run the trials still missing from the study, then the finalists; returns the best finalist
    (or trial) as written to ``OUT/best.toml``, None if no trial completed."""
    with _signals_raise():
        return _run_sweep(spec, out_dir, echo)


def _run_sweep(spec: SweepSpec, out_dir: Path, echo) -> dict | None:
    optuna = _optuna()
    opt_out = 'split = "val" in the sweep file'
    echo(search_split(apply_overrides(resolve(spec.base), spec.fixed).data, spec.split, opt_out)[1])
    study = open_study(out_dir, spec)
    _keep_split(study, spec.split, out_dir)
    finished = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    done = sum(t.state in finished for t in study.trials)  # a failed or killed trial is run again
    if done < spec.trials:
        study.optimize(_objective(spec, out_dir, echo), n_trials=spec.trials - done, catch=(RuntimeError,))
    complete = sorted((t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE),
                      key=lambda t: t.value)  # fmt: skip
    if not complete:
        return None
    finals = []
    for t in complete[: spec.finalists]:
        runs = [run_one(spec, t.params, s, out_dir / "final" / f"{t.number:04d}_seed{s}", echo=echo)
                for s in spec.final_seeds]  # fmt: skip
        feasible = [r for r in runs if not r.get("pruned") and not judge(r, bool(spec.steps))]
        values = [r["val_bpb"] for r in feasible]
        finals.append({"trial": t.number, "params": t.params, "seeds": list(spec.final_seeds),
                       "val_bpb": values, "mean": sum(values) / len(values) if values else math.inf,
                       "feasible": len(feasible) == len(runs), "split": spec.split})  # fmt: skip
    write_json_atomic(out_dir / "finalists.json", finals)
    best = min((f for f in finals if f["feasible"]), key=lambda f: f["mean"], default=None)
    if best is None:
        t = complete[0]
        best = {"trial": t.number, "params": t.params, "mean": t.value, "seeds": list(spec.seeds),
                "split": spec.split}  # fmt: skip
    kept = {k: v for k, v in spec.fixed.items() if not k.startswith("data.")}  # where it ran, not what
    cfg = apply_overrides(resolve(spec.base), {**kept, **{k: as_flag(v) for k, v in best["params"].items()}})
    write_json_atomic(out_dir / "best.json", best)  # what `pgolf check RUN --sweep OUT` compares a run with
    write_config_file(cfg, out_dir / "best.toml", spec.base,
                      comment=f"pgolf sweep: trial {best['trial']}, mean {spec.split}_bpb {best['mean']:.4f} "
                              f"over seeds {best['seeds']}, scored on the {spec.split} split "
                              "(the sweep's data.* left out)")  # fmt: skip
    return best


def _keep_split(study, split: str, out_dir: Path) -> None:
    """Record the split a new study scores; refuse to resume one on another (a study from before
    splits existed scored validation)."""
    had = study.user_attrs.get("split", "val" if study.trials else None)
    if had is None:
        study.set_user_attr("split", split)
    elif had != split:
        raise ConfigError(
            f"{out_dir}: its study scored the {had} split and this sweep file scores {split}: one study, one "
            "split (choose another --out)"
        )


def study_split(study) -> str:
    """The split a study's runs scored (validation for a study from before splits existed)."""
    return study.user_attrs.get("split", "val")


def show(out_dir: Path) -> list[str]:
    """The trials as a table, the finalists, and the plots written beside the study."""
    optuna = _optuna()
    study = open_study(out_dir, create=False)
    keys, split = list(dict.fromkeys(k for t in study.trials for k in t.params)), study_split(study)
    lines = [f"scored on: the {split} split", " ".join(["trial", "state    ", f"{split}_bpb", *keys])]
    for t in study.trials:
        value = f"{t.value:.4f}" if t.value is not None else "-"
        params = [_short(t.params.get(k, "-")) for k in keys]
        note = f"  ({'; '.join(t.user_attrs['infeasible'])})" if "infeasible" in t.user_attrs else ""
        lines.append(" ".join([f"{t.number:5d}", f"{t.state.name:9s}", f"{value:>7s}", *params]) + note)
    finals = Path(out_dir) / "finalists.json"
    if finals.exists() and json.loads(finals.read_text()):
        lines.append("finalists (mean over final seeds):")
        lines += [f"  trial {f['trial']}: {f['mean']:.4f} {f['val_bpb']} seeds {f['seeds']}"
                  for f in json.loads(finals.read_text())]  # fmt: skip
    return lines + _plots(optuna, study, Path(out_dir))


def _short(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _plots(optuna, study, out_dir: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    from optuna.visualization import matplotlib as plots

    out = []
    for name, fn in (
        ("history", plots.plot_optimization_history),
        ("importance", plots.plot_param_importances),
    ):
        path = out_dir / f"{name}.png"
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # "experimental" notices of optuna's matplotlib plots
                ax = fn(study)
            ax.figure.savefig(path, dpi=110, bbox_inches="tight")
            out.append(f"wrote {path}")
        except (ValueError, RuntimeError) as e:  # e.g. importances need two finished trials
            out.append(f"no {name} plot: {e}")
    return out
