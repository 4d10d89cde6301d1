"""Submissions: Welch statistics, log parsing in the contest's dialects, record folders and the
compliance check (each rule failed on purpose once, and passed by a good record)."""

from __future__ import annotations

import dataclasses
import json
import math
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import stats

from pgolf.config.run import apply_overrides
from pgolf.errors import PgolfError
from pgolf.tools.cli import main
from pgolf.tools.records.check import check, load_subject, rule_code, rule_val_leak
from pgolf.tools.records.folder import RecordInfo, make_record
from pgolf.tools.records.logs import load_scores, parse_log
from pgolf.tools.records.probes import causality_error, normalisation_error, sample_inputs
from pgolf.tools.records.stats import compare, seeds_needed, welch

FIXTURES = Path(__file__).parent / "fixtures"


def test_welch_matches_the_formula_and_scipy():
    old, new, margin = [1.2244, 1.2261, 1.2230], [1.2101, 1.2140, 1.2119, 1.2090], 0.005
    w = welch(old, new, margin=margin, alpha=0.01)
    a, b = np.array(old), np.array(new)
    va, vb = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
    t = (b.mean() - (a.mean() - margin)) / math.sqrt(va + vb)
    df = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))
    assert w.t == pytest.approx(t, rel=1e-12) and w.df == pytest.approx(df, rel=1e-12)
    assert w.p == pytest.approx(stats.t.cdf(t, df), rel=1e-9)
    ref = stats.ttest_ind(b, a - margin, equal_var=False, alternative="less")
    assert w.p == pytest.approx(ref.pvalue, rel=1e-12) and w.delta == pytest.approx(b.mean() - a.mean())
    assert w.passes == (w.p < 0.01)


def test_seeds_needed_is_the_first_count_that_passes():
    old, new = np.array([1.2300, 1.2360, 1.2260]), np.array([1.2280, 1.2310, 1.2220])
    n = seeds_needed(old, new, 0.0, 0.01)
    assert n is not None and n > 3

    def p_at(k):  # the same means and spreads with k seeds a side
        va, vb = old.var(ddof=1) / k, new.var(ddof=1) / k
        df = (va + vb) ** 2 / (va**2 / (k - 1) + vb**2 / (k - 1))
        return stats.t.sf((old.mean() - new.mean()) / math.sqrt(va + vb), df)

    assert p_at(n) < 0.01 <= p_at(n - 1)
    assert seeds_needed(new, old, 0.0, 0.01) is None  # worse never passes


def test_compare_converts_the_nats_margin_to_bpb():
    old = [(2.0727, 1.2244), (2.0750, 1.2258), (2.0701, 1.2229)]
    new = [(2.0500, 1.2110), (2.0520, 1.2122), (2.0490, 1.2104)]
    c = compare(old, new, margin_nats=0.005, alpha=0.01)
    ratio = np.mean([b / n for n, b in old])  # the reference's bits per nat
    assert c.bpb.margin == pytest.approx(0.005 * ratio) and c.nats.passes and c.bpb.passes


def test_contest_logs_parse_by_the_reviewers_rules():
    base = parse_log(
        (FIXTURES / "contest_baseline_seed1337.log").read_text(), "x/contest_baseline_seed1337.log"
    )
    assert (base.val_loss, base.val_bpb, base.score_label) == (
        2.07269931,
        1.2243657,
        "final_int8_zlib_roundtrip_exact",
    )
    assert base.bytes_total == 15863489 and base.size_label == "int8+zlib"  # never the raw 67 MB line
    assert (base.bytes_code, base.steps, base.train_seconds, base.eval_seconds) == (
        47642,
        13780,
        600.038,
        1.401,
    )
    assert base.stopped_early and base.val_tokens == 62021632 and base.train_shards == 80
    assert base.seed == 1337  # not the 99 inside the embedded source
    late = parse_log((FIXTURES / "contest_late_seed42.log").read_text(), "contest_late.log")
    assert (late.val_bpb, late.score_label, late.seed) == (1.05989454, "quantized_ttt_phased", 42)
    assert (late.bytes_total, late.bytes_code, late.eval_seconds) == (15897259, 31999, 508.8)
    assert (late.steps, late.train_seconds, late.val_tokens) == (4945, 599.592, 47851520)
    with pytest.raises(PgolfError, match="no final"):
        parse_log("step:1/10 val_loss:2.0 val_bpb:1.2 train_time:5ms\n", "unfinished.log")
    adaptive = parse_log(  # pgolf's windows-only diagnostic after an adapting round trip is not the score
        "final_int8_zlib_docs128_lora_roundtrip_exact val_loss:3.66232888 val_bpb:2.18546674\n"
        "diagnostic_int8_zlib_windows_only_roundtrip val_loss:3.82115112 val_bpb:2.28024270\n",
        "lora.log",
    )
    assert adaptive.val_bpb == 2.18546674


class Peeking:
    """A predictor that reads the next token: what a leaking method looks like to the probes."""

    def __init__(self, vocab: int, normalised: bool = True) -> None:
        self.vocab, self.normalised = vocab, normalised

    def log_probs(self, inputs: torch.Tensor) -> torch.Tensor:
        nxt = torch.roll(inputs, -1, dims=1)
        logits = 5.0 * torch.nn.functional.one_hot(nxt, self.vocab).float()
        return torch.log_softmax(logits, -1) + (0.0 if self.normalised else 0.1)

    def observe(self, inputs, targets, scored) -> None:
        return None


def test_probes_catch_a_peeking_and_an_unnormalised_predictor():
    x = sample_inputs(17, 12)
    assert causality_error(Peeking(17), x, [0, 5, 10], 17) > 1.0
    assert normalisation_error(Peeking(17), x) < 1e-6
    assert normalisation_error(Peeking(17, normalised=False), x) == pytest.approx(0.1, rel=1e-5)


@pytest.fixture(scope="module")
def good_record(tmp_path_factory, data_root):
    from conftest import debug_config

    cfg = debug_config(data_root)
    cfg = apply_overrides(cfg, {"track": "cpu-5min-2mb", "train.max_wallclock_seconds": "300"})
    root = tmp_path_factory.mktemp("records")
    folder, rules = make_record(cfg, [1, 2, 3], RecordInfo("good", blurb="debug model"), root=root)
    return folder, rules


def _copy(folder: Path, tmp_path: Path, name: str) -> Path:
    dst = tmp_path / name
    shutil.copytree(folder, dst, ignore=shutil.ignore_patterns("runs"))
    return dst


def _edit_result(folder: Path, seed: int, fn) -> None:
    p = folder / f"result_seed{seed}.json"
    r = json.loads(p.read_text())
    fn(r)
    p.write_text(json.dumps(r))


def _status(folder: Path) -> dict[str, str]:
    return {r.name: r.status for r in check(folder)}


def test_a_good_record_passes_every_rule(good_record):
    folder, rules = good_record
    assert {r.status for r in rules} == {"pass"}, [r for r in rules if r.status != "pass"]
    sub = json.loads((folder / "submission.json").read_text())
    assert sub["seeds"] == [1, 2, 3] and set(sub["seed_results"]) == {"1", "2", "3"}
    assert sub["bytes_code"] == (folder / "train_gpt.py").stat().st_size and sub["track"] == "cpu-5min-2mb"
    assert sub["val_bpb"] == pytest.approx(np.mean([s.val_bpb for s in load_scores(folder)]))
    assert "| 1 |" in (folder / "README.md").read_text() and (folder / "train_seed2.log").is_file()
    assert main(["check", str(folder)]) == 0
    # the README's command is the one that made it, overrides included (seed and data root aside)
    assert ("`pgolf record --preset debug --track cpu-5min-2mb --train.max_wallclock_seconds 300.0 --seeds "
            "1,2,3 --name good`") in (folder / "README.md").read_text()  # fmt: skip
    rules = {r.name: r for r in rules}
    assert "bound 1.2e-04 at V=1024" in rules["score-first, causal, normalised evaluation"].detail
    leak = rules["no validation leakage"].detail
    assert "0 of 12 validation documents (of 12; 0 under 32 tokens not compared) occur exactly" in leak
    assert "every shard's token count and sha256 are its manifest's" in leak and "near-duplicates" in leak


def test_check_fails_each_broken_rule(good_record, tmp_path, data_root, monkeypatch):
    """Each case breaks one rule; the probes (the artifact's network and method, tested on their own
    below) are replaced by a pass here, since none of these cases touches an artifact's weights."""
    import pgolf.tools.records.check as check_module

    def not_probed(subject):
        return check_module.Rule("score-first, causal, normalised evaluation", "pass", "not probed here")

    rules = tuple(not_probed if r is check_module.rule_probes else r for r in check_module.RULES)
    monkeypatch.setattr(check_module, "RULES", rules)
    folder, _ = good_record
    cases = {}
    bad = cases["artifact bytes"] = _copy(folder, tmp_path, "oversize")
    for p in bad.glob("*.pgolf"):
        p.unlink()
    _edit_result(bad, 2, lambda r: r.update(bytes_model=2_500_000))
    bad = cases["training time (GPTQ calibration included)"] = _copy(folder, tmp_path, "overtime")
    for p in bad.glob("*.pgolf"):
        p.unlink()
    _edit_result(bad, 1, lambda r: r.update(train_seconds=301.5))
    bad = cases["evaluation time"] = _copy(folder, tmp_path, "slow_eval")
    _edit_result(bad, 3, lambda r: r.update(eval_seconds=300.2))
    bad = cases["at least 3 seeds of one configuration"] = _copy(folder, tmp_path, "two_configs")
    _edit_result(bad, 3, lambda r: r["config"]["model"].update(num_layers=3))
    bad = cases["no validation leakage"] = _copy(folder, tmp_path, "val_leak")
    _edit_result(bad, 1, lambda r: r["config"]["eval"].update(val_leak=True))
    bad = cases["counted code is the bundled file"] = _copy(folder, tmp_path, "altered_code")
    with open(bad / "train_gpt.py", "a") as f:
        f.write("# a change after the runs\n")
    bad = cases["an official track, the same everywhere"] = _copy(folder, tmp_path, "track_claim")
    sub = json.loads((bad / "submission.json").read_text())
    (bad / "submission.json").write_text(json.dumps({**sub, "track": "10min-16mb"}))
    bad = cases["results agree with the logs"] = _copy(folder, tmp_path, "edited_score")
    _edit_result(bad, 2, lambda r: r.update(val_bpb=r["val_bpb"] - 0.01))
    bad = cases["seeds declared before the runs"] = _copy(folder, tmp_path, "late_declaration")
    declared = json.loads((bad / "seeds.json").read_text())
    (bad / "seeds.json").write_text(json.dumps({**declared, "declared_at": declared["declared_at"] + 1e6}))
    subset = _copy(folder, tmp_path, "val_subset")
    _edit_result(subset, 2, lambda r: r["config"]["eval"].update(val_docs=5))
    for rule, bad in [*cases.items(), ("no validation leakage", subset)]:
        status = _status(bad)
        assert status[rule] == "fail", (rule, status)
        assert main(["check", str(bad)]) == 1


def test_check_reports_a_malformed_result_as_an_error(good_record, tmp_path):
    bad = _copy(good_record[0], tmp_path, "malformed")
    _edit_result(bad, 1, lambda r: r.pop("eval_seconds"))
    with pytest.raises(PgolfError, match="malformed run record"):
        check(bad)
    assert main(["check", str(bad)]) == 2


def test_check_finds_validation_shards_in_the_training_data(good_record, tmp_path, data_root):
    folder, _ = good_record
    leaky = tmp_path / "leaky_data"
    shutil.copytree(data_root, leaky)
    ds = next((leaky / "datasets").iterdir())
    shutil.copyfile(next(ds.glob("fineweb_val_*.bin")), ds / "fineweb_train_999999.bin")
    bad = _copy(folder, tmp_path, "overlap")
    for s in (1, 2, 3):
        _edit_result(bad, s, lambda r: r["config"]["data"].update(root=str(leaky)))
    rule = next(r for r in check(bad) if r.name == "no validation leakage")
    assert rule.status == "fail" and "same tokens as held-out shard" in rule.detail


def test_a_single_run_is_checked_against_its_rebuilt_bundle(debug_cfg, tmp_path):
    from pgolf.pipeline import run

    run(debug_cfg(track="debug"), out_dir=tmp_path / "d", echo=False)
    assert _status(tmp_path / "d")["an official track, the same everywhere"] == "fail"  # no caps
    run(
        debug_cfg(track="cpu-5min-2mb", **{"train.max_wallclock_seconds": 300}),
        out_dir=tmp_path / "r",
        echo=False,
    )
    status = _status(tmp_path / "r")
    assert status["counted code is the bundled file"] == "pass"
    assert status["at least 3 seeds of one configuration"] == "skip"
    assert "fail" not in status.values()
    r = json.loads((tmp_path / "r" / "result.json").read_text())
    (tmp_path / "r" / "result.json").write_text(json.dumps({**r, "code_sha256": "0" * 64}))
    assert _status(tmp_path / "r")["counted code is the bundled file"] == "fail"


def _contest_logs(folder: Path) -> Path:
    """Three seeds of the contest's baseline log, with their scores moved a little."""
    folder.mkdir()
    for seed, (loss, bpb) in {1: (2.0727, 1.2244), 2: (2.0750, 1.2258), 3: (2.0701, 1.2229)}.items():
        text = (FIXTURES / "contest_baseline_seed1337.log").read_text()
        text = text.replace(
            "val_loss:2.07269931 val_bpb:1.22436570", f"val_loss:{loss:.8f} val_bpb:{bpb:.8f}"
        )
        (folder / f"train_seed{seed}.log").write_text(text.replace("seed:1337", f"seed:{seed}"))
    return folder


def test_compare_runs_and_plot_from_the_cli(good_record, tmp_path, capsys):
    folder, _ = good_record
    logs = _contest_logs(tmp_path / "contest")
    assert main(["compare", str(folder), str(logs)]) == 0  # the contest's baseline "beats" a debug model
    out = capsys.readouterr().out
    assert "nats old" in out and "PASS" in out and "A seed 2" in out
    assert main(["compare", str(logs), str(folder), "--json"]) == 1
    d = json.loads(capsys.readouterr().out)
    assert d["nats"]["passes"] is False and len(d["a"]) == 3
    assert main(["runs", str(folder)]) == 0
    assert "debug" in capsys.readouterr().out
    png = tmp_path / "p.png"
    assert main(["plot", *map(str, sorted((folder / "runs").iterdir())), "--out", str(png)]) == 0
    assert png.stat().st_size > 10_000


def test_a_record_keeps_its_comparison_with_a_reference(good_record, tmp_path, capsys):
    """``--against``: Welch's lines in the README, the reference's mean and the ratio of the means in
    submission.json (what the README's results table reads); a refresh without it keeps them."""
    folder = _copy(good_record[0], tmp_path, "good")
    logs = _contest_logs(tmp_path / "contest")
    assert main(["record", "--finalize", str(folder), "--against", str(logs)]) == 0
    sub = json.loads((folder / "submission.json").read_text())
    ref = np.mean([1.2244, 1.2258, 1.2229])
    assert sub["dataset"] == "pgolf_demo_sp1024" and sub["against"]["seeds"] == 3
    assert sub["against"]["val_bpb"] == pytest.approx(ref)
    assert sub["against"]["ratio"] == pytest.approx(sub["val_bpb"] / ref)
    assert "## Against the reference" in (folder / "README.md").read_text()
    # the reference's logs travel with the record, so the comparison is redone from the folder alone
    assert sorted(p.name for p in (folder / "reference").iterdir()) == [
        f"train_seed{s}.log" for s in (1, 2, 3)
    ]
    assert (
        sub["against"]["reference"] == f"reference/ (copied from {logs})" and "sources" not in sub["against"]
    )
    capsys.readouterr()
    assert main(["compare", str(folder / "reference"), str(folder), "--json"]) == 1  # the debug model loses
    assert json.loads(capsys.readouterr().out)["bpb"]["mean_old"] == pytest.approx(ref)
    assert main(["record", "--finalize", str(folder)]) == 0
    assert json.loads((folder / "submission.json").read_text())["against"] == sub["against"]
    assert "## Against the reference" in (folder / "README.md").read_text()


def test_unofficial_scores_are_refused_and_other_tokenizers_compare_in_bpb(good_record, tmp_path):
    folder, _ = good_record
    r = json.loads((folder / "result_seed1.json").read_text())
    (tmp_path / "result.json").write_text(json.dumps({**r, "official_score": False}))
    with pytest.raises(PgolfError, match="unofficial"):
        load_scores(tmp_path)
    assert parse_log("unofficial_int8_zlib_eval val_loss:1.00000000 val_bpb:0.50000000\n"
                     "final_x_exact val_loss:2.00000000 val_bpb:1.00000000\n").val_bpb == 1.0  # fmt: skip
    from pgolf.tools.records.commands import _compare
    from pgolf.tools.records.logs import RunScore

    old = [RunScore("o", 2.0 + d, 1.20 + d) for d in (0.0, 0.01, 0.02)]  # SP1024-like ratio
    new = [RunScore("n", 2.5 + d, 1.10 + d) for d in (0.0, 0.01, 0.02)]  # a bigger vocabulary
    c = _compare(old, new, 0.005, 0.01)
    assert not c.same_tokens and c.verdict is c.bpb and c.bpb.passes and not c.nats.passes


def test_record_refuses_repeated_seeds_and_reuse(good_record, debug_cfg):
    folder, _ = good_record
    cfg = dataclasses.replace(debug_cfg(), track="cpu-5min-2mb")
    root = folder.parent.parent
    with pytest.raises(PgolfError, match="distinct"):
        make_record(cfg, [1, 1], RecordInfo("x"), root=root)
    with pytest.raises(PgolfError, match="already holds a record"):
        make_record(cfg, [4, 5, 6], RecordInfo("good"), root=root)
    with pytest.raises(PgolfError, match="no caps"):
        make_record(debug_cfg(), [4, 5, 6], RecordInfo("dbg"), root=root)


def test_check_reruns_the_runs_own_method_and_catches_a_leak(debug_cfg, tmp_path, monkeypatch):
    """The probe re-runs the artifact's method (here LoRA TTT with phased global SGD) with its
    ledger on a synthetic stream, and fails a head that lets later targets move earlier scores and
    an SGD TTT that learns from tokens before they are scored."""
    from pgolf.eval.predict import ModelHead
    from pgolf.eval.sgd_ttt import SgdTTT
    from pgolf.pipeline import run
    from pgolf.tools.records.check import rule_probes

    # the runs score only their first 8 validation documents (the probe re-runs the method on its
    # own synthetic stream, whatever the run scored)
    short = {"train.max_wallclock_seconds": 300, "eval.val_docs": 8}
    over = {"eval.method": "docs", "eval.stride": 16, "eval.ttt": "lora", "eval.lora_phase_docs": 6}
    run(debug_cfg(track="cpu-5min-2mb", **short, **over), out_dir=tmp_path / "r", echo=False)
    rule = rule_probes(load_subject(tmp_path / "r"))
    assert rule.status == "pass", rule.detail
    assert "docs16_lora-phased1x6" in rule.detail and "updates score-first" in rule.detail
    assert re.search(r"in 2 processes: method causality 0\.0e\+00 over \d+ targets", rule.detail), rule.detail
    assert int(re.search(r"(\d+) updates score-first", rule.detail)[1]) > 10

    nll = ModelHead.nll
    monkeypatch.setattr(ModelHead, "nll", lambda self, lp, b: nll(self, lp, b) + 1e-3 * b.y.float().mean())
    rule = rule_probes(load_subject(tmp_path / "r"))
    assert rule.status == "fail" and "method causality" in rule.detail
    monkeypatch.undo()

    over = {"eval.method": "sliding", "eval.stride": 32, "eval.ttt": "sgd"}
    run(debug_cfg(track="cpu-5min-2mb", **short, **over), out_dir=tmp_path / "s", echo=False)
    assert rule_probes(load_subject(tmp_path / "s")).status == "pass"
    end_chunk = SgdTTT.end_chunk
    monkeypatch.setattr(
        SgdTTT,
        "end_chunk",
        lambda self, t, lo, hi, ledger: end_chunk(self, t, lo, min(hi + 200, t.numel() - 1), ledger),
    )
    rule = rule_probes(load_subject(tmp_path / "s"))
    assert rule.status == "fail" and "method refused" in rule.detail and "unscored" in rule.detail


def test_a_leak_prepended_to_a_training_shard_is_refused_and_found(good_record, tmp_path, data_root, capsys):
    """Issue 31: validation tokens prepended to the training shard (its header's count updated) trained
    unseen and passed check. Training now refuses the shard (its manifest's count and sha256), and
    check fails it twice: by the manifest, and by the validation documents found in the tokens, the
    manifest gone too."""
    from pgolf.data.shards import read_shard, write_shard
    from pgolf.tools.data.docs import iter_docs

    folder, _ = good_record
    bad_root = tmp_path / "bad"
    shutil.copytree(data_root, bad_root, ignore=shutil.ignore_patterns(".sha256-cache.json"))
    ds = bad_root / "datasets" / "pgolf_demo_sp1024"
    val, train = (np.asarray(read_shard(ds / f"fineweb_{s}_000000.bin")) for s in ("val", "train"))
    write_shard(ds / "fineweb_train_000000.bin", np.concatenate([val[:8000], train]))
    ends = np.cumsum([len(d) for d in iter_docs([ds / "fineweb_val_000000.bin"])])
    whole = int((ends <= 8000).sum())  # the documents the prefix holds whole; the next one is cut
    assert 2 <= whole < 12
    args = ["train", "--preset", "debug", "--track", "cpu-5min-2mb", "--train.max_wallclock_seconds", "20",
            "--data.root", str(bad_root), "--out", str(tmp_path / "run")]  # fmt: skip
    assert main(args) == 2
    err = capsys.readouterr().err
    assert (
        f"fineweb_train_000000.bin: tokens {len(train) + 8000}, but {ds / 'manifest.json'} lists tokens"
        in err
    )
    bad = _copy(folder, tmp_path, "leaked")
    for s in (1, 2, 3):
        _edit_result(bad, s, lambda r: r["config"]["data"].update(root=str(bad_root)))
    rule = rule_val_leak(load_subject(bad))
    assert rule.status == "fail" and f"lists tokens {len(train)}" in rule.detail
    assert (
        f"FAIL: {whole} of 12 validation documents" in rule.detail and "val doc 0 (tokens [1, " in rule.detail
    )
    (ds / "manifest.json").unlink()  # the contest's export has no document lists: the tokens still tell
    rule = rule_val_leak(load_subject(bad))
    assert rule.status == "fail" and f"FAIL: {whole} of 12 validation documents" in rule.detail
    assert (
        "no manifest.json: the shards' token counts and sha256" in rule.detail
        and "lists tokens" not in rule.detail
    )
    assert main(["check", str(bad)]) == 1


def test_a_run_records_the_data_root_it_read(tmp_path, data_root, monkeypatch, capsys):
    """$PGOLF_DATA_ROOT is recorded in the run's config, made absolute, so check finds the data from
    anywhere; $PGOLF_DATA (the old name) is refused, not silently ignored."""
    from pgolf.tools.config_files import resolve

    monkeypatch.delenv("PGOLF_DATA_ROOT", raising=False)
    monkeypatch.setenv("PGOLF_DATA", str(data_root))
    monkeypatch.chdir(tmp_path)
    assert main(["train", "--preset", "debug", "--out", "a"]) == 2
    assert "$PGOLF_DATA is not read: the data root's variable is PGOLF_DATA_ROOT" in capsys.readouterr().err
    monkeypatch.delenv("PGOLF_DATA")
    (tmp_path / "d").symlink_to(data_root)
    monkeypatch.setenv("PGOLF_DATA_ROOT", "d")
    assert resolve("debug").data.root == str((tmp_path / "d").resolve())
    assert main(["train", "--preset", "debug", "--train.iterations", "2", "--out", "r"]) == 0
    result = json.loads((tmp_path / "r" / "result.json").read_text())
    assert result["config"]["data"]["root"] == str((tmp_path / "d").resolve())
    monkeypatch.delenv("PGOLF_DATA_ROOT")
    monkeypatch.chdir(data_root)
    rule = rule_val_leak(load_subject(tmp_path / "r"))
    assert rule.status == "pass" and "0 of 12 validation documents" in rule.detail


def _run_copy(src: Path, dst: Path, edit=None, artifact: bytes | None = None) -> None:
    shutil.copytree(src, dst)
    if edit:
        r = json.loads((dst / "result.json").read_text())
        edit(r)
        (dst / "result.json").write_text(json.dumps(r))
    if artifact is not None:
        (dst / "artifact.pgolf").write_bytes(artifact)


def test_compare_refuses_copies_and_mixed_configs_and_leaves_off_track_runs_out(
    good_record, tmp_path, capsys
):
    folder, _ = good_record
    logs, runs = _contest_logs(tmp_path / "contest"), folder / "runs"

    def seed(n):
        return lambda r: r["config"]["train"].update(seed=n)

    six = tmp_path / "six"
    for i in range(6):
        _run_copy(runs / "seed1", six / str(i))
    assert main(["compare", str(logs), str(six)]) == 2
    assert "B: seed 1 appears 6 times" in capsys.readouterr().err
    reseeded = tmp_path / "reseeded"
    for i in range(3):
        _run_copy(runs / "seed1", reseeded / str(i), seed(10 + i))
    assert main(["compare", str(logs), str(reseeded)]) == 2
    assert "B: artifact sha256" in capsys.readouterr().err
    assert main(["compare", str(folder), str(runs)]) == 2
    assert "A and B share 3 artifact(s)" in capsys.readouterr().err

    mixed = tmp_path / "mixed"
    for s in (1, 2, 3):
        _run_copy(runs / f"seed{s}", mixed / f"s{s}")
    _run_copy(runs / "seed1", mixed / "other_config", lambda r: (seed(4)(r), r["config"]["model"].update(
        num_layers=3)), b"another model")  # fmt: skip
    assert main(["compare", str(logs), str(mixed)]) == 2
    assert "B: runs of 2 configurations" in capsys.readouterr().err
    assert main(["compare", str(logs), str(mixed), "--mixed-configs"]) == 1
    assert "B: pooling 2 configurations (--mixed-configs)" in capsys.readouterr().out

    (mixed / "other_config").rename(tmp_path / "other_config")
    _run_copy(runs / "seed1", mixed / "over_cap", lambda r: (seed(5)(r), r.update(
        on_track=False, off_track=["artifact 2,100,000 bytes: over the cap"])), b"big")  # fmt: skip
    _run_copy(runs / "seed1", mixed / "leaked", lambda r: (seed(6)(r), r["config"]["eval"].update(
        val_leak=True)), b"leaked")  # fmt: skip
    assert main(["compare", str(logs), str(mixed), "--json"]) == 1
    out = json.loads(capsys.readouterr().out)
    assert out["nats"]["n_new"] == 3 and sorted(s["seed"] for s in out["b"]) == [1, 2, 3]
    assert any("over_cap: artifact 2,100,000 bytes: over the cap" in n for n in out["notes"])
    assert any("leaked: used eval.val_leak" in n for n in out["notes"])


def test_a_seed_run_moved_out_of_its_record_still_matches_its_code(good_record, tmp_path):
    folder, _ = good_record
    moved = tmp_path / "moved"
    shutil.copytree(folder / "runs" / "seed2", moved)
    rule = rule_code(load_subject(moved))
    assert rule.status == "pass" and "with train.seed 1337 baked in (SEED gave 2)" in rule.detail
    r = json.loads((moved / "result.json").read_text())
    r["config"]["model"]["mlp_mult"] = 3.0
    (moved / "result.json").write_text(json.dumps(r))
    rule = rule_code(load_subject(moved))
    assert (
        rule.status == "fail" and "is not the bundle of the run's config with the same sources" in rule.detail
    )
    assert re.search(r"at train\.seed 2 [\d,]+ bytes \([+-]\d+\) sha256", rule.detail), rule.detail


def test_the_normalisation_bound_covers_float32_rounding_at_the_vocabulary_size():
    from pgolf.tools.records.check import normalisation_bound

    g = torch.Generator().manual_seed(0)
    for vocab in (17, 1024, 8192, 65_536):
        logits = 8.0 * torch.randn(16, vocab, generator=g)
        err = float(torch.logsumexp(torch.log_softmax(logits, -1).double(), -1).abs().max())
        assert err <= normalisation_bound(vocab), (vocab, err)
    assert normalisation_bound(1024) > 1.2e-6 > 1e-6  # the compliant model the flat 1e-6 failed
    assert normalisation_error(
        Peeking(17, normalised=False), sample_inputs(17, 12)
    ) > 1e3 * normalisation_bound(17)


def test_runs_prints_long_paths_whole(good_record, tmp_path, capsys):
    folder, _ = good_record
    deep = tmp_path / ("a_rather_long_folder_name_" * 3) / "and_another_level_of_runs" / "seed1"
    shutil.copytree(folder / "runs" / "seed1", deep)
    assert main(["runs", str(tmp_path)]) == 0
    assert str(deep) in capsys.readouterr().out


def test_a_reference_keeps_its_off_track_runs_and_says_so():
    """Over a cap, a challenger's run is left out; a reference's is kept: it can only be stronger."""
    from pgolf.tools.records.logs import RunScore
    from pgolf.tools.records.stats import admissible

    runs = [RunScore(f"r{i}", 2.0 + i / 100, 1.2 + i / 100, seed=i, off_track=("over the cap",) * (i == 1))
            for i in range(3)]  # fmt: skip
    kept, notes = admissible(runs, "B")
    assert [s.seed for s in kept] == [0, 2] and notes == ["B: left out r1: over the cap"]
    kept, notes = admissible(runs, "A", reference=True)
    assert len(kept) == 3 and notes == [
        "A: kept (a reference off its track can only be stronger) r1: over the cap"
    ]


def test_the_reference_travels_with_the_record(tmp_path):
    """Run folders (a result.json and its train.log) and log files, copied under reference/."""
    from pgolf.tools.records.folder import keep_reference

    run, log = tmp_path / "ref" / "s7", tmp_path / "contest_seed1.log"
    run.mkdir(parents=True)
    for f, text in ((run / "result.json", "{}"), (run / "train.log", "log"), (log, "contest")):
        f.write_text(text)
    out = keep_reference(
        tmp_path / "rec", {"reference": "ref", "sources": [str(run), str(log)], "ratio": 0.9}
    )
    assert out == {"reference": "reference/ (copied from ref)", "ratio": 0.9}
    ref = tmp_path / "rec" / "reference"
    assert sorted(str(p.relative_to(ref)) for p in ref.rglob("*") if p.is_file()) == [
        "contest_seed1.log", "s7/result.json", "s7/train.log"
    ]  # fmt: skip


def test_a_field_added_since_a_run_was_made_counts_at_its_default_in_the_config_digest():
    """A run made before a config field existed is the same configuration as one made after with the
    field at its default (seeds of both may be pooled), and not as one that sets it."""
    from pgolf.tools.presets import get_preset
    from pgolf.tools.records.logs import config_digest

    new = get_preset("debug").to_dict()
    old = json.loads(json.dumps(new))
    del old["quant"]["qat_scope"], old["data"]["score_split"]  # fields added after such a run
    assert config_digest(old) == config_digest(new)
    new["quant"]["qat_scope"] = "shared"
    assert config_digest(old) != config_digest(new)
    old["data"]["no_such_field"] = 1  # a config this pgolf cannot read is digested as written
    assert config_digest(old) != config_digest({**old, "data": {**old["data"], "no_such_field": 2}})
