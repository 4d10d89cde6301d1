"""Score-first test-time training (chunked SGD, per-document LoRA) and the ledger that proves it:
every target scored once, nothing scored after an update saw it, nothing learned before it was
scored, and (the causality probe) changing token k never changes a score before k."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

from pgolf.config.eval import EvalConfig
from pgolf.config.model import ModelConfig
from pgolf.data.bytes import ByteLUT
from pgolf.eval.ledger import Ledger, ScoreOrderError
from pgolf.eval.lora import chunk_windows, lora_ttt, phase_segments
from pgolf.eval.predict import ModelHead, ModelPredictor
from pgolf.eval.score import chunk_plan, first_target, score
from pgolf.eval.sgd_ttt import SgdTTT
from pgolf.methods.windows import Window, check_plan, doc_spans, plan_windows
from pgolf.model.gpt import GPT
from pgolf.tools.cli import main
from pgolf.vocab import BOS_ID

VOCAB = 16
CPU = torch.device("cpu")
LUT = ByteLUT(
    base_bytes=torch.arange(1, VOCAB + 1, dtype=torch.int16),
    has_leading_space=torch.zeros(VOCAB, dtype=torch.bool),
    is_boundary=torch.zeros(VOCAB, dtype=torch.bool),
)
nb = LUT.stream_bytes  # the bytes of each target of a stream


def tiny_model(seed: int = 0) -> GPT:
    torch.manual_seed(seed)
    model = GPT(ModelConfig(vocab_size=VOCAB, num_layers=2, model_dim=32, num_heads=2, num_kv_heads=1))
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model


def doc_stream(n: int, seed: int = 0) -> torch.Tensor:
    """BOS-led documents of 10-70 tokens with a repeated motif, so adaptation has something to learn."""
    g = np.random.default_rng(seed)
    out: list[int] = []
    while len(out) < n:
        motif = list(g.integers(2, VOCAB, 5))
        out += [BOS_ID] + [motif[i % 5] if g.random() < 0.8 else int(g.integers(2, VOCAB)) for i in
                           range(int(g.integers(10, 70)))]  # fmt: skip
    return torch.tensor(out[:n])


class Recorder:
    """A head that scores with the model's distribution and remembers each position's NLL."""

    def __init__(self) -> None:
        self.inner, self.by_position = ModelHead(), {}

    def nll(self, log_probs, batch):
        nll = self.inner.nll(log_probs, batch)
        mask = batch.scored if batch.scored is not None else torch.ones_like(nll, dtype=torch.bool)
        for p, v in zip(batch.positions()[mask].tolist(), nll[mask].tolist(), strict=True):
            assert p not in self.by_position  # scored once
            self.by_position[p] = v
        return nll

    def observe(self, batch, ledger):
        return None


def run_sgd(tokens: torch.Tensor, cfg: EvalConfig, predictor_cls=SgdTTT) -> tuple[Recorder, Ledger, float]:
    windows = plan_windows(tokens, cfg.method, cfg.seq_len, cfg.stride)
    n_chunks = len(chunk_plan(windows, cfg.sgd_chunk_tokens))
    predictor = predictor_cls(tiny_model(), CPU, cfg, n_chunks, cfg.seq_len)
    rec, ledger = Recorder(), Ledger(tokens.numel())
    r = score(predictor, tokens, nb(tokens), windows, batch_tokens=256, device=CPU, head=rec,
              chunk_tokens=cfg.sgd_chunk_tokens, ledger=ledger)  # fmt: skip
    return rec, ledger, r.val_bpb


SGD = EvalConfig(seq_len=32, method="sliding", stride=16, ttt="sgd", ttt_lr=0.05, sgd_chunk_tokens=96,
                 sgd_epochs=2, sgd_batch_seqs=2)  # fmt: skip
LORA = EvalConfig(seq_len=32, method="docs", stride=8, ttt="lora", ttt_lr=0.05, lora_batch_docs=3,
                  lora_targets="q,k,v,o,head")  # fmt: skip


def test_sgd_ttt_scores_every_target_once_learns_after_each_chunk_but_the_last():
    tokens = doc_stream(500)
    rec, ledger, bpb = run_sgd(tokens, SGD)
    assert sorted(rec.by_position) == list(range(1, 500))
    chunks = chunk_plan(plan_windows(tokens, "sliding", 32, 16), 96)
    assert ledger.summary()["updates"] == len(chunks) - 1 and len(chunks) > 3
    last = first_target(chunks[-1][0])
    assert ledger.learned[last - 1] and not ledger.learned[last:].any()  # the last chunk is never learned
    frozen = score(ModelPredictor(tiny_model(), CPU), tokens, nb(tokens),
                   plan_windows(tokens, "sliding", 32, 16),
                   batch_tokens=256, device=CPU)  # fmt: skip
    assert bpb < frozen.val_bpb  # the motifs are learnable


def test_sgd_ttt_changing_a_token_never_changes_an_earlier_score():
    tokens = doc_stream(500)
    before, _, _ = run_sgd(tokens, SGD)
    k = 250
    changed = tokens.clone()
    changed[k] = 2 + (int(tokens[k]) - 1) % (VOCAB - 2)  # another non-BOS token
    after, _, _ = run_sgd(changed, SGD)
    assert all(after.by_position[p] == before.by_position[p] for p in range(1, k))
    assert any(after.by_position[p] != before.by_position[p] for p in range(k + 2, 500))  # it did learn


def test_an_update_that_reads_an_unscored_token_is_refused():
    class Peeking(SgdTTT):
        def end_chunk(self, tokens, lo, hi, ledger):
            super().end_chunk(tokens, lo, min(hi + 40, tokens.numel() - 1), ledger)

    with pytest.raises(ScoreOrderError, match="unscored"):
        run_sgd(doc_stream(500), SGD, Peeking)


def test_the_ledger_refuses_a_second_score_and_an_early_update():
    ledger = Ledger(10)
    ledger.score(np.array([1, 2, 3]))
    with pytest.raises(ScoreOrderError, match="twice"):
        ledger.score(np.array([3, 4]))
    with pytest.raises(ScoreOrderError, match="twice"):
        ledger.score(np.array([6, 6]))  # twice within one call
    ledger.learn(np.array([0, 1, 2, 3]))  # the given first token and scored ones
    with pytest.raises(ScoreOrderError, match="unscored"):
        ledger.learn(np.array([4]))
    ledger.learned[5] = True  # what a broken update that skipped the check would leave
    with pytest.raises(ScoreOrderError, match="after an update"):
        ledger.score(np.array([5]))


def run_lora(tokens: torch.Tensor, cfg: EvalConfig = LORA) -> tuple[Recorder, Ledger, float]:
    rec, ledger = Recorder(), Ledger(tokens.numel())
    r = lora_ttt(tiny_model(), tokens, nb(tokens), cfg, cfg.seq_len, CPU, head=rec, ledger=ledger)
    return rec, ledger, r.val_bpb


def test_lora_ttt_scores_every_target_once_and_beats_the_frozen_model():
    tokens = doc_stream(600)
    rec, ledger, bpb = run_lora(tokens)
    assert sorted(rec.by_position) == list(range(1, 600))
    for a, b in doc_spans(tokens):  # every chunk is learned from after it is scored, but the last
        last = chunk_windows(b - a, 32, 8)[-1]
        first_unlearned = a + last.start + last.score_from + 1
        assert ledger.learned[a + 1 : first_unlearned].all()
        assert not ledger.learned[first_unlearned : b + 1].any()
    frozen = score(ModelPredictor(tiny_model(), CPU), tokens, nb(tokens),
                   plan_windows(tokens, "docs", 32, 8),
                   batch_tokens=256, device=CPU)  # fmt: skip
    assert bpb < frozen.val_bpb


def test_lora_ttt_is_causal_and_documents_are_independent():
    tokens = doc_stream(600)
    spans = doc_spans(tokens)
    before, _, _ = run_lora(tokens)
    a, b = spans[len(spans) // 2]
    k = (a + b) // 2
    changed = tokens.clone()
    changed[k] = 2 + (int(tokens[k]) - 1) % (VOCAB - 2)
    after, _, _ = run_lora(changed)
    assert all(after.by_position[p] == before.by_position[p] for p in range(1, k))
    others = [p for p in range(1, 600) if not a < p <= b]  # every other document, before and after
    assert all(after.by_position[p] == pytest.approx(before.by_position[p], abs=1e-5) for p in others)
    assert any(after.by_position[p] != before.by_position[p] for p in range(k + 2, b + 1))


@pytest.mark.parametrize("warm", [False, True])
def test_lora_scores_before_a_new_bos_or_a_later_document_do_not_change(warm):
    """The probe that caught two C1 breaks: A's initialisation depended on the batch a document
    landed in (hence on later documents' lengths), and warm-started A crossed documents in
    length order. Turning token k into a BOS, or changing a later document, changes nothing before k."""
    cfg = dataclasses.replace(LORA, lora_warm_a=warm)
    tokens = doc_stream(600, seed=2)
    before = run_lora(tokens, cfg)[0].by_position
    spans = doc_spans(tokens)
    a, b = spans[2]
    for k, value in (
        ((a + b) // 2, BOS_ID),
        (spans[-2][0] + 3, 2 + (int(tokens[spans[-2][0] + 3]) - 1) % 14),
    ):
        changed = tokens.clone()
        changed[k] = value
        after = run_lora(changed, cfg)[0].by_position
        assert all(after[p] == pytest.approx(before[p], abs=1e-5) for p in range(1, k)), k


PHASED = dataclasses.replace(LORA, lora_phase_docs=6, lora_phases=2, lora_phase_lr=0.05, sgd_batch_seqs=2)


def test_phase_segments_cut_the_stream_prefix_into_equal_shares():
    assert phase_segments(10, 0, 3) == [(0, 10)]
    assert phase_segments(10, 6, 2) == [(0, 3), (3, 6), (6, 10)]
    assert phase_segments(10, 6, 4) == [(0, 1), (1, 3), (3, 4), (4, 6), (6, 10)]
    assert phase_segments(4, 6, 2) == [(0, 3), (3, 4)]  # fewer documents than the prefix
    assert phase_segments(3, 2, 4) == [(0, 1), (1, 2), (2, 3)]  # empty shares dropped
    for n in range(1, 40):  # a later BOS (one more document) never moves an earlier cut
        for lo, hi in phase_segments(n, 25, 3)[:-1]:
            assert (lo, hi) in phase_segments(n + 1, 25, 3)


def test_documents_are_dealt_by_index_so_a_later_bos_moves_no_earlier_assignment():
    from pgolf.methods.windows import deal

    plans = [[Window(i, 1)] for i in range(11)]
    for world in (1, 2, 3):
        shares = [deal(plans, r, world) for r in range(world)]
        assert sorted(p[0].start for share in shares for p in share) == list(range(11))
        longer = [deal([*plans, [Window(11, 1)]], r, world) for r in range(world)]
        assert all(share == bigger[: len(share)] for share, bigger in zip(shares, longer, strict=True))


def test_phased_global_sgd_learns_the_prefix_once_scored_and_changes_only_later_documents():
    tokens = doc_stream(900, seed=3)
    spans = doc_spans(tokens)
    plain = run_lora(tokens)[0]
    rec, ledger, _ = run_lora(tokens, PHASED)
    assert sorted(rec.by_position) == list(range(1, 900))
    first_phase_end, prefix_end = spans[2][1], spans[5][1]  # documents 0-2, then 3-5, then the rest
    assert ledger.learned[: prefix_end + 1].all()  # every token of the 6 prefix documents
    lora_only = run_lora(tokens)[1]
    assert (ledger.learned[prefix_end + 1 :] == lora_only.learned[prefix_end + 1 :]).all()
    assert all(rec.by_position[p] == pytest.approx(plain.by_position[p], abs=1e-6)
               for p in range(1, first_phase_end + 1))  # fmt: skip  # scored before any phase
    later = range(first_phase_end + 1, 900)
    assert sum(
        rec.by_position[p] != pytest.approx(plain.by_position[p], abs=1e-6) for p in later
    ) > 0.9 * len(later)
    assert ledger.summary()["updates"] > lora_only.summary()["updates"]


@pytest.mark.parametrize("warm", [False, True])
def test_phased_global_sgd_is_causal_in_stream_order(warm):
    """Phases follow the stream: a token changed inside the prefix (or turned into a BOS, which
    shifts every later document's index) changes no score before it."""
    cfg = dataclasses.replace(PHASED, lora_warm_a=warm)
    tokens = doc_stream(900, seed=3)
    before = run_lora(tokens, cfg)[0].by_position
    spans = doc_spans(tokens)
    for k, value in (
        ((spans[4][0] + spans[4][1]) // 2, 2 + (int(tokens[(spans[4][0] + spans[4][1]) // 2]) - 1) % 14),
        ((spans[1][0] + spans[1][1]) // 2, BOS_ID),
    ):
        changed = tokens.clone()
        changed[k] = value
        after = run_lora(changed, cfg)[0].by_position
        assert all(after[p] == pytest.approx(before[p], abs=1e-5) for p in range(1, k)), k
        assert any(after[p] != pytest.approx(before[p], abs=1e-5) for p in range(spans[6][0] + 1, 900))


def test_a_plan_with_a_gap_or_an_unscored_window_is_refused():
    from pgolf.errors import DataError

    windows = plan_windows(doc_stream(300), "sliding", 32, 16)
    with pytest.raises(DataError, match="skips targets"):
        check_plan(windows[:3] + windows[4:], 300)
    with pytest.raises(DataError, match="not 1"):
        check_plan(windows[1:], 300)


def test_lora_needs_document_windows_and_known_targets():
    from pgolf.errors import ConfigError

    with pytest.raises(ConfigError, match=r"eval\.method=docs"):
        EvalConfig(ttt="lora", method="sliding")
    with pytest.raises(ConfigError, match="lora_targets"):
        EvalConfig(ttt="lora", method="docs", lora_targets="q,mlp")
    assert dataclasses.replace(LORA, lora_warm_a=True).tag == "docs8_lora-warm"
    assert PHASED.tag == "docs8_lora-phased2x6"
    with pytest.raises(ConfigError, match=r"eval\.ttt=lora"):
        EvalConfig(lora_phase_docs=10)
    with pytest.raises(ConfigError, match="stream-order pass"):
        EvalConfig(ttt="lora", method="docs", experts="ngram", mix="log")
    assert EvalConfig(ttt="lora", method="docs", experts="ngram,match").expert_list == ["ngram", "match"]


def test_a_run_with_sgd_ttt_is_official_and_pgolf_eval_labels_other_settings(debug_cfg, tmp_path, capsys):
    from pgolf.pipeline import run

    over = {"eval.method": "sliding", "eval.stride": 32, "eval.ttt": "sgd", "eval.sgd_chunk_tokens": 4096}
    r = run(debug_cfg(**over), out_dir=tmp_path / "t", echo=False)
    assert r.score.official and r.score.label.endswith("_sliding32_sgd")
    assert r.score.ledger["score_first_verified"] and r.score.ledger["updates"] > 0
    capsys.readouterr()
    art = str(tmp_path / "t" / "artifact.pgolf")
    assert main(["eval", art, "--eval.ttt_lr", "0.01", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert not out["official_score"] and out["score_first"]["updates"] > 0
    assert main(["eval", art, "--eval.ttt", "none", "--eval.experts", "ngram,match", "--eval.tilt", "true",
                 "--json"]) == 0  # fmt: skip
    mixed = json.loads(capsys.readouterr().out)
    assert set(mixed["method_details"]["weights"]) == {"model", "ngram", "match"}
    assert "tilt_hinted_targets" in mixed["method_details"] and not mixed["official_score"]


def test_the_correction_table_runs_only_with_val_leak_and_is_never_on_track(debug_cfg, tmp_path, capsys):
    from pgolf.errors import ConfigError
    from pgolf.pipeline import run

    with pytest.raises(ConfigError, match="pgolf eval --val-leak"):
        run(debug_cfg(**{"eval.val_leak": True, "eval.correction_bytes": 3000}), out_dir=tmp_path / "x")
    r = run(debug_cfg(), out_dir=tmp_path / "r", echo=False)
    art = str(tmp_path / "r" / "artifact.pgolf")
    assert main(["eval", art, "--eval.correction_bytes", "3000"]) == 2
    assert "eval.val_leak=true" in capsys.readouterr().err
    assert main(["eval", art, "--val-leak", "--eval.correction_bytes", "3000", "--json"]) == 1  # off track
    out = json.loads(capsys.readouterr().out)
    assert out["val_leak"] and not out["official_score"] and not out["on_track"]
    assert any("val_leak" in reason for reason in out["off_track"])
    leak = out["method_details"]["leak_bytes"]
    assert 2900 < leak <= 3000 and out["bytes_total"] == r.size.total_bytes + leak
    assert out["val_bpb"] < r.roundtrip.val_bpb  # the leak "helps", which is why it is refused


SGD_ARGS = ["--eval.method", "sliding", "--eval.stride", "32", "--eval.ttt", "sgd",
            "--eval.sgd_chunk_tokens", "4096"]  # fmt: skip
LORA_ARGS = ["--eval.method", "docs", "--eval.stride", "32", "--eval.ttt", "lora",
             "--eval.lora_batch_docs", "8"]  # fmt: skip
PHASED_ARGS = [*LORA_ARGS, "--eval.lora_phase_docs", "6", "--eval.lora_phases", "2"]


@pytest.fixture(scope="module")
def debug_artifact(debug_cfg, tmp_path_factory):
    from pgolf.pipeline import run

    out = tmp_path_factory.mktemp("debug_run")
    run(debug_cfg(), out_dir=out, echo=False)
    return out / "artifact.pgolf"


@pytest.mark.slow
@pytest.mark.parametrize(
    "method", [SGD_ARGS, PHASED_ARGS, [*PHASED_ARGS, "--eval.experts", "match"]],
    ids=["sgd", "lora-phased", "lora-phased-match"],
)  # fmt: skip
def test_ttt_on_two_gloo_processes_scores_what_one_does(method, debug_artifact):
    """Ranks share each chunk's windows (SGD, gradients averaged, the ledger's flags merged before
    every update) or the documents (LoRA, here with its global SGD phases, which train on every
    rank's share of the scored documents; with the match expert, every rank's model probabilities
    gathered before the stream-order mixer): every target once, the same sums up to float order."""
    import os
    import subprocess
    import sys

    args = ["-m", "pgolf", "eval", str(debug_artifact), *method, "--json"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    launch = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    out = {}
    for name, cmd in (("one", [sys.executable]), ("two", launch)):
        proc = subprocess.run([*cmd, *args], env=env, capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stderr[-3000:]
        out[name] = json.loads(proc.stdout[proc.stdout.index("{") : proc.stdout.rindex("}") + 1])
    one, two = out["one"], out["two"]
    assert (two["val_tokens"], two["val_bytes"]) == (one["val_tokens"], one["val_bytes"])
    assert two["val_bpb"] == pytest.approx(one["val_bpb"], abs=1e-5)
    assert two["score_first"]["score_first_verified"] and two["score_first"]["updates"] > 0


def test_the_eval_clock_projects_the_total_once_and_flags_a_breach():
    from pgolf.eval.score import EvalClock

    t = [0.0]
    lines: list[str] = []
    clock = EvalClock(now=lambda: t[0], echo=lines.append, cap_s=100.0, project_after_s=10.0)
    with clock.phase("load"):
        t[0] = 4.0
    with clock.phase("score"):
        clock.progress(0, 1000)
        t[0] = 9.0
        clock.progress(100, 1000)  # 5 s of scoring: too early to project
        assert not lines
        t[0] = 16.0
        clock.progress(200, 1000)  # 12 s for 200 of 1000 targets: 4 + 60 s
        t[0] = 30.0
        clock.progress(400, 1000)
    assert lines == ["eval_projection: 200/1000 targets in 12.0 s of scoring; projected total 64.0 s "
                     "(cap 100 s)"]  # fmt: skip
    assert clock.projection == 64.0 and clock.phases == {"load": 4.0, "score": 26.0}
    slow = EvalClock(now=lambda: t[0], echo=lines.append, cap_s=50.0)
    with slow.phase("score"):
        slow.progress(0, 10)
        t[0] += 20.0
        slow.progress(1, 10)
    assert lines[-1].endswith("projected total 200.0 s, OVER the 50 s cap")
    lump = EvalClock(now=lambda: t[0], echo=lines.append, cap_s=50.0)  # global SGD is not a rate
    with lump.phase("score+adapt"):
        lump.progress(0, 100)
        t[0] += 10.0
    with lump.phase("global_sgd"):
        t[0] += 30.0
    with lump.phase("score+adapt"):
        t[0] += 10.0
        lump.progress(50, 100, pending="1 global SGD phase(s)")
    assert lines[-1].endswith("projected total 70.0 s, plus 1 global SGD phase(s), OVER the 50 s cap")


def test_pgolf_eval_reports_a_warmup_phase_and_prints_the_projection(
    debug_cfg, tmp_path, capsys, monkeypatch
):
    from pgolf.eval import score as score_module
    from pgolf.pipeline import run

    run(debug_cfg(), out_dir=tmp_path / "r", echo=False)
    capsys.readouterr()
    init = score_module.EvalClock.__init__
    monkeypatch.setattr(score_module.EvalClock, "__init__",
                        lambda self, *a, **k: init(self, *a, **{**k, "project_after_s": 0.0}))  # fmt: skip
    assert main(["eval", str(tmp_path / "r" / "artifact.pgolf"), "--json"]) == 0
    captured = capsys.readouterr()
    out = json.loads(captured.out)
    assert {"load", "warmup", "score"} <= set(out["eval_phases"])
    assert "eval_projection:" in captured.err and "projected total" in captured.err


def test_a_validation_subset_is_scored_as_such_and_never_official(debug_cfg, tmp_path, capsys):
    from pgolf.data.valset import load_validation
    from pgolf.pipeline import run

    cfg = debug_cfg(**{"train.iterations": 3, "eval.val_docs": 2, "eval.method": "docs", "eval.stride": 64})
    full = load_validation(cfg.data, cfg.model.vocab_size)
    part = full.first_docs(2)
    starts = torch.nonzero(full.tokens == 1).flatten().tolist()
    assert part.tokens.tolist() == full.tokens[: starts[2]].tolist() and part.sha256 == full.sha256
    assert part.describe() == f"first 2 of {len(starts)} validation documents"
    assert full.first_docs(0) is full and full.first_docs(len(starts)) is full
    r = run(cfg, out_dir=tmp_path / "t", echo=False)
    assert not r.score.official and "first 2 of" in r.score.note
    assert r.roundtrip.tokens == starts[2] - 1  # every target of the two documents, once
    assert r.roundtrip.bytes == int(full.target_bytes[1 : starts[2]].sum())
    log = (tmp_path / "t" / "train.log").read_text()
    assert "validation subset: first 2 of" in log and "unofficial_" in log and "final_int8" not in log
    capsys.readouterr()
    art = str(tmp_path / "t" / "artifact.pgolf")
    assert main(["eval", art, "--json"]) == 0  # the artifact records the whole set: official
    out = json.loads(capsys.readouterr().out)
    assert out["official_score"] and out["val_tokens"] == full.tokens.numel() - 1
