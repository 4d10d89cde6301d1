"""``pgolf sweep`` (issue 10): the sweep file, following a run's validations, and a real study of
``pgolf train`` runs on the debug preset that resumes and writes its best config."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import time

import pytest

from pgolf.errors import ConfigError
from pgolf.tools.cli import main
from pgolf.tools.config_files import resolve
from pgolf.tools.sweep.runs import follow, judge
from pgolf.tools.sweep.spec import load_spec, trial_overrides

pytest.importorskip("optuna")


def _write(tmp_path, text: str):
    path = tmp_path / "sweep.toml"
    path.write_text(text)
    return path


@pytest.mark.parametrize(("text", "message"), [
    ('preset = "debug"\n', "non-empty [space]"),
    ('preset = "debug"\ntrails = 3\n[space]\n"model.num_layers" = [1, 2]\n', "unknown sweep keys ['trails']"),
    ('preset = "debug"\n[space]\n"model.num_layer" = [1, 2]\n', "not a config key"),
    ('preset = "debug"\n[space]\n"optim.matrix_lr" = {low = 0.1, high = 0.01}\n', "low < high"),
    ('preset = "debug"\n[space]\n"model.num_heads" = [4, 3]\n', "model.num_heads=3"),
    ('preset = "debug"\npruner = "hyperband"\n[space]\n"model.num_layers" = [1]\n', "pruner must be"),
])  # fmt: skip
def test_bad_sweep_files_are_refused_before_any_run(tmp_path, text, message):
    with pytest.raises(ConfigError) as err:
        load_spec(_write(tmp_path, text))
    assert message in str(err.value)


def test_trial_overrides_screen_at_fixed_steps_and_judge_only_what_screening_keeps(tmp_path):
    text = (
        'preset = "debug"\nsteps = 40\nval_every = 10\n[fixed]\n"train.batch_tokens" = 2048\n'
        '[space]\n"model.num_layers" = [1, 2]\n'
    )
    spec = load_spec(_write(tmp_path, text))
    over = trial_overrides(spec, {"model.num_layers": 2}, 7)
    assert over == {"train.batch_tokens": "2048", "model.num_layers": "2", "train.seed": "7",
                    "data.score_split": "dev", "train.val_every": "10", "train.iterations": "40",
                    "train.max_wallclock_seconds": "0"}  # fmt: skip
    off = {"off_track": [
        "train.max_wallclock_seconds=0 is not within the cpu-5min-2mb track's 300 s training cap",
        "artifact + code is 2,100,000 bytes, over the cpu-5min-2mb track's 2,000,000 byte cap",
    ]}  # fmt: skip
    assert judge(off, screening=True) == off["off_track"][1:]
    assert judge(off, screening=False) == off["off_track"]


def test_follow_reports_validations_and_stops_a_losing_run(tmp_path):
    """A fake run logs three validations, one per 0.3 s, then would sleep a minute; the pruner says
    stop at the second: the process group is killed at once."""
    events = tmp_path / "events.jsonl"
    script = (
        "import json, time\n"
        f"f = open({str(events)!r}, 'a')\n"
        "for s, v in ((10, 3.0), (20, 2.9), (30, 2.8)):\n"
        "    f.write(json.dumps({'event': 'train', 'step': s}) + '\\n')\n"
        "    f.write(json.dumps({'event': 'val', 'step': s, 'val_bpb': v}) + '\\n')\n"
        "    f.flush(); time.sleep(0.3)\n"
        "time.sleep(60)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", script], start_new_session=True)
    seen = []
    start = time.perf_counter()
    stopped = follow(proc, events, lambda e: seen.append((e["step"], e["val_bpb"])) or e["step"] >= 20, 0.05)
    assert stopped and seen == [(10, 3.0), (20, 2.9)] and proc.returncode is not None
    assert time.perf_counter() - start < 10


@pytest.mark.slow
def test_a_study_runs_resumes_and_writes_its_best_config(tmp_path, dev_data, capsys):
    """One screening trial of a real run on a dataset's dev split, the best re-run on another seed,
    then the study resumed to its two trials (finished runs reused); best.toml builds the winning
    config; every run scored dev and the sweep says so."""
    data_root, built = dev_data
    spec = _write(
        tmp_path,
        f'''preset = "debug"
trials = 2
seeds = [1]
steps = 4
val_every = 2
pruner = "none"
finalists = 1
final_seeds = [2]
[fixed]
"data.root" = "{data_root}"
"data.dataset" = "{built.dataset_dir.relative_to(data_root)}"
"data.tokenizer" = "{built.tokenizer_path.relative_to(data_root)}"
"eval.batch_tokens" = 2048
[space]
"model.num_layers" = [1, 2]
"optim.matrix_lr" = {{low = 0.01, high = 0.05, log = true}}
''',
    )
    out = tmp_path / "study"
    assert main(["sweep", "run", str(spec), "--out", str(out), "--trials", "1"]) == 0
    text = capsys.readouterr().out
    assert text.startswith(f"scoring on: the dev split of {built.dataset_dir} (12 documents")
    assert "best: trial 0, mean dev_bpb" in text and "on the dev split" in text
    assert (out / "best.toml").exists()
    assert "scored on the dev split" in (out / "best.toml").read_text()
    runs = [json.loads(p.read_text()) for p in out.glob("*/*/result.json")]
    assert len(runs) == 2 and {r["split"] for r in runs} == {"dev"}
    assert len(list((out / "trials").iterdir())) == 1 and len(list((out / "final").iterdir())) == 1
    finals = json.loads((out / "finalists.json").read_text())
    assert finals[0]["seeds"] == [2] and len(finals[0]["val_bpb"]) == 1 and finals[0]["split"] == "dev"
    assert json.loads((out / "best.json").read_text())["params"] == finals[0]["params"]
    best = resolve(str(out / "best.toml"))
    assert best.model.num_layers == finals[0]["params"]["model.num_layers"]
    assert best.eval.batch_tokens == 2048 and best.data.root == ""  # fixed kept, data left out
    assert main(["sweep", "run", str(spec), "--out", str(out)]) == 0  # resumes: one trial more
    assert len(list((out / "trials").iterdir())) == 2
    from pgolf.tools.sweep.study import is_final, open_study

    first, second = (t for t in open_study(out, create=False).trials if not is_final(t))
    assert first.params != second.params  # the resumed sampler draws anew, not trial 0's point again
    capsys.readouterr()
    assert main(["sweep", "show", str(out)]) == 0
    shown = capsys.readouterr().out
    assert shown.count("COMPLETE") == 2 and (out / "history.png").exists()
    assert shown.startswith("scored on: the dev split\ntrial state     dev_bpb")
    val = _write(tmp_path, spec.read_text().replace("trials = 2", 'trials = 2\nsplit = "val"'))
    assert main(["sweep", "run", str(val), "--out", str(out)]) == 2
    assert "scored the dev split and this sweep file scores val" in capsys.readouterr().err


def test_the_pruner_sees_every_run_on_one_grid_of_training_seconds():
    """Validations at 40, 100, 170 and 280 s of a 300 s run: reported every 15 s, each point holding
    the last value known then; nothing from the last tenth."""
    from pgolf.tools.sweep.runs import reporter
    from pgolf.tools.sweep.spec import Param, SweepSpec

    class Trial:
        def __init__(self):
            self.reports = []

        def report(self, value, at):
            self.reports.append((at, value))

        def should_prune(self):
            return False

    spec = SweepSpec(base="baseline-cpu", space=(Param("model.num_layers", choices=(3,)),))
    trial = Trial()
    on_val = reporter(trial, spec)
    for ms, v in [(40_000, 3.0), (100_000, 2.5), (170_000, 2.2), (280_000, 2.0)]:
        on_val({"step": 1, "train_time_ms": ms, "val_bpb": v})
    assert trial.reports == [(30, 3.0), (45, 3.0), (60, 3.0), (75, 3.0), (90, 2.5), (105, 2.5), (120, 2.5),
                             (135, 2.5), (150, 2.5), (165, 2.2)]  # fmt: skip


def test_a_trial_is_a_torchrun_job_when_the_spec_says_nproc_per_node(tmp_path):
    from pgolf.tools.sweep.runs import launch_command

    text = 'preset = "debug"\nnproc_per_node = 4\n[space]\n"model.num_layers" = [1, 2]\n'
    spec = load_spec(_write(tmp_path, text))
    cmd = launch_command(spec, {"train.seed": "1"}, tmp_path / "run")
    assert cmd[1:5] == ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node=4"]
    assert cmd[5:8] == ["-m", "pgolf", "train"] and cmd[-2:] == ["--train.seed", "1"]
    one = load_spec(_write(tmp_path, text.replace("= 4", "= 1")))
    assert launch_command(one, {}, tmp_path / "run")[1:4] == ["-m", "pgolf", "train"]


@pytest.mark.filterwarnings("ignore:Heartbeat of storage")  # the test asks for trials itself
def test_the_worker_loop_skips_a_lost_trial_queues_finalists_and_drops_a_surplus(tmp_path, monkeypatch):
    """The loop of ``pgolf sweep worker`` on the SQLite study, runs faked (the real ones: the slow test
    above and tests/test_sweep_db.py): a trial whose worker died (heartbeat stale) is failed and not
    counted, the budget is met by finished trials, each finalist's seed is a trial of the study, a trial
    drawn past the budget never runs, and a study pinned to other hardware refuses this machine."""
    from pgolf.tools import studies
    from pgolf.tools.sweep import study as sweep_study

    ran = []

    def fake_run(spec, params, seed, out_dir, on_val=None, echo=print):
        ran.append((out_dir.parent.name, out_dir.name))
        return {
            "val_bpb": 3 + params["optim.matrix_lr"] + seed / 100,
            "steps": 4,
            "bytes_total": 1,
            "off_track": [],
        }

    monkeypatch.setattr(sweep_study, "run_one", fake_run)
    monkeypatch.setattr(sweep_study, "preflight", lambda spec, params: None)
    text = (
        'preset = "debug"\ntrials = 2\nseeds = [1]\nsteps = 4\npruner = "none"\nfinalists = 1\n'
        'split = "val"\n'  # runs faked: no data read
        'final_seeds = [2, 3]\nheartbeat_s = 1\n[space]\n"optim.matrix_lr" = {low = 0.01, high = 0.05}\n'
    )
    spec = load_spec(_write(tmp_path, text))
    out = tmp_path / "sweep"
    study, kind = sweep_study.join(out, spec)
    study.ask()  # a worker took it, then died before its first heartbeat: failed three beats later
    best = sweep_study.work(spec, out, echo=lambda *a: None)
    trials = study.get_trials()
    assert trials[0].state.name == "FAIL" and studies.lost(trials[0])
    search = [t for t in trials if not sweep_study.is_final(t)]
    assert [t.state.name for t in search[1:]] == ["COMPLETE", "COMPLETE"]
    finals = [(t.user_attrs["final_of"], t.user_attrs["seed"]) for t in trials if sweep_study.is_final(t)]
    assert finals == [(best["trial"], 2), (best["trial"], 3)] and best["seeds"] == [2, 3]
    assert sorted(ran) == sorted([("trials", f"{t.number:04d}_seed1") for t in search[1:]]
                                 + [("final", f"{best['trial']:04d}_seed{s}") for s in (2, 3)])  # fmt: skip
    extra = study.ask()  # drawn by a worker that lost the race for the last trial
    with pytest.raises(studies.Surplus):
        sweep_study._objective(spec, kind, out, print, {})(extra)
    assert len(ran) == 4 and "surplus" in study.get_trials()[-1].user_attrs
    pinned = load_spec(_write(tmp_path, text.replace("heartbeat_s = 1", 'hardware = "8x*H100*"')))
    with pytest.raises(ConfigError, match=r"runs on '8x\*H100\*' and this machine is 'cpu"):
        sweep_study.join(tmp_path / "pinned", pinned)


@pytest.mark.filterwarnings("ignore:Heartbeat of storage")
def test_a_diverged_run_is_an_error_of_its_trial_never_taken_again(tmp_path, monkeypatch):
    """A NaN score would make Optuna fail the trial as if its worker were lost, and a finalist's seed
    would be queued again forever: it is the run's error, recorded once."""
    from pgolf.tools import studies
    from pgolf.tools.sweep import study as sweep_study

    ran = []

    def fake_run(spec, params, seed, out_dir, on_val=None, echo=print):
        ran.append(seed)
        return {"val_bpb": math.nan if seed == 2 else 3.0, "steps": 4, "bytes_total": 1, "off_track": []}

    monkeypatch.setattr(sweep_study, "run_one", fake_run)
    monkeypatch.setattr(sweep_study, "preflight", lambda spec, params: None)
    text = (
        'preset = "debug"\ntrials = 1\nseeds = [1]\nsteps = 4\npruner = "none"\nfinalists = 1\n'
        'split = "val"\nfinal_seeds = [2]\nheartbeat_s = 1\n[space]\n"optim.matrix_lr" = [0.02]\n'
    )
    best = sweep_study.work(load_spec(_write(tmp_path, text)), tmp_path / "sweep", echo=lambda *a: None)
    final = [
        t for t in sweep_study.open_study(tmp_path / "sweep", create=False).trials if sweep_study.is_final(t)
    ]
    assert ran == [1, 2] and len(final) == 1 and studies.errored(final[0])
    assert "diverged" in final[0].user_attrs["error"] and best["mean"] == 3.0  # the search's, not the NaN


def test_a_trial_failed_elsewhere_is_recognised_through_optunas_assertion():
    import optuna

    from pgolf.tools.studies import _finished_elsewhere

    try:
        try:
            raise ValueError("Cannot tell a FAIL trial.")
        except ValueError:
            raise AssertionError("Should not reach.") from None
    except AssertionError as e:
        assert e.__context__ is not None and _finished_elsewhere(e, optuna)
    assert not _finished_elsewhere(AssertionError("a real bug"), optuna)
    assert _finished_elsewhere(optuna.exceptions.UpdateFinishedTrialError("done"), optuna)


def test_a_records_seed_lost_here_is_set_aside_before_it_is_taken_again(tmp_path):
    from pgolf.tools.records.spread import _set_aside

    run = tmp_path / "runs" / "seed1"
    run.mkdir(parents=True)
    (run / "train.log").write_text("the lost take")
    _set_aside(run)
    _set_aside(run)  # nothing there: nothing to do
    kept = list((tmp_path / "runs").iterdir())
    assert not run.exists() and len(kept) == 1 and kept[0].name.startswith("seed1.lost-")
    assert (kept[0] / "train.log").read_text() == "the lost take"


def test_a_new_worker_stops_the_runs_a_killed_worker_left_training_in_its_folder(tmp_path):
    from pgolf.tools.studies import host
    from pgolf.tools.sweep.runs import stop_orphans

    orphan = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], start_new_session=True)
    run = tmp_path / "trials" / "0003_seed1"
    run.mkdir(parents=True)
    (run / "run.pid").write_text(f"{orphan.pid} {host()}")
    elsewhere = tmp_path / "final" / "0001_seed2"
    elsewhere.mkdir(parents=True)
    (elsewhere / "run.pid").write_text(f"{orphan.pid} another-machine")  # a shared disk: not ours to stop
    try:
        stop_orphans(tmp_path)
        assert orphan.wait(timeout=10) == -9
    finally:
        orphan.kill()
