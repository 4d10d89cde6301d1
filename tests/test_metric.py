"""val_bpb against hand computations (seed-techniques §3)."""

import hashlib
import itertools
import math
from typing import ClassVar

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from pgolf.config import DataConfig, ModelConfig
from pgolf.data.bytes import build_byte_lut
from pgolf.data.shards import find_shards, read_shard
from pgolf.data.valset import load_validation
from pgolf.errors import DataError
from pgolf.eval.bpb import BpbAccumulator
from pgolf.eval.predict import ModelPredictor
from pgolf.eval.score import score
from pgolf.methods.windows import Window, check_plan, deal, plain_windows
from pgolf.model.gpt import GPT
from pgolf.tools.data.build import split_documents
from pgolf.tools.data.stdlib_corpus import iter_stdlib_documents


class ToySP:
    """The SentencePieceProcessor calls the LUT builder makes, over a fixed piece list."""

    PIECES = ("<pad>", "<s>", "</s>", "<unk>", "<0x41>", "\u2581the", "cat", "\u2581", "é", "<0xC3>")
    KIND: ClassVar[dict[int, str]] = {
        0: "control",
        1: "control",
        2: "control",
        3: "unknown",
        4: "byte",
        9: "byte",
    }

    def vocab_size(self):
        return len(self.PIECES)

    def is_control(self, i):
        return self.KIND.get(i) == "control"

    def is_unknown(self, i):
        return self.KIND.get(i) == "unknown"

    def is_unused(self, i):
        return False

    def is_byte(self, i):
        return self.KIND.get(i) == "byte"

    def id_to_piece(self, i):
        return self.PIECES[i]


def test_lut_rules_on_a_toy_tokenizer():
    lut = build_byte_lut(ToySP(), vocab_size=12)
    assert lut.base_bytes.tolist() == [0, 0, 0, 0, 1, 3, 3, 0, 2, 1, 0, 0]
    assert lut.has_leading_space.tolist() == [False] * 5 + [True, False, True] + [False] * 4
    # specials, unknown and the two ids beyond the tokenizer are boundaries
    assert lut.is_boundary.tolist() == [True] * 4 + [False] * 6 + [True, True]


def test_bpb_by_hand():
    lut = build_byte_lut(ToySP())
    seq = torch.tensor([1, 5, 6, 7, 8, 1, 5, 4])
    prev, tgt = seq[:-1], seq[1:]
    # "▁the" after BOS: 3 (space not counted after a boundary); "cat": 3; "▁" after "cat": 0 + 1;
    # "é": 2; BOS: 0; "▁the" after BOS: 3; byte <0x41>: 1.
    expected = [3, 3, 1, 2, 0, 3, 1]
    assert lut.target_bytes(prev, tgt).tolist() == expected
    nll = torch.tensor([2.0, 1.5, 0.25, 3.0, 0.5, 1.0, 4.0])
    acc = BpbAccumulator()
    acc.add(nll, lut.target_bytes(prev, tgt))
    r = acc.result()
    assert (r.tokens, r.bytes) == (7, 13)
    assert r.val_loss == pytest.approx(12.25 / 7)
    assert r.val_bpb == pytest.approx(12.25 / (math.log(2) * 13))


def test_evaluate_matches_a_per_window_hand_computation():
    torch.manual_seed(0)
    lut = build_byte_lut(ToySP(), vocab_size=10)
    model = GPT(ModelConfig(vocab_size=10, num_layers=2, model_dim=32, num_heads=2, num_kv_heads=1))
    for p in model.parameters():  # non-zero output projections so the logits depend on context
        p.data.normal_(0, 0.2)
    stream = torch.randint(0, 10, (103,))
    seq_len = 8
    val = stream[: (len(stream) - 1) // seq_len * seq_len + 1]
    assert len(val) == 97  # 12 windows of 8 targets; the 6 tail tokens are not scored
    total_nll, total_bytes = 0.0, 0
    pieces_bytes = {i: int(lut.base_bytes[i]) for i in range(10)}
    for w in range(12):
        x, y = val[w * 8 : w * 8 + 8], val[w * 8 + 1 : w * 8 + 9]
        logp = F.log_softmax(model.logits(x[None]).double()[0], dim=-1)
        for t in range(8):
            total_nll -= float(logp[t, y[t]].detach())
            space = bool(lut.has_leading_space[y[t]]) and not bool(lut.is_boundary[x[t]])
            total_bytes += pieces_bytes[int(y[t])] + space
    cpu = torch.device("cpu")
    for batch_tokens in (8, 24, 1000):  # batching must not change which tokens are scored
        windows = plain_windows(len(stream), seq_len)
        nb = lut.stream_bytes(stream)
        r = score(ModelPredictor(model, cpu), stream, nb, windows, batch_tokens=batch_tokens, device=cpu)
        assert r.tokens == 96
        assert r.bytes == total_bytes
        assert r.val_bpb == pytest.approx(total_nll / (math.log(2) * total_bytes), rel=1e-6)


def test_lut_bytes_equal_decoded_utf8_bytes_on_real_text(built):
    """On the real validation split: the sum over every target of the val stream of the LUT's bytes
    equals the sum over val documents of len(utf8(sp.decode(doc ids))); and each decoded document
    equals sp.normalize(original text) with its whitespace marks "▁" turned back into spaces, so that
    sum is the UTF-8 length of the validation text after the tokenizer's NFKC/whitespace normalisation."""
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor(model_file=str(built.tokenizer_path))
    lut = build_byte_lut(sp, 1024)
    tokens = np.concatenate(
        [np.asarray(read_shard(f)) for f in find_shards(built.dataset_dir, "fineweb_val_*")]
    )
    t = torch.from_numpy(tokens.astype(np.int64))
    lut_total = int(lut.target_bytes(t[:-1], t[1:]).sum())
    bos = [*np.flatnonzero(tokens == 1).tolist(), len(tokens)]
    docs = [tokens[a + 1 : b].tolist() for a, b in itertools.pairwise(bos)]
    assert len(docs) == built.manifest["splits"]["val"]["docs"]
    decoded = [sp.decode(d) for d in docs]
    assert lut_total == sum(len(d.encode("utf-8")) for d in decoded)
    val_docs, _, _ = split_documents(iter_stdlib_documents(max_docs=160), built.manifest["val_docs"])
    assert decoded == [sp.normalize(d).replace("\u2581", " ") for d in val_docs]


def test_contest_byte_tables_and_eval_formula_rederived(built):
    """The contest's ``build_sentencepiece_luts`` and ``eval_val`` written again here from their
    description (seed-techniques §3), in numpy, on the real tokenizer and validation stream, against
    pgolf's tables and its BpbResult arithmetic."""
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor(model_file=str(built.tokenizer_path))
    n = sp.vocab_size()
    base, space, boundary = np.zeros(n, np.int64), np.zeros(n, bool), np.ones(n, bool)
    for i in range(n):
        if sp.is_control(i) or sp.is_unknown(i) or sp.is_unused(i):
            continue
        boundary[i] = False
        if sp.is_byte(i):
            base[i] = 1
            continue
        piece = sp.id_to_piece(i)
        if piece.startswith("\u2581"):
            space[i], piece = True, piece[1:]
        base[i] = len(piece.encode("utf-8"))
    lut = build_byte_lut(sp, n)
    assert (lut.base_bytes.numpy() == base).all() and (lut.has_leading_space.numpy() == space).all()
    assert (lut.is_boundary.numpy() == boundary).all()
    tokens = np.concatenate(
        [np.asarray(read_shard(f)) for f in find_shards(built.dataset_dir, "fineweb_val_*")]
    )
    prev, tgt = tokens[:-1].astype(np.int64), tokens[1:].astype(np.int64)
    rng = np.random.default_rng(0)
    nll = rng.uniform(0.1, 8.0, size=len(tgt))
    byte_count = float((base[tgt] + (space[tgt] & ~boundary[prev])).sum())
    val_loss = nll.sum() / len(tgt)  # eval_val: mean loss, bits per token x tokens per byte
    contest_bpb = (val_loss / math.log(2.0)) * (len(tgt) / byte_count)
    acc = BpbAccumulator()
    acc.add(torch.from_numpy(nll), lut.target_bytes(torch.from_numpy(prev), torch.from_numpy(tgt)))
    r = acc.result()
    assert r.bytes == byte_count and r.val_loss == pytest.approx(val_loss, rel=1e-12)
    assert r.val_bpb == pytest.approx(contest_bpb, rel=1e-12)


def test_validation_set_and_errors(built, data_root):
    data = DataConfig(root=str(data_root), dataset="datasets/pgolf_demo_sp1024",
                      tokenizer="tokenizers/pgolf_demo_1024_bpe.model")  # fmt: skip
    val = load_validation(data, 1024)
    files = find_shards(built.dataset_dir, "fineweb_val_*")
    tokens = np.concatenate([np.asarray(read_shard(f)) for f in files])
    assert val.tokens.tolist() == tokens.tolist() and val.files == files  # untrimmed
    assert val.sha256 == hashlib.sha256(tokens.astype("<u2").tobytes()).hexdigest()
    with pytest.raises(DataError, match="shorter than one window"):
        plain_windows(len(tokens), len(tokens) + 10)
    with pytest.raises(DataError, match="vocab mismatch"):
        load_validation(data, 300)


@settings(max_examples=60, deadline=None)
@given(n=st.integers(2, 500), seq=st.integers(1, 64), world=st.integers(1, 5))
def test_plain_plan_scores_every_target_once(n, seq, world):
    """Over the ranks' shares, each target in [1, floor((n-1)/seq)*seq] is scored exactly once."""
    if n - 1 < seq:
        return
    windows = plain_windows(n, seq)
    counts = [0] * n
    check_plan(windows, n)
    for rank in range(world):
        for w in deal(windows, rank, world):
            for pos in range(w.score_from, w.length):
                counts[w.start + pos + 1] += 1
    last = (n - 1) // seq * seq
    assert counts[1 : last + 1] == [1] * last and sum(counts) == last


def test_bad_plans_are_refused():
    from pgolf.methods.windows import check_plan

    check_plan([Window(0, 8, 0), Window(4, 8, 4)], 13)
    with pytest.raises(DataError, match="scores target 5 twice"):
        check_plan([Window(0, 8, 0), Window(4, 8, 0)], 13)
    with pytest.raises(DataError, match="does not fit a stream of 12 tokens"):
        check_plan([Window(4, 8, 4)], 12)  # its last target would be token 12
    with pytest.raises(DataError, match="does not fit"):
        check_plan([Window(0, 8, 8)], 20)  # scores nothing


def test_partially_scored_windows_score_only_their_tail():
    """Windows that overlap (as sliding windows will) score only [score_from, length): the sums
    equal a per-token hand computation over exactly those targets."""
    torch.manual_seed(0)
    lut = build_byte_lut(ToySP(), vocab_size=10)
    model = GPT(ModelConfig(vocab_size=10, num_layers=1, model_dim=16, num_heads=2, num_kv_heads=1))
    for p in model.parameters():
        p.data.normal_(0, 0.2)
    stream = torch.randint(0, 10, (30,))
    windows = [Window(0, 8, 0), Window(4, 8, 4), Window(8, 8, 4), Window(12, 8, 4)]  # targets 1..20
    cpu = torch.device("cpu")
    nb = lut.stream_bytes(stream)
    r = score(ModelPredictor(model, cpu), stream, nb, windows, batch_tokens=64, device=cpu)
    nll, nbytes = 0.0, 0
    for w in windows:
        x = stream[w.start : w.start + w.length]
        logp = F.log_softmax(model.logits(x[None]).double()[0], dim=-1)
        for t in range(w.score_from, w.length):
            y = int(stream[w.start + t + 1])
            nll -= float(logp[t, y].detach())
            nbytes += int(lut.target_bytes(x[t : t + 1], stream[w.start + t + 1 : w.start + t + 2]))
    assert r.tokens == 20 and r.bytes == nbytes
    assert r.loss_sum == pytest.approx(nll, rel=1e-6)


def test_short_documents_share_padded_forwards_and_score_as_alone():
    """The docs plan of a stream of many short documents: a fixed model's head takes padding, so
    documents of different lengths share forwards (fewer than one each), and every target scores
    what its own window alone gives (the hand sum), bytes exactly."""
    from pgolf.eval.predict import ModelHead
    from pgolf.methods.windows import plan_windows
    from pgolf.vocab import BOS_ID

    torch.manual_seed(0)
    lut = build_byte_lut(ToySP(), vocab_size=10)
    model = GPT(ModelConfig(vocab_size=10, num_layers=1, model_dim=16, num_heads=2, num_kv_heads=1))
    for p in model.parameters():
        p.data.normal_(0, 0.2)
    g = torch.Generator().manual_seed(2)
    docs = [torch.cat([torch.tensor([BOS_ID]), torch.randint(4, 10, (int(n),), generator=g)])
            for n in torch.randint(1, 20, (40,), generator=g)]  # fmt: skip
    stream = torch.cat(docs)
    windows = plan_windows(stream, "docs", 16, 8)
    nll = 0.0
    for w in windows:
        logp = F.log_softmax(model.logits(stream[w.start : w.start + w.length][None]).double()[0], -1)
        nll -= sum(float(logp[t, stream[w.start + t + 1]]) for t in range(w.score_from, w.length))

    class Counting(ModelPredictor):
        calls = 0

        def log_probs(self, inputs):
            Counting.calls += 1
            return super().log_probs(inputs)

    class Unpadded(ModelHead):
        takes_padding = False

    cpu, nb = torch.device("cpu"), lut.stream_bytes(stream)
    results = {}
    for head in (ModelHead(), Unpadded()):
        Counting.calls = 0
        r = score(Counting(model, cpu), stream, nb, windows, batch_tokens=128, device=cpu, head=head)
        results[type(head).__name__] = (r, Counting.calls)
    (padded, calls), (alone, calls_alone) = results["ModelHead"], results["Unpadded"]
    assert calls < len(windows) / 4 and calls_alone > len(windows) / 2
    assert padded.tokens == alone.tokens == stream.numel() - 1 and padded.bytes == alone.bytes
    assert padded.loss_sum == pytest.approx(nll, rel=1e-6) and alone.loss_sum == pytest.approx(nll, rel=1e-6)
