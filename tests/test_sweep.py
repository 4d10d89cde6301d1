"""``pgolf sweep`` (issue 10): the sweep file, following a run's validations, and a real study of
``pgolf train`` runs on the debug preset that resumes and writes its best config."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

from pgolf.errors import ConfigError
from pgolf.tools.cli import main
from pgolf.tools.config_files import resolve
from pgolf.tools.sweep import follow, judge
from pgolf.tools.sweepfile import load_spec, trial_overrides

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
    from pgolf.tools.sweep import open_study

    first, second = open_study(out, create=False).trials
    assert first.params != second.params  # the resumed sampler draws anew, not trial 0's point again
    capsys.readouterr()
    assert main(["sweep", "show", str(out)]) == 0
    shown = capsys.readouterr().out
    assert shown.count("COMPLETE") == 2 and (out / "history.png").exists()
    assert shown.startswith("scored on: the dev split\ntrial state     dev_bpb")
    val = _write(tmp_path, spec.read_text().replace("trials = 2", 'trials = 2\nsplit = "val"'))
    assert main(["sweep", "run", str(val), "--out", str(out)]) == 2
    assert "its study scored the dev split and this sweep file scores val" in capsys.readouterr().err


def test_the_pruner_sees_every_run_on_one_grid_of_training_seconds():
    """Validations at 40, 100, 170 and 280 s of a 300 s run: reported every 15 s, each point holding
    the last value known then; nothing from the last tenth."""
    from pgolf.tools.sweep import _reporter
    from pgolf.tools.sweepfile import Param, SweepSpec

    class Trial:
        def __init__(self):
            self.reports = []

        def report(self, value, at):
            self.reports.append((at, value))

        def should_prune(self):
            return False

    spec = SweepSpec(base="baseline-cpu", space=(Param("model.num_layers", choices=(3,)),))
    trial = Trial()
    on_val = _reporter(trial, spec)
    for ms, v in [(40_000, 3.0), (100_000, 2.5), (170_000, 2.2), (280_000, 2.0)]:
        on_val({"step": 1, "train_time_ms": ms, "val_bpb": v})
    assert trial.reports == [(30, 3.0), (45, 3.0), (60, 3.0), (75, 3.0), (90, 2.5), (105, 2.5), (120, 2.5),
                             (135, 2.5), (150, 2.5), (165, 2.2)]  # fmt: skip
