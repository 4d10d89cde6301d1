"""``pgolf record --storage URL`` and ``--join NAME``: a record's seeds as work items that several
machines take, through one Optuna study (``pgolf.tools.studies``), the folder assembled when all are in.

The declaring machine writes the record folder exactly as ``pgolf record`` does before its first run
(the bundled ``train_gpt.py``, ``seeds.json`` with the declared seeds and the time of declaration),
then a study ``record:NAME`` at URL holding the folder's name, the seeds, that time, the record's
description and the bundled file itself; each seed is a queued trial. Any machine joins with
``pgolf record --join NAME --storage URL``: it takes seeds until none is left to start, runs each
through the declared bundle (written from the study, byte for byte, into its own copy of the folder:
``--root``/TRACK/FOLDER), and stores the seed's result, log and artifact on its trial. The machine
whose ``--root`` holds the declared folder (the declaring one, or a rerun of ``--join`` there) also
waits until every seed is in, writes the other machines' files into the folder and finalizes it as
``pgolf record`` does: the declared seeds and their order are ``seeds.json``'s.

A seed whose worker dies (its heartbeat three beats stale) is queued again; a seed whose run fails
fails the record, with that run's message. ``pgolf check`` compares each run's start with the time of
declaration, so the machines' clocks must agree (NTP).
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from pathlib import Path

from pgolf.errors import PgolfError
from pgolf.fileio import write_bytes_atomic
from pgolf.tools import studies
from pgolf.tools.records.check import Rule
from pgolf.tools.records.folder import (
    GITIGNORE, RecordInfo, data_root_of, declare_record, finalize_record, hardware_name, run_seed,
)

PREFIX = "record:"
"""A record's study is named ``record:NAME`` (NAME: ``--name``)."""
HEARTBEAT_S = 60
SEED = ("seed",)


def declare(cfg, seeds: list[int], info: RecordInfo, *, root: Path, storage: str) -> Path:
    """The record folder (as ``pgolf record`` writes it before any run) and its study, every seed
    queued; refused if a record of this name is already declared there."""
    optuna = studies.need_optuna()
    store = studies.storage(storage, HEARTBEAT_S)
    study, created = studies.open_or_create(PREFIX + info.name, store)
    if not created:
        raise PgolfError(f"a record {info.name!r} is already declared in {studies.redact(storage)}: take "
                         f"its seeds with --join {info.name}, or choose another --name")
    try:
        folder = declare_record(cfg, seeds, info, root=root)
    except BaseException:
        optuna.delete_study(study_name=PREFIX + info.name, storage=store)
        raise
    declared = json.loads((folder / "seeds.json").read_text())
    for s in seeds:
        study.enqueue_trial({}, user_attrs={"seed": s})
    studies.put_files(study, {"train_gpt.py": (folder / "train_gpt.py").read_bytes()})
    record = {"folder": folder.name, "track": cfg.track, "seeds": seeds,
              "declared_at": declared["declared_at"], "info": dataclasses.asdict(info)}
    study.set_user_attr("record", record)  # last: a joiner waits for it
    return folder


def join(name: str, *, storage: str, root: Path, nproc: int, data_root: str, comparison=None,
         echo=print) -> tuple[Path, list[Rule] | None]:
    """Take the record's seeds until none is left to start; where the declared folder is, wait for
    every seed and assemble the folder. Returns the folder and, where assembled, its rules."""
    optuna = studies.need_optuna()
    store = studies.storage(storage, HEARTBEAT_S)
    try:
        study = optuna.load_study(study_name=PREFIX + name, storage=store)
    except KeyError:
        raise PgolfError(f"no record {name!r} is declared in {studies.redact(storage)}") from None
    record = studies.wait_for(study, "record")
    folder = Path(root) / record["track"] / record["folder"]
    here = _declared_here(folder, record)
    if not here:
        _working_copy(folder, studies.get_files(study)["train_gpt.py"])
    objective = _objective(folder, nproc, data_root)
    items = [({"seed": s}, {}) for s in record["seeds"]]
    with studies.signals_raise():  # SIGTERM/SIGHUP: the seed running here is failed and stopped
        while True:
            studies.fail_stale(study)
            trials = study.get_trials(deepcopy=False)
            if studies.enqueue_missing(study, trials, items, SEED):  # new, or its worker lost
                trials = study.get_trials(deepcopy=False)
            if any(t.state.name == "WAITING" for t in trials):
                studies.take(study, objective)
            elif all(any(studies.settled(t) and t.user_attrs.get("seed") == s for t in trials)
                     for s in record["seeds"]):
                break
            elif not here:
                break  # the rest runs elsewhere; the declaring machine assembles
            else:
                time.sleep(studies.POLL_S)
    if not here:
        echo(f"seeds taken here are in {folder}; the machine holding the declared folder assembles it")
        return folder, None
    return folder, _assemble(study, folder, record, comparison)


def _declared_here(folder: Path, record: dict) -> bool:
    path = folder / "seeds.json"
    return path.is_file() and json.loads(path.read_text()).get("declared_at") == record["declared_at"]


def _working_copy(folder: Path, bundle: bytes) -> None:
    """This machine's folder for the seeds it takes: the declared bundle, nothing declared."""
    code = folder / "train_gpt.py"
    if code.is_file() and code.read_bytes() != bundle:
        raise PgolfError(f"{folder} holds another train_gpt.py than the record's: use another --root")
    folder.mkdir(parents=True, exist_ok=True)
    write_bytes_atomic(code, bundle)
    write_bytes_atomic(folder / ".gitignore", GITIGNORE)


def _objective(folder: Path, nproc: int, data_root: str):
    def objective(trial) -> float:
        seed = trial.user_attrs.get("seed")
        if seed is None:
            studies.surplus(trial, "no seed was left: made by a race between workers")
        if studies.duplicate(trial.study.get_trials(deepcopy=False), trial, SEED):
            studies.surplus(trial, "queued twice: another trial runs this seed")
        trial.set_user_attr("hardware", hardware_name())
        trial.set_user_attr("host", studies.host())
        _set_aside(folder / "runs" / f"seed{seed}")  # a lost take of this seed here: the bundle refuses it
        try:
            score = run_seed(folder, seed, data_root, nproc)
        except PgolfError as e:
            trial.set_user_attr("error", str(e))
            raise
        if not math.isfinite(score.val_bpb):  # Optuna would fail it as if its worker were lost
            trial.set_user_attr("error", f"seed {seed} diverged (score {score.val_bpb})")
            raise PgolfError(trial.user_attrs["error"])
        names = (f"result_seed{seed}.json", f"train_seed{seed}.log", f"artifact_seed{seed}.pgolf")
        studies.put_files(trial, {n: (folder / n).read_bytes() for n in names if (folder / n).is_file()})
        return score.val_bpb

    return objective


def _set_aside(run: Path) -> None:
    """Keep a run folder a lost worker left (its logs may say why) under a new name."""
    if run.exists():
        run.rename(run.with_name(f"{run.name}.lost-{time.strftime('%Y%m%d-%H%M%S')}"))


def _assemble(study, folder: Path, record: dict, comparison) -> list[Rule]:
    """Every seed's files into the declared folder (from the study, where another machine ran it),
    then ``submission.json`` and ``README.md``, naming the machines the seeds ran on."""
    trials = study.get_trials(deepcopy=False)
    failed = [f"seed {t.user_attrs['seed']}: {t.user_attrs['error']}" for t in trials if studies.errored(t)]
    if failed:
        raise PgolfError("the record's runs failed: " + "; ".join(failed))
    machines = {}
    for s in record["seeds"]:
        t = next(t for t in trials if t.state.name == "COMPLETE" and t.user_attrs.get("seed") == s)
        machines[s] = t.user_attrs.get("hardware", "")
        for name, data in studies.get_files(t).items():
            path = folder / name
            if not path.is_file() or path.read_bytes() != data:
                write_bytes_atomic(path, data)
    kinds = set(machines.values())
    hardware = kinds.pop() if len(kinds) == 1 else "; ".join(f"seed {s}: {h}" for s, h in machines.items())
    return finalize_record(folder, RecordInfo(**record["info"]), comparison, hardware)


def record_here(cfg, seeds: list[int], info: RecordInfo, *, root: Path, storage: str, nproc: int,
                comparison=None) -> tuple[Path, list[Rule] | None]:
    """Declare the record, then take its seeds with the others and assemble it here."""
    declare(cfg, seeds, info, root=root, storage=storage)
    return join(info.name, storage=storage, root=root, nproc=nproc, data_root=data_root_of(cfg),
                comparison=comparison)
