"""Evaluation methods: the sliding-window plan (seed-techniques §4.2) scores every target exactly
once, the tail included, with at least L - S tokens of context; through ``score`` and through an
artifact, with its own label and official status."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from pgolf.cli import main
from pgolf.data.bytes import ByteLUT
from pgolf.errors import ConfigError, DataError
from pgolf.eval.score import score
from pgolf.eval.windows import check_plan, doc_windows, plain_windows, rank_share, sliding_windows


@settings(max_examples=80, deadline=None)
@given(n=st.integers(2, 400), seq=st.integers(1, 48), data=st.data(), world=st.integers(1, 4))
def test_sliding_plan_scores_every_target_once_with_its_context(n, seq, data, world):
    stride = data.draw(st.integers(1, seq))
    windows = sliding_windows(n, seq, stride)
    check_plan(windows, n)
    counts, context = [0] * n, [None] * n
    for rank in range(world):
        for w in rank_share(windows, rank, world):
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
