"""Work shared by many machines through one Optuna study (tooling): the sweep's trials and finalists
(``sweep.study``) and a record's seeds (``records.spread``).

A study lives in a database that every worker reaches: the SQLite file of a sweep folder (one
machine), or a server (``postgresql://user@host/db``, ``mysql+pymysql://...``) for many. Each piece of
work is a trial of the study, taken by exactly one worker:

- a *drawn* trial (a new point of the sweep) is created by ``study.ask()``, which numbers trials under
  a lock on the study row, so numbers are unique and in order of creation; a worker that finds
  ``budget`` claimed trials below its own number has drawn one too many (``Surplus``);
- a *queued* trial (a finalist's seed, a record's seed) is enqueued as WAITING with its identity in
  its user attributes, and ``ask()`` moves a WAITING trial to RUNNING in one transaction, so two
  workers never take the same one; an item enqueued twice by a race is run once (the later copy is
  ``Surplus``).

A running trial beats every ``heartbeat_s`` (Optuna's heartbeat thread); one silent for three beats
(its worker killed, its machine gone) is failed by the next worker that looks (``fail_stale``) and is
never counted: its drawn point is replaced, its queued item enqueued again. A trial whose run failed
on its own carries an ``error`` attribute and is not retried (it would fail again).
"""

from __future__ import annotations

import base64
import contextlib
import fnmatch
import glob
import hashlib
import os
import platform
import signal
import socket
import subprocess
import sys
import warnings
import zlib
from collections.abc import Callable, Iterable
from typing import Any

from pgolf.errors import ConfigError

POLL_S = 2.0
"""How often a worker with nothing to start looks at the study again (one query, and stale trials)."""
CHUNK = 48_000
"""Characters of base64 per user attribute: under MySQL's 64 KiB TEXT, so any Optuna database holds them."""


def need_optuna():
    try:
        import optuna
    except ImportError:
        raise ConfigError("this needs Optuna: pip install 'pgolf[sweep]' (or optuna)") from None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna


def host() -> str:
    return socket.gethostname()


def redact(url: str) -> str:
    """The URL with its password hidden, for messages."""
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # an unparsable URL: say it is one, without echoing what may be a secret
        return "<a database URL>"


def driver_url(url: str) -> str:
    """``postgresql://`` with psycopg 3 (``pgolf[postgres]``) whatever SQLAlchemy's default driver for it
    (psycopg2 before SQLAlchemy 2.1); a URL that names its driver is kept."""
    for scheme in ("postgresql://", "postgres://"):
        if url.startswith(scheme):
            return "postgresql+psycopg://" + url[len(scheme) :]
    return url


def storage(url: str, heartbeat_s: int):
    """Optuna's database storage at ``url`` with heartbeats (a trial silent for three is stale). A server
    connection is checked before use (``pool_pre_ping``): workers hold one idle for a whole run."""
    optuna = need_optuna()
    url = driver_url(url)
    kwargs = {} if url.startswith("sqlite") else {"engine_kwargs": {"pool_pre_ping": True}}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)  # heartbeats: stable enough
        try:
            return optuna.storages.RDBStorage(
                url, heartbeat_interval=heartbeat_s, grace_period=3 * heartbeat_s, **kwargs
            )
        except ImportError as e:  # the URL's driver
            raise ConfigError(
                f"--storage {redact(url)}: its database driver is not installed ({e}); for PostgreSQL: "
                "pip install 'pgolf[postgres]'"
            ) from None
        except Exception as e:  # sqlalchemy's OperationalError and the like: unreachable, refused, bad URL
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise ConfigError(f"--storage {redact(url)}: cannot open the study database ({first})") from None


def open_or_create(name: str, store, **kwargs) -> tuple[Any, bool]:
    """The study ``name`` in ``store``, created when absent (minimizing); and whether this call created
    it (only the creator writes the study's declaration: see ``wait_for``)."""
    optuna = need_optuna()
    try:
        return optuna.create_study(study_name=name, storage=store, direction="minimize", **kwargs), True
    except optuna.exceptions.DuplicatedStudyError:
        return optuna.load_study(study_name=name, storage=store, **kwargs), False


def wait_for(study, key: str, timeout_s: float = 60.0) -> Any:
    """A study attribute its creator writes just after creating it (a worker may load the study in
    between)."""
    import time

    deadline = time.monotonic() + timeout_s
    while (value := study.user_attrs.get(key)) is None:
        if time.monotonic() > deadline:
            raise ConfigError(f"study {study.study_name!r} has no {key!r}: not made by this pgolf command")
        time.sleep(0.5)
    return value


_SEEN: set[int] = set()
"""Running trials this process has given a first heartbeat (``fail_stale``)."""


def fail_stale(study) -> None:
    """Fail the running trials whose heartbeat stopped (their worker is gone). Optuna never fails a
    running trial that has no heartbeat at all (its worker died between taking it and its first
    beat), so each running trial seen here for the first time gets one heartbeat on its behalf: a
    live worker's own beats follow; a dead one's trial goes stale after the grace period."""
    optuna = need_optuna()
    store = study._storage  # Optuna's public API has no heartbeat query
    for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        if t._trial_id not in _SEEN:
            _SEEN.add(t._trial_id)
            store.record_heartbeat(t._trial_id)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)


class Surplus(Exception):
    """A trial drawn past the budget, or a queued item's second copy: failed at once, never run."""


def surplus(trial, why: str):
    trial.set_user_attr("surplus", why)
    raise Surplus(why)


def take(study, objective: Callable, catch: tuple[type[Exception], ...] = ()) -> None:
    """Run one trial (a WAITING one first, else a new one) with heartbeats: a ``Surplus`` or an exception
    in ``catch`` fails the trial and returns, any other fails it and propagates. A trial that another
    worker failed while it ran here (its heartbeats came late) cannot be told its result: the result is
    dropped, and its work is taken again."""
    optuna = need_optuna()
    logger = optuna.logging.get_logger("optuna")
    level, taken = logger.level, {}

    def run(trial):
        taken["number"] = trial.number
        return objective(trial)

    try:
        logger.setLevel(optuna.logging.ERROR)  # failures are said by the objective; a surplus is routine
        study.optimize(run, n_trials=1, catch=(Surplus, *catch))
    except Exception as e:  # what Optuna raises on a trial finished by someone else: update, then tell
        if not _finished_elsewhere(e, optuna) or "number" not in taken:
            raise
        print(
            f"trial {taken['number']} was failed by another worker while it ran here (late heartbeats): "
            "its result is dropped",
            file=sys.stderr,
        )
    finally:
        logger.setLevel(level)


def _finished_elsewhere(e: BaseException | None, optuna) -> bool:
    """Whether ``e`` (or an exception it was raised while handling) says the trial was finished by
    someone else: an update refused, or Optuna's tell refused (Optuna 5 then fails an assertion)."""
    while e is not None:
        if isinstance(e, optuna.exceptions.UpdateFinishedTrialError) or "Cannot tell a " in str(e):
            return True
        e = e.__context__
    return False


def claimed(t) -> bool:
    """Waiting, running or finished: anything but failed."""
    return t.state.name != "FAIL"


def errored(t) -> bool:
    """Failed by its own run (not by a lost worker, not as a surplus): not taken again."""
    return t.state.name == "FAIL" and "error" in t.user_attrs


def settled(t) -> bool:
    return t.state.name in ("COMPLETE", "PRUNED") or errored(t)


def lost(t) -> bool:
    """Failed because its worker went silent."""
    return t.state.name == "FAIL" and not ({"error", "surplus"} & set(t.user_attrs))


def identity(t, keys: Iterable[str]) -> tuple:
    return tuple(t.user_attrs.get(k) for k in keys)


def duplicate(trials, trial, keys: tuple[str, ...]) -> bool:
    """Another claimed trial of the same item, numbered below this one (it was queued first)."""
    mine = identity(trial, keys)
    return any(t.number < trial.number and claimed(t) and identity(t, keys) == mine for t in trials)


def enqueue_missing(study, trials, items: list[tuple[dict, dict]], keys: tuple[str, ...]) -> int:
    """Queue each ``(user_attrs, params)`` item that no trial claims or has failed on its own: new
    items, and those whose worker was lost. Returns how many were queued."""
    held = {identity(t, keys) for t in trials if claimed(t) or errored(t)}
    n = 0
    for attrs, params in items:
        if tuple(attrs.get(k) for k in keys) not in held:
            study.enqueue_trial(params, user_attrs=attrs)
            n += 1
    return n


def put_files(holder, files: dict[str, bytes]) -> None:
    """Files into the user attributes of a running trial (or a study): zlib, base64, in ``CHUNK``
    pieces, so a machine that shares nothing but the database can rebuild them; the index goes last."""
    index = {}
    for name, data in files.items():
        text = base64.b64encode(zlib.compress(data, 6)).decode("ascii")
        pieces = [text[i : i + CHUNK] for i in range(0, len(text), CHUNK)] or [""]
        for i, piece in enumerate(pieces):
            holder.set_user_attr(f"file:{name}:{i}", piece)
        index[name] = {"chunks": len(pieces), "sha256": hashlib.sha256(data).hexdigest()}
    holder.set_user_attr("files", index)


def get_files(holder) -> dict[str, bytes]:
    """The files ``put_files`` stored on a trial (or a study), checked against their digests."""
    out, attrs = {}, holder.user_attrs
    for name, entry in attrs.get("files", {}).items():
        text = "".join(attrs[f"file:{name}:{i}"] for i in range(entry["chunks"]))
        data = zlib.decompress(base64.b64decode(text))
        if hashlib.sha256(data).hexdigest() != entry["sha256"]:
            raise ConfigError(f"{name} is corrupt in the study database (its sha256 differs)")
        out[name] = data
    return out


def machine_kind(nproc: int = 0) -> str:
    """What a trial of ``nproc`` processes runs on: ``"8x NVIDIA H100 80GB HBM3"``, or
    ``"cpu 2 cores <model>"`` without a GPU. The GPU's name is asked in a child process, so this
    process never holds a CUDA context (it would take memory on GPU 0 for the whole sweep)."""
    import torch

    if torch.cuda.is_available():
        n = nproc or torch.cuda.device_count()
        probe = "import torch; print(torch.cuda.get_device_name(0))"
        name = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=False)
        return f"{n}x {name.stdout.strip() or 'GPU'}"
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return f"cpu {cores} cores {_cpu_model()}"


def _cpu_model() -> str:
    with contextlib.suppress(OSError), open("/proc/cpuinfo", encoding="utf-8") as f:
        for line in f:
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def pin_pattern(hardware: str, kind: str) -> str:
    """The pattern a study pins: the spec's, or this machine's kind exactly ("any": no pin)."""
    return hardware or glob.escape(kind)


def fits(pattern: str, kind: str) -> bool:
    return pattern == "any" or fnmatch.fnmatch(kind.lower(), pattern.lower())


@contextlib.contextmanager
def signals_raise():
    """While a worker runs, SIGTERM and SIGHUP end it as Ctrl-C does: the running trial is failed at
    once (Optuna fails a trial on KeyboardInterrupt) and its run's processes are stopped on the way
    out instead of training on beside the next trial."""

    def handler(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    previous = {}
    for sig in (signal.SIGTERM, signal.SIGHUP):
        with contextlib.suppress(ValueError):  # not the main thread: leave it
            previous[sig] = signal.signal(sig, handler)
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
