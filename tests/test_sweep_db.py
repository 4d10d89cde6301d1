"""Many machines on one study (issue 35), on a real PostgreSQL server started for this module: two
``pgolf sweep worker`` processes share a study of ``debug`` trials after a third was killed mid-trial
(every trial ran once, the killed one is not counted, ``sweep show`` finds every run); a record's seeds
are taken by a second process and assembled by the declaring one. The server is Debian's
``postgresql`` (``.ci/run`` installs it); without its binaries these tests skip and say why."""

from __future__ import annotations

import contextlib
import glob
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from pgolf.tools.cli import main
from pgolf.tools.studies import driver_url

optuna = pytest.importorskip("optuna")


def _server_bin() -> Path | None:
    """The newest Debian server's binaries (/usr/lib/postgresql/N/bin), else initdb on the PATH."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
    initdb = found[-1] if found else shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def postgres():
    """A throwaway server on a free port (trust auth on 127.0.0.1, no fsync) with one database; run as
    the `postgres` user when the tests run as root (the server refuses root). Yields its URL."""
    psycopg = pytest.importorskip("psycopg", reason="no psycopg: pip install -e '.[test]' installs it")
    bindir = _server_bin()
    if bindir is None:
        pytest.skip("no PostgreSQL server binaries (initdb, pg_ctl): apt-get install postgresql")
    home = Path(tempfile.mkdtemp(prefix="pgolf-pg-"))
    as_user: list[str] = []
    if os.geteuid() == 0:
        try:
            user = pwd.getpwnam("postgres")
        except KeyError:
            shutil.rmtree(home)
            pytest.skip("running as root, and there is no `postgres` user to run the server as")
        os.chown(home, user.pw_uid, user.pw_gid)
        as_user = ["runuser", "-u", "postgres", "--"]
    data, port = home / "data", _free_port()
    ctl = [*as_user, str(bindir / "pg_ctl"), "-D", str(data)]
    opts = f"-p {port} -k {home} -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off"
    quiet = {"check": True, "capture_output": True, "text": True}
    subprocess.run([*as_user, str(bindir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust",
                    "-E", "UTF8", "--no-sync"], **quiet)  # fmt: skip
    subprocess.run([*ctl, "-l", str(home / "server.log"), "-w", "-o", opts, "start"], **quiet)
    try:
        with psycopg.connect(f"postgresql://postgres@127.0.0.1:{port}/postgres", autocommit=True) as con:
            con.execute("CREATE DATABASE pgolf_test")
        yield f"postgresql://postgres@127.0.0.1:{port}/pgolf_test"
    finally:
        subprocess.run([*ctl, "-m", "immediate", "stop"], capture_output=True)
        shutil.rmtree(home, ignore_errors=True)


SPEC = """preset = "debug"
trials = 2
seeds = [1]
steps = 4
val_every = 2
pruner = "none"
finalists = 1
final_seeds = [2]
heartbeat_s = 3
split = "val"  # the demo data has no dev split; the splits are tested in test_sweep.py
[fixed]
"data.root" = "{data_root}"
"eval.batch_tokens" = 2048
[space]
"model.num_layers" = [1, 2]
"optim.matrix_lr" = {{low = 0.01, high = 0.05, log = true}}
"""


def _worker(spec: Path, url: str, out: Path) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "pgolf", "sweep", "worker", str(spec), "--storage", url, "--out", str(out)]
    log = open(out.parent / f"{out.name}.log", "w")  # noqa: SIM115 (closed with the process)
    return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def _wait_for(path_glob: str, timeout_s: float = 120.0) -> Path:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if found := glob.glob(path_glob):
            return Path(found[0])
        time.sleep(0.2)
    raise AssertionError(f"nothing matched {path_glob} in {timeout_s} s")


@pytest.mark.slow
def test_two_workers_share_a_study_and_a_killed_workers_trial_is_not_counted(
    postgres, data_root, tmp_path, capsys, monkeypatch
):  # fmt: skip
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # runs side by side on 2 cores: no oversubscription
    spec = tmp_path / "sweep.toml"
    spec.write_text(SPEC.format(data_root=data_root))
    outs = {k: tmp_path / k for k in ("killed", "a", "b")}
    killed = _worker(spec, postgres, outs["killed"])
    pid_file = _wait_for(f"{outs['killed']}/trials/*/run.pid")  # its first trial's run has started
    run_pid = int(_wait_for_text(pid_file).split()[0])
    for pid in (killed.pid, run_pid):  # the machine dies: the worker and its run, no goodbye
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)
    killed.wait()
    workers = [_worker(spec, postgres, outs[k]) for k in ("a", "b")]
    try:
        codes = [w.wait(timeout=900) for w in workers]
    finally:
        for w in (w for w in workers if w.poll() is None):  # the test failed: stop what still runs
            with contextlib.suppress(ProcessLookupError):
                os.killpg(w.pid, signal.SIGKILL)
    logs = {k: (tmp_path / f"{k}.log").read_text() for k in ("a", "b")}
    assert codes == [0, 0], logs

    study = optuna.load_study(study_name="pgolf", storage=driver_url(postgres))
    trials = study.get_trials()
    search = [t for t in trials if "final_of" not in t.user_attrs and "surplus" not in t.user_attrs]
    lost = [t for t in search if t.state.name == "FAIL"]
    complete = [t for t in search if t.state.name == "COMPLETE"]
    finals = [t for t in trials if "final_of" in t.user_attrs and "surplus" not in t.user_attrs]
    assert [t.number for t in lost] == [0] and "error" not in lost[0].user_attrs  # lost, not a failed run
    assert len(complete) == 2 and 0 not in {t.number for t in complete}  # the budget, without the lost one
    best = min(complete, key=lambda t: t.value)
    assert [(t.state.name, t.user_attrs["final_of"], t.user_attrs["seed"]) for t in finals] == [
        ("COMPLETE", best.number, 2)
    ]
    # every trial ran once: one run folder per (trial, seed), each in the folder of the worker that took it
    ran = sorted(p.name for k in ("a", "b") for p in (outs[k] / "trials").glob("*") if p.is_dir())
    assert ran == sorted(f"{t.number:04d}_seed1" for t in complete)
    finals_ran = [p.name for k in ("a", "b") for p in (outs[k] / "final").glob("*")]
    assert finals_ran == [f"{best.number:04d}_seed2"]
    for t in [*complete, *finals]:
        (run,) = t.user_attrs["runs"]
        assert Path(run["dir"], "result.json").is_file() and run["dir"].startswith(str(tmp_path))
    for k in ("a", "b"):  # each worker concluded alike
        assert f"trial {best.number}" in (outs[k] / "best.toml").read_text()

    capsys.readouterr()
    assert main(["sweep", "show", str(tmp_path / "elsewhere"), "--storage", postgres]) == 0
    shown = capsys.readouterr().out
    assert shown.count("COMPLETE") == 2 and "worker lost" in shown
    for t in [*lost, *complete, *finals]:  # the runs of every worker, found through the study
        assert t.user_attrs["runs"][0]["dir"] in shown


def _wait_for_text(path: Path, timeout_s: float = 30.0) -> str:
    deadline = time.monotonic() + timeout_s
    while not (text := path.read_text().strip()) and time.monotonic() < deadline:
        time.sleep(0.1)
    return text


def test_a_second_worker_joining_another_sweep_file_is_refused(postgres, data_root, tmp_path):
    """A study remembers its sweep file: a worker with another space is refused before any run."""
    first = tmp_path / "first.toml"
    first.write_text(SPEC.format(data_root=data_root).replace("trials = 2", "trials = 0"))
    other = tmp_path / "other.toml"
    other.write_text(SPEC.format(data_root=data_root).replace("[1, 2]", "[1, 3]"))
    args = ["--storage", postgres, "--study", "identity", "--out"]
    assert main(["sweep", "worker", str(first), *args, str(tmp_path / "w1")]) == 1  # nothing to run
    assert main(["sweep", "worker", str(other), *args, str(tmp_path / "w2")]) == 2


@pytest.mark.slow
def test_a_records_seeds_are_taken_by_two_machines_and_assembled_in_declared_order(
    postgres, data_root, tmp_path, capsys, monkeypatch
):  # fmt: skip
    """The joiner (another process, its own --root) takes the first declared seed, the declaring process
    the second; the declared folder ends with both, in the declared order, passing the check."""
    from conftest import debug_config
    from pgolf.config.run import apply_overrides
    from pgolf.tools.records import spread
    from pgolf.tools.records.folder import RecordInfo

    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    on_track = {"track": "cpu-5min-2mb", "train.max_wallclock_seconds": "300", "train.iterations": "4"}
    cfg = apply_overrides(debug_config(data_root), on_track)
    info = RecordInfo("spread", blurb="two machines")
    folder = spread.declare(cfg, [7, 3], info, root=tmp_path / "records", storage=postgres)
    other, log = tmp_path / "other", tmp_path / "joiner.log"
    with open(log, "w") as console:
        joiner = subprocess.Popen(
            [sys.executable, "-m", "pgolf", "record", "--join", "spread", "--storage", postgres,
             "--root", str(other), "--data.root", str(data_root)], stdout=console, stderr=subprocess.STDOUT,
        )  # fmt: skip
    study = optuna.load_study(study_name="record:spread", storage=driver_url(postgres))
    deadline = time.monotonic() + 600
    while not any(t.state.name == "RUNNING" for t in study.get_trials()):
        assert time.monotonic() < deadline and joiner.poll() is None, log.read_text()
        time.sleep(0.2)  # until the joiner has taken the first seed
    got, rules = spread.join("spread", storage=postgres, root=tmp_path / "records", nproc=1,
                             data_root=str(data_root))  # fmt: skip
    assert joiner.wait(timeout=300) == 0, log.read_text()
    assert got == folder and rules is not None
    sub = json.loads((folder / "submission.json").read_text())
    assert sub["seeds"] == [7, 3]  # the declared order
    copy = other / "cpu-5min-2mb" / folder.name
    assert (copy / "train_seed7.log").is_file() and not (copy / "train_seed3.log").exists()  # 7 ran there
    assert (copy / "train_gpt.py").read_bytes() == (folder / "train_gpt.py").read_bytes()
    assert (folder / "result_seed7.json").read_bytes() == (copy / "result_seed7.json").read_bytes()
    assert not (folder / "runs" / "seed7").exists() and (folder / "runs" / "seed3").is_dir()
    status = {r.name: r.status for r in rules}
    assert status["seeds declared before the runs"] == status["results agree with the logs"] == "pass"
    done = [t for t in study.get_trials() if t.state.name == "COMPLETE"]
    assert sorted(t.user_attrs["seed"] for t in done) == [3, 7]
