"""Evaluation methods: the sliding-window plan (seed-techniques §4.2) scores every target exactly
once, the tail included, with at least L - S tokens of context; through ``score`` and through an
artifact, with its own label and official status."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from pgolf.data.bytes import ByteLUT
from pgolf.errors import ConfigError, DataError
from pgolf.eval.score import score
from pgolf.methods.windows import check_plan, deal, doc_windows, plain_windows, sliding_windows
from pgolf.tools.cli import main


@settings(max_examples=80, deadline=None)
@given(n=st.integers(2, 400), seq=st.integers(1, 48), data=st.data(), world=st.integers(1, 4))
def test_sliding_plan_scores_every_target_once_with_its_context(n, seq, data, world):
    stride = data.draw(st.integers(1, seq))
    windows = sliding_windows(n, seq, stride)
    check_plan(windows, n)
    counts, context = [0] * n, [None] * n
    for rank in range(world):
        for w in deal(windows, rank, world):
            assert w.length <= seq
            for pos in range(w.score_from, w.length):
                counts[w.start + pos + 1] += 1
                context[w.start + pos + 1] = pos  # tokens before the predicting position
    assert counts[1:] == [1] * (n - 1) and counts[0] == 0  # all N targets, the tail included
    first = windows[0].length
    assert all(c >= seq - stride for c in context[first + 1 :])


@settings(max_examples=80, deadline=None)
@given(docs=st.lists(st.integers(1, 40), min_size=1, max_size=12), seq=st.integers(1, 24), data=st.data())
def test_document_windows_never_cross_a_bos_and_score_every_target_once(docs, seq, data):
    stride = data.draw(st.integers(1, seq))
    lead = data.draw(st.booleans())  # the stream may start inside a document
    stream = ([5] if lead else []) + [t for d in docs for t in [1] + [7] * d]
    tokens = torch.tensor(stream)
    n = len(stream)
    if n < 2:
        return
    windows = doc_windows(tokens, seq, stride)
    check_plan(windows, n)
    counts = [0] * n
    for w in windows:
        assert 1 not in stream[w.start + 1 : w.start + w.length]  # a BOS only as a window's first input
        for pos in range(w.score_from, w.length):
            counts[w.start + pos + 1] += 1
    assert counts[1:] == [1] * (n - 1)


def test_sliding_with_stride_equal_to_the_window_is_plain_plus_the_tail():
    assert sliding_windows(8 * 12 + 1, 8, 8) == plain_windows(8 * 12 + 1, 8)
    tail = sliding_windows(103, 8, 8)
    assert tail[:-1] == plain_windows(103, 8) and (tail[-1].start, tail[-1].length) == (96, 6)


def test_the_seed_records_tail_rule_would_overcount_and_this_one_does_not():
    """§4.3's example: L=8, S=4. The records' rule scores from max(wlen - S, 0) for every ws < N."""
    n_targets, seq, stride = 20, 8, 4
    buggy = [0] * (n_targets + 1)
    for ws in range(0, n_targets, stride):
        wlen = min(ws + seq, n_targets) - ws
        for pos in range(0 if ws == 0 else max(wlen - stride, 0), wlen):
            buggy[ws + pos + 1] += 1
    assert max(buggy) > 1
    ours = [0] * (n_targets + 1)
    for w in sliding_windows(n_targets + 1, seq, stride):
        for pos in range(w.score_from, w.length):
            ours[w.start + pos + 1] += 1
    assert ours[1:] == [1] * n_targets


class Bigram:
    """p(next | previous token) from a fixed table: the same at any context length, so a sliding
    evaluation must give exactly the per-target sum over the whole stream."""

    def __init__(self, vocab: int) -> None:
        g = torch.Generator().manual_seed(0)
        self.table = torch.log_softmax(torch.randn(vocab, vocab, generator=g), -1)

    def log_probs(self, inputs):
        return self.table[inputs]

    def end_chunk(self, tokens, lo, hi, ledger):
        return None


@pytest.mark.parametrize(("seq", "stride", "batch_tokens"), [(16, 4, 64), (16, 16, 16), (12, 5, 1000)])
def test_sliding_scores_the_whole_stream_exactly(seq, stride, batch_tokens):
    vocab, n = 11, 203
    g = torch.Generator().manual_seed(1)
    tokens = torch.randint(0, vocab, (n,), generator=g)
    lut = ByteLUT(
        base_bytes=torch.arange(1, vocab + 1, dtype=torch.int16),
        has_leading_space=torch.zeros(vocab, dtype=torch.bool),
        is_boundary=torch.zeros(vocab, dtype=torch.bool),
    )
    p = Bigram(vocab)
    cpu = torch.device("cpu")
    nll = -sum(float(p.table[tokens[i], tokens[i + 1]]) for i in range(n - 1))
    nbytes = sum(int(t) + 1 for t in tokens[1:])
    for plan in (sliding_windows(n, seq, stride), doc_windows(tokens, seq, stride)):
        r = score(p, tokens, lut.stream_bytes(tokens), plan, batch_tokens=batch_tokens, device=cpu)
        assert r.tokens == n - 1 and r.bytes == nbytes
        assert r.val_bpb == pytest.approx(nll / (math.log(2) * nbytes), rel=1e-9)


def test_eval_config_and_plans_refuse_bad_strides():
    from pgolf.config.eval import EvalConfig

    with pytest.raises(ConfigError, match=r"eval\.stride=65 is longer"):
        EvalConfig(seq_len=64, method="sliding", stride=65)
    with pytest.raises(ConfigError, match=r"eval\.method='ttt'"):
        EvalConfig(method="ttt")
    with pytest.raises(DataError, match=r"eval\.stride=9"):
        sliding_windows(100, 8, 9)


def test_a_run_scored_with_sliding_windows_and_pgolf_eval(debug_cfg, tmp_path, capsys):
    from pgolf.pipeline import run

    plain = run(debug_cfg(), out_dir=tmp_path / "plain", echo=False)
    r = run(debug_cfg(**{"eval.method": "sliding", "eval.stride": 16}), out_dir=tmp_path / "s", echo=False)
    assert r.score.official and r.score.label == "int8_zlib_sliding16"
    assert r.roundtrip.tokens > plain.roundtrip.tokens  # the tail is scored too
    assert r.roundtrip.val_bpb < plain.roundtrip.val_bpb  # more context per target
    log = (tmp_path / "s" / "train.log").read_text()
    assert "final_int8_zlib_sliding16_roundtrip_exact" in log
    assert main(["eval", str(tmp_path / "plain" / "artifact.pgolf"), "--eval.method", "sliding",
                 "--eval.stride", "16", "--json"]) == 0  # fmt: skip
    import json

    d = json.loads(capsys.readouterr().out)
    assert d["official_score"] is False and d["val_bpb"] < plain.roundtrip.val_bpb


E = {"seq_len": 64, "method": "docs", "stride": 16}
TWO_RANK_METHODS = {
    "plain": {"seq_len": 64},
    "sliding+sgd": {"seq_len": 64, "method": "sliding", "stride": 16, "ttt": "sgd", "ttt_lr": 0.05},
    "docs+experts": {**E, "experts": "ngram,match"},
    "sgd+docs+experts+tilt": {**E, "ttt": "sgd", "ttt_lr": 0.05, "experts": "ngram,match", "tilt": True},
    "lora+match": {**E, "ttt": "lora", "ttt_lr": 0.05, "lora_batch_docs": 2, "experts": "match"},
    "lora-warm-phased+tilt": {**E, "ttt": "lora", "ttt_lr": 0.05, "lora_batch_docs": 2, "lora_warm_a": True,
                              "lora_phase_docs": 4, "lora_phases": 2, "tilt": True},
}  # fmt: skip
"""Together they use every registered method but the correction table (a declared validation leak,
which ``pgolf check`` refuses before any probe)."""

TWO_RANK_PROBE = """
import json, sys
import torch
from pgolf import dist
from pgolf.config.eval import EvalConfig
from pgolf.config.model import ModelConfig
from pgolf.model.gpt import GPT
from pgolf.tools.records.probes import method_causality_error

with dist.closing():
    dist.setup("cpu")
    torch.manual_seed(0)
    model = GPT(ModelConfig(vocab_size=64, num_layers=2, model_dim=32, num_heads=2, num_kv_heads=1))
    for p in model.parameters():
        p.data.normal_(0, 0.2)
    methods = json.loads(sys.argv[1])
    out = {name: method_causality_error(model, EvalConfig(**kw), n_tokens=1024)
           for name, kw in methods.items()}
    if dist.rank() == 0:
        print(json.dumps(out))
"""


def test_the_two_rank_probe_covers_every_registered_method():
    from pgolf.config.eval import EvalConfig
    from pgolf.methods import REGISTRY, used

    covered = {m.name for kw in TWO_RANK_METHODS.values() for m in used(EvalConfig(**kw))}
    assert covered == {m.name for m in REGISTRY} - {"correction"}


@pytest.mark.slow
def test_no_method_lets_a_later_token_reach_a_score_on_two_ranks(tmp_path):
    """Each method's probe in 2 gloo processes: a token changed (to another, to a BOS that re-cuts the
    documents) moves no earlier score. Contiguous window shares broke this with a per-rank expert
    mixer: a later BOS moved the share bounds and earlier scores by up to 3.3 (docs + experts) and
    4.0 nats (SGD + docs + experts); one process could not show it."""
    import json
    import os
    import subprocess
    import sys

    from pgolf.tools.records.check import METHOD_TOL

    script = tmp_path / "probe.py"
    script.write_text(TWO_RANK_PROBE)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(script),
           json.dumps(TWO_RANK_METHODS)]  # fmt: skip
    proc = subprocess.run(cmd, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True,
                          timeout=600)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert set(out) == set(TWO_RANK_METHODS)
    for name, m in out.items():
        assert m["causality"] <= METHOD_TOL, (name, m)
        scored = 15 * 64 if name == "plain" else 1023  # plain windows leave the tail unscored
        assert m["later_scores_changed"] > 0 and m["targets"] == scored, (name, m)


@given(n=st.integers(1, 60), world=st.integers(1, 8), cut=st.integers(1, 60))
def test_a_windows_rank_never_depends_on_the_windows_after_it(n, world, cut):
    """Dealt by index: cutting the plan short (what a later BOS does to a document's windows) leaves
    every earlier window on its rank."""
    windows = plain_windows(n * 4 + 1, 4)
    rank_of = {w: r for r in range(world) for w in deal(windows, r, world)}
    short = windows[: min(cut, n)]
    assert all(rank_of[w] == r for r in range(world) for w in deal(short, r, world))
