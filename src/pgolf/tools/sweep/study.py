"""The study of a sweep (tooling): one Optuna study that one machine or many share, and the loop every
worker runs on it (``studies`` says how work is shared: drawn trials, queued items, heartbeats).

The study lives in ``OUT/study.db`` (SQLite, one machine) or at ``--storage URL`` (a database server:
any number of ``pgolf sweep worker`` processes, on any machines, each writing its runs under its own
``--out``). A worker takes work until there is none left to start and none running elsewhere:

1. **search**: new trials, drawn by TPE (seeded by the trial's number, so workers never draw alike and
   a resumed sweep never replays a point), until ``trials`` of them are finished (complete, or pruned
   as infeasible or losing). Each runs the spec's ``seeds`` in turn, in ``OUT/trials/NNNN_seedS``.
2. **finalists**: when the search is finished, the best ``finalists`` trials are re-run on
   ``final_seeds``, each (trial, seed) a queued trial of the same study, so they spread over the
   workers too; runs in ``OUT/final/NNNN_seedS`` (``NNNN``: the finalist's trial).

A trial whose worker dies is failed once its heartbeat is three beats stale, and never counted: a
search point is drawn anew, a finalist's seed queued again. The first worker writes the sweep file's
identity (its config and every key but ``trials``) and the hardware pin into the study; a worker with
another sweep file, or on another kind of machine, is refused. Every worker ends by writing the
finalists and ``best.toml`` into its own folder.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from pathlib import Path

from pgolf.config.run import apply_overrides
from pgolf.errors import ConfigError, PgolfError
from pgolf.fileio import write_json_atomic
from pgolf.tools import studies
from pgolf.tools.config_files import as_flag, resolve, write_config_file
from pgolf.tools.data.splits import search_split
from pgolf.tools.studies import claimed, duplicate, host, need_optuna, settled, signals_raise, surplus
from pgolf.tools.sweep.runs import judge, preflight, reporter, run_length, run_one, stop_orphans
from pgolf.tools.sweep.spec import SweepSpec

STUDY = "pgolf"
"""The study's name unless ``--study`` names another (one database may hold many sweeps)."""
FINAL = ("final_of", "seed")
"""A finalist's seed: the user attributes that identify it."""
MAX_FAILURES = 3
"""A worker whose runs fail this many times in a row stops: its machine is broken, not the trials."""


def is_final(t) -> bool:
    return "final_of" in t.user_attrs


def storage_url(out_dir: Path, storage: str | None) -> str:
    return storage or f"sqlite:///{Path(out_dir) / 'study.db'}"


def open_study(
    out_dir: Path,
    spec: SweepSpec | None = None,
    *,
    storage: str | None = None,
    name: str = STUDY,
    create: bool = True,
):
    """The sweep's study, joined (``create``: made if absent, checked against ``spec``) or only read."""
    if create:
        return join(out_dir, spec, storage=storage, name=name)[0]
    optuna = need_optuna()
    if storage is None and not (Path(out_dir) / "study.db").exists():
        raise ConfigError(f"{out_dir}: no sweep here (no study.db); a shared study needs --storage URL")
    store = studies.storage(storage_url(out_dir, storage), 60)
    try:
        return optuna.load_study(study_name=name, storage=store)
    except KeyError:
        names = optuna.get_all_study_names(store)
        raise ConfigError(
            f"no study {name!r} in {studies.redact(storage_url(out_dir, storage))} "
            f"(it holds {names}); --study NAME names one"
        ) from None


def join(out_dir: Path, spec: SweepSpec, *, storage: str | None = None, name: str = STUDY) -> tuple:
    """The study, made if absent, with its identity and pin checked; and this machine's kind."""
    optuna = need_optuna()
    if storage is None:
        Path(out_dir).mkdir(parents=True, exist_ok=True)
    store = studies.storage(storage_url(out_dir, storage), spec.heartbeat_s)
    study, created = studies.open_or_create(name, store, pruner=_pruner(optuna, spec))
    return study, _declare(study, spec, created or storage is None)


def _pruner(optuna, spec: SweepSpec):
    warmup = run_length(spec) // 3  # judged from a third of the run on (steps or seconds: reporter)
    return {
        "median": lambda: optuna.pruners.MedianPruner(
            n_startup_trials=spec.startup_trials, n_warmup_steps=warmup
        ),
        "halving": lambda: optuna.pruners.SuccessiveHalvingPruner(min_resource=max(1, warmup)),
        "none": lambda: optuna.pruners.NopPruner(),
    }[spec.pruner]()


def identity(spec: SweepSpec) -> dict:
    """What every worker of a study must agree on: the base config with the fixed overrides (its data
    root aside: each machine has its own) and every key of the sweep file but ``trials``."""
    cfg = apply_overrides(resolve(spec.base), spec.fixed)
    config = dataclasses.asdict(cfg)
    config["data"]["root"] = ""
    keys = {
        f.name: getattr(spec, f.name)
        for f in dataclasses.fields(spec)
        if f.name not in ("base", "fixed", "trials")
    }
    return json.loads(json.dumps({"config": config, **keys}, default=str))


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        out |= _flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v}
    return out


def _declare(study, spec: SweepSpec, owner: bool) -> str:
    """Write (as the study's creator, or on a sweep folder's own SQLite study made before these
    attributes) or check the sweep's identity and hardware pin; returns this machine's kind."""
    kind = studies.machine_kind(spec.nproc_per_node)
    mine = identity(spec)
    if owner and "spec" not in study.user_attrs:
        if study.trials and spec.split != "val":  # a sweep folder's study from before splits existed
            raise ConfigError(
                f"study {study.study_name!r} scored the val split and this sweep file scores {spec.split}: "
                "one study, one split (choose another --out)"
            )
        study.set_user_attr("hardware", studies.pin_pattern(spec.hardware, kind))
        study.set_user_attr("spec", mine)  # last: a joiner waits for it
    a = _flat(mine)
    b = {"split": "val", "config.data.score_split": "val", **_flat(studies.wait_for(study, "spec"))}  # older
    if a["split"] != b["split"]:
        raise ConfigError(
            f"study {study.study_name!r} scored the {b.get('split', 'val')} split and this sweep file scores "
            f"{spec.split}: one study, one split (choose another --out, or --study)"
        )
    if differ := sorted(k for k in a.keys() | b.keys() if a.get(k) != b.get(k)):
        raise ConfigError(
            f"study {study.study_name!r} was started from another sweep file ({', '.join(differ[:6])} "
            "differ): join it with the same file (only `trials` may differ), or name another --study"
        )
    pattern = study.user_attrs["hardware"]
    if not studies.fits(pattern, kind):
        raise ConfigError(
            f"study {study.study_name!r} runs on {pattern!r} and this machine is {kind!r}: results of "
            "different machines are never ranked together (run it there, or pin `hardware` in a new study)"
        )
    return kind


def _sampler(spec: SweepSpec, number: int):
    """TPE seeded by the trial's number: reproducible alone, distinct across workers; a running trial
    counts as a poor one (constant liar), so parallel workers spread out."""
    optuna = need_optuna()
    return optuna.samplers.TPESampler(
        seed=spec.sampler_seed + number, n_startup_trials=spec.startup_trials, constant_liar=True
    )


def work(
    spec: SweepSpec, out_dir: Path, *, storage: str | None = None, name: str = STUDY, echo=print
) -> dict | None:
    """Join (or start) the study and take its work until all is done, then write the finalists and
    ``best.toml`` here; returns the best (None if no trial completed). SIGTERM and SIGHUP end it like
    Ctrl-C: the running trial's process group is stopped on the way out."""
    with signals_raise():
        cfg = apply_overrides(resolve(spec.base), spec.fixed)
        echo(search_split(cfg.data, spec.split, 'split = "val" in the sweep file')[1])
        study, kind = join(out_dir, spec, storage=storage, name=name)
        stop_orphans(Path(out_dir))
        _take_all(study, spec, kind, Path(out_dir), echo)
        return conclude(study, spec, Path(out_dir))


def _take_all(study, spec: SweepSpec, kind: str, out_dir: Path, echo) -> None:
    outcome: dict = {}
    objective = _objective(spec, kind, out_dir, echo, outcome)
    failures = 0
    while True:
        studies.fail_stale(study)
        trials = study.get_trials(deepcopy=False)
        if _pending(study, trials, spec):
            outcome.clear()
            studies.take(study, objective, catch=(RuntimeError,))
            failures = failures + 1 if "error" in outcome else 0
            if failures >= MAX_FAILURES:
                raise PgolfError(
                    f"{failures} runs failed in a row on this machine; the last: {outcome['error']}"
                )
        elif _done(trials, spec):
            return
        else:
            time.sleep(studies.POLL_S)  # work runs elsewhere; wait (if its worker dies, take it over)


def _pending(study, trials, spec: SweepSpec) -> bool:
    """Whether there is work to start: a point to draw, or (the search finished) a finalist's seed to
    run, queued here if no trial holds it."""
    search = [t for t in trials if not is_final(t)]
    if sum(claimed(t) for t in search) < spec.trials:
        return True
    if _finished(search) >= spec.trials:
        studies.enqueue_missing(study, trials, _final_items(search, spec), FINAL)
        trials = study.get_trials(deepcopy=False)
    return any(t.state.name == "WAITING" for t in trials)


def _finished(search) -> int:
    return sum(t.state.name in ("COMPLETE", "PRUNED") for t in search)


def _ranked(search) -> list:
    return sorted((t for t in search if t.state.name == "COMPLETE"), key=lambda t: t.value)


def _final_items(search, spec: SweepSpec) -> list[tuple[dict, dict]]:
    return [
        ({"final_of": t.number, "seed": s}, t.params)
        for t in _ranked(search)[: spec.finalists]
        for s in spec.final_seeds
    ]


def _done(trials, spec: SweepSpec) -> bool:
    search = [t for t in trials if not is_final(t)]
    held = {studies.identity(t, FINAL) for t in trials if is_final(t) and settled(t)}
    items = _final_items(search, spec)
    return _finished(search) >= spec.trials and all(tuple(a[k] for k in FINAL) in held for a, _ in items)


def _objective(spec: SweepSpec, kind: str, out_dir: Path, echo, outcome: dict):
    optuna = need_optuna()

    def objective(trial) -> float:
        trial.set_user_attr("worker", f"{host()}:{out_dir.resolve()}")
        trial.set_user_attr("hardware", kind)
        trials = trial.study.get_trials(deepcopy=False)
        if is_final(trial):
            if duplicate(trials, trial, FINAL):
                surplus(trial, "queued twice: another trial runs this finalist's seed")
            of, seed = trial.user_attrs["final_of"], trial.user_attrs["seed"]
            params = {p.key: p.suggest(trial) for p in spec.space}  # the finalist's, as queued
            return _run(
                trial, spec, params, seed, out_dir / "final" / f"{of:04d}_seed{seed}", None, echo, outcome
            )
        if sum(claimed(t) and not is_final(t) for t in trials if t.number < trial.number) >= spec.trials:
            surplus(trial, "drawn past the budget: other workers took the last trials")
        trial.study.sampler = _sampler(spec, trial.number)
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
            on_val = reporter(trial, spec) if i == 0 else None
            values.append(_run(trial, spec, params, seed, run_dir, on_val, echo, outcome))
        return sum(values) / len(values)

    return objective


def _run(
    trial, spec: SweepSpec, params: dict, seed: int, run_dir: Path, on_val, echo, outcome: dict
) -> float:
    """One run of a trial, listed on the trial (so ``show`` finds it on any machine); its val_bpb, or
    the trial pruned (stopped early, or off its track) or failed (the run failed: ``error``)."""
    optuna = need_optuna()
    where = {"seed": seed, "host": host(), "dir": str(run_dir.resolve())}
    trial.set_user_attr("runs", [*trial.user_attrs.get("runs", []), where])
    try:
        result = run_one(spec, params, seed, run_dir, on_val, echo)
    except RuntimeError as e:
        trial.set_user_attr("error", str(e)[-1500:])
        outcome["error"] = str(e).splitlines()[0]
        echo(f"trial {trial.number}: {outcome['error']}")
        raise
    if result.get("pruned"):
        raise optuna.TrialPruned()
    if not math.isfinite(result["val_bpb"]):  # Optuna would fail it as if its worker were lost
        trial.set_user_attr("error", f"the run diverged (score {result['val_bpb']})")
        echo(f"trial {trial.number}: {trial.user_attrs['error']}")  # the trial's, not the machine's
        raise RuntimeError(trial.user_attrs["error"])
    if reasons := judge(result, bool(spec.steps)):
        trial.set_user_attr("infeasible", reasons)
        raise optuna.TrialPruned()
    trial.set_user_attr(f"seed{seed}", {k: result[k] for k in ("val_bpb", "steps", "bytes_total")})
    return result["val_bpb"]


def study_split(study) -> str:
    """The split a study's runs scored (validation for a study from before splits existed)."""
    return study.user_attrs.get("spec", {}).get("split", "val")


def finalists(trials, seeds: list[int] | None = None) -> list[dict]:
    """Each finalist's re-runs, in the order of the search's ranking: its seeds (``seeds``, else those
    run), their val_bpb (complete ones), mean, and whether every seed completed on its track."""
    search = [t for t in trials if not is_final(t)]
    out = []
    for t in _ranked(search):
        runs: dict = {}
        for x in trials:  # in order of number: a seed's first finished trial (a second is a surplus)
            if x.user_attrs.get("final_of") == t.number and x.state.name in ("COMPLETE", "PRUNED"):
                runs.setdefault(x.user_attrs["seed"], x)
        if not runs and seeds is None:
            continue
        wanted = list(seeds) if seeds is not None else sorted(runs)
        values = [runs[s].value for s in wanted if s in runs and runs[s].state.name == "COMPLETE"]
        out.append(
            {
                "trial": t.number,
                "params": t.params,
                "seeds": wanted,
                "val_bpb": values,
                "mean": sum(values) / len(values) if values else math.inf,
                "feasible": len(values) == len(wanted),
            }
        )
    return out


def conclude(study, spec: SweepSpec, out_dir: Path) -> dict | None:
    """Write ``finalists.json`` and ``best.toml`` (the best feasible finalist, else the best trial);
    returns the best, None if no trial completed."""
    trials = study.get_trials(deepcopy=False)
    ranked = _ranked([t for t in trials if not is_final(t)])
    if not ranked:
        return None
    finals = [{**f, "split": spec.split} for f in finalists(trials, list(spec.final_seeds))[: spec.finalists]]
    write_json_atomic(out_dir / "finalists.json", finals)
    best = min((f for f in finals if f["feasible"]), key=lambda f: f["mean"], default=None)
    if best is None:
        t = ranked[0]
        best = {
            "trial": t.number,
            "params": t.params,
            "mean": t.value,
            "seeds": list(spec.seeds),
            "split": spec.split,
        }
    kept = {k: v for k, v in spec.fixed.items() if not k.startswith("data.")}  # where it ran, not what
    cfg = apply_overrides(resolve(spec.base), {**kept, **{k: as_flag(v) for k, v in best["params"].items()}})
    write_json_atomic(out_dir / "best.json", best)  # what `pgolf check RUN --sweep OUT` compares a run with
    write_config_file(
        cfg,
        out_dir / "best.toml",
        spec.base,
        comment=f"pgolf sweep: trial {best['trial']}, mean {spec.split}_bpb {best['mean']:.4f} "
        f"over seeds {best['seeds']}, scored on the {spec.split} split "
        "(the sweep's data.* left out)",
    )
    return best
