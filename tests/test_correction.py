"""The validation-leak correction table (eval/correction.py): format, strict decoding, build, apply."""

import tracemalloc

import numpy as np
import pytest
import torch

from pgolf.errors import ArtifactError, ConfigError, DataError
from pgolf.eval.correction import (
    DEFAULT_BOOST,
    LEAK_LABEL,
    CorrectionTable,
    apply,
    build_table,
)

VOCAB = 65536

# Hand-computed example. Positions 3, 303, 304, 2097456 -> deltas 3, 300, 1, 2^21.
#   3     = 0b11                      -> 03
#   300   = 0b10_0101100              -> low 7 bits 0x2C | 0x80 = AC, then 300 >> 7 = 2 -> 02
#   1                                 -> 01
#   2^21  = 7-bit groups 0, 0, 0, 1   -> 80 80 80 01
# Tokens as uint16 LE: 5 -> 05 00, 300 = 0x012C -> 2C 01, 1023 = 0x03FF -> FF 03, 65535 -> FF FF.
EXAMPLE_POSITIONS = [3, 303, 304, 2_097_456]
EXAMPLE_TOKENS = [5, 300, 1023, 65535]
EXAMPLE_BLOB = (
    b"CRDT"
    + b"\x04\x00\x00\x00"  # N = 4
    + b"\x03\x05\x00"
    + b"\xac\x02\x2c\x01"
    + b"\x01\xff\x03"
    + b"\x80\x80\x80\x01\xff\xff"
)


def _reference_encode(positions, tokens) -> bytes:
    """Per-entry pure-Python LEB128 encoder: the spec, written the slow and obvious way."""
    out = bytearray(b"CRDT") + len(positions).to_bytes(4, "little")
    prev = 0
    for p, t in zip(positions, tokens, strict=True):
        d, prev = int(p) - prev, int(p)
        while d >= 0x80:
            out.append((d & 0x7F) | 0x80)
            d >>= 7
        out.append(d)
        out += int(t).to_bytes(2, "little")
    return bytes(out)


def _random_table(rng: np.random.Generator, n: int, vocab: int = VOCAB) -> CorrectionTable:
    """Deltas from 1 byte up to 6-byte varints (gaps >= 2^21 give 4+ bytes); token vocab-1 included."""
    kind = rng.integers(0, 4, n)
    lo = np.array([1, 128, 2**21, 2**35])[kind]
    hi = np.array([128, 2**14, 2**28, 2**40])[kind]
    deltas = rng.integers(lo, hi)
    tokens = rng.integers(0, vocab, n)
    if n:
        tokens[rng.integers(0, n)] = vocab - 1
    return CorrectionTable(np.cumsum(deltas), tokens)


def _header(n: int) -> bytes:
    return b"CRDT" + n.to_bytes(4, "little")


# ---------------------------------------------------------------- format


def test_exact_bytes_of_a_hand_computed_example():
    table = CorrectionTable(EXAMPLE_POSITIONS, EXAMPLE_TOKENS)
    assert table.encode() == EXAMPLE_BLOB
    assert table.nbytes == len(EXAMPLE_BLOB) == 24
    assert CorrectionTable.decode(EXAMPLE_BLOB, VOCAB) == table


def test_empty_table_round_trips():
    table = CorrectionTable([], [])
    assert table.encode() == b"CRDT\x00\x00\x00\x00"
    assert table.nbytes == 8
    assert CorrectionTable.decode(table.encode(), 1) == table


@pytest.mark.parametrize("seed", range(6))
def test_round_trip_on_random_tables(seed):
    rng = np.random.default_rng(seed)
    n = [1, 2, 3, 64, 65, 3000][seed]
    vocab = [2, 1024, VOCAB, 50257, VOCAB, 8192][seed]
    table = _random_table(rng, n, vocab)
    blob = table.encode()
    assert blob == _reference_encode(table.positions, table.tokens)
    assert len(blob) == table.nbytes
    back = CorrectionTable.decode(blob, vocab)
    assert back == table
    assert back.positions.dtype == np.int64 and back.tokens.dtype == np.uint16
    assert back.encode() == blob
    assert vocab - 1 in back.tokens
    if n >= 64:
        assert (np.diff(table.positions) >= 2**21).any()  # varints of 4+ bytes


def test_round_trip_at_the_int64_edge():
    big = 2**63 - 1  # a 9-byte varint: 63 payload bits
    table = CorrectionTable([1, big], [0, 7])
    blob = table.encode()
    assert blob == _reference_encode([1, big], [0, 7])
    assert len(blob) == 8 + (1 + 2) + (9 + 2)
    assert CorrectionTable.decode(blob, 8) == table


# ---------------------------------------------------------------- strict decoding


@pytest.mark.parametrize(
    ("blob", "vocab", "match"),
    [
        (b"CRD", VOCAB, "header"),
        (EXAMPLE_BLOB[:7], VOCAB, "header"),
        (b"CRDX" + EXAMPLE_BLOB[4:], VOCAB, "magic"),
        (b"crdt" + EXAMPLE_BLOB[4:], VOCAB, "magic"),
        (EXAMPLE_BLOB[:20], VOCAB, "entry 3 .* truncated inside its varint"),
        (EXAMPLE_BLOB[:23], VOCAB, "entry 3 .* truncated inside its uint16 token"),
        (_header(3) + EXAMPLE_BLOB[8:17], VOCAB, "entry 2 .* truncated inside its uint16 token"),
        (EXAMPLE_BLOB[:17], VOCAB, "counts 4 entries, which need at least 12 bytes, but the body has 9"),
        (_header(5) + EXAMPLE_BLOB[8:], VOCAB, "counts 5 entries but the blob holds 4"),
        (_header(3) + EXAMPLE_BLOB[8:], VOCAB, "6 trailing bytes"),
        (EXAMPLE_BLOB + b"\x00", VOCAB, "1 trailing bytes"),
        (_header(0) + b"\x01\x05\x00", VOCAB, "3 trailing bytes"),
        (_header(1) + b"\x80" * 10 + b"\x01" + b"\x05\x00", VOCAB, "varint longer than 10 bytes"),
        (_header(1) + b"\x80" * 12, VOCAB, "varint longer than 10 bytes"),
        (_header(1) + b"\x80" * 9 + b"\x01" + b"\x05\x00", VOCAB, "delta >= 2\\^63"),
        (_header(1) + b"\x83\x00" + b"\x05\x00", VOCAB, "overlong"),
        (_header(1) + b"\x00" + b"\x05\x00", VOCAB, "delta 0"),
        (_header(2) + b"\x01\x00\x00" + b"\x00\x00\x00", VOCAB, "entry 1 has position delta 0"),
        (_header(2) + (b"\xff" * 8 + b"\x7f" + b"\x00\x00") * 2, VOCAB, "entry 1 exceeds int64"),
        (EXAMPLE_BLOB, 65535, "entry 3 has token 65535, not below vocab size 65535"),
        (EXAMPLE_BLOB, 1023, "entry 2 has token 1023"),
    ],
)
def test_malformed_blobs_raise_artifact_error(blob, vocab, match):
    with pytest.raises(ArtifactError, match=match):
        CorrectionTable.decode(blob, vocab)


def test_every_truncation_of_a_valid_blob_is_refused():
    blob = _random_table(np.random.default_rng(7), 40).encode()
    for cut in range(len(blob)):
        with pytest.raises(ArtifactError):
            CorrectionTable.decode(blob[:cut], VOCAB)


def test_every_wrong_count_is_refused():
    blob = _random_table(np.random.default_rng(8), 30).encode()
    for n in [*range(30), *range(31, 40), 2**32 - 1]:
        with pytest.raises(ArtifactError, match=r"entries|trailing"):
            CorrectionTable.decode(_header(n) + blob[8:], VOCAB)


def test_random_corruptions_are_refused_or_canonical():
    """Flipping, inserting or deleting bytes either raises ArtifactError or yields a table whose
    encoding is exactly the corrupted blob (a table has one blob); nothing else is raised."""
    rng = np.random.default_rng(9)
    blob = _random_table(rng, 25, 1000).encode()
    for _ in range(400):
        b = bytearray(blob)
        at = int(rng.integers(0, len(b)))
        op = rng.integers(0, 3)
        if op == 0:
            b[at] ^= 1 << int(rng.integers(0, 8))
        elif op == 1:
            b.insert(at, int(rng.integers(0, 256)))
        else:
            del b[at]
        try:
            table = CorrectionTable.decode(bytes(b), 1000)
        except ArtifactError:
            continue
        assert table.encode() == bytes(b)


def test_hostile_count_is_rejected_before_allocating():
    blob = _header(2**32 - 1) + bytes(20)
    tracemalloc.start()
    try:
        with pytest.raises(ArtifactError, match="4294967295 entries, which need at least"):
            CorrectionTable.decode(blob, VOCAB)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 64 * 1024  # an array of 2^32 - 1 anything would be gigabytes


def test_decode_accepts_bytearray_and_memoryview_and_checks_vocab_size():
    table = CorrectionTable(EXAMPLE_POSITIONS, EXAMPLE_TOKENS)
    assert CorrectionTable.decode(bytearray(EXAMPLE_BLOB), VOCAB) == table
    assert CorrectionTable.decode(memoryview(EXAMPLE_BLOB), VOCAB) == table
    for bad in (0, VOCAB + 1):
        with pytest.raises(ConfigError, match="vocab_size"):
            CorrectionTable.decode(EXAMPLE_BLOB, bad)


# ---------------------------------------------------------------- the table object


def test_table_validates_and_is_immutable():
    for pos, tok in [([2, 2], [0, 0]), ([3, 1], [0, 0]), ([0], [0]), ([1], [65536]), ([1], [-1]), ([1], [])]:
        with pytest.raises(DataError):
            CorrectionTable(pos, tok)
    table = CorrectionTable([1, 5], [2, 3])
    with pytest.raises(ValueError):
        table.positions[0] = 9
    with pytest.raises(ValueError):
        table.tokens[0] = 9
    assert table != CorrectionTable([1, 5], [2, 4])


def test_describe_is_one_line_with_entries_bytes_and_ratio():
    line = CorrectionTable(EXAMPLE_POSITIONS, EXAMPLE_TOKENS).describe()
    assert "\n" not in line
    assert "4 entries" in line and "24 bytes" in line and "6.00 bytes/entry" in line
    assert LEAK_LABEL in line and "not compliant" in line
    assert "0 entries" in CorrectionTable([], []).describe()


def test_leak_label():
    assert LEAK_LABEL == "val_leak_correction"
    assert DEFAULT_BOOST == 20.0


# ---------------------------------------------------------------- build


def _stream(seed: int, n: int):
    rng = np.random.default_rng(seed)
    positions = np.cumsum(rng.choice([1, 1, 2, 200, 3000, 2**22], n))
    return rng.exponential(2.0, n), positions, rng.integers(0, 1024, n)


def test_build_picks_the_highest_nll_positions():
    nll, pos, tgt = _stream(0, 500)
    table = build_table(nll, pos, tgt, val_leak=True, max_entries=50)
    top = np.argsort(-nll)[:50]
    assert set(table.positions.tolist()) == set(pos[top].tolist())
    assert (np.diff(table.positions) > 0).all()
    lookup = dict(zip(pos.tolist(), tgt.tolist(), strict=True))
    assert table.tokens.tolist() == [lookup[p] for p in table.positions.tolist()]
    assert build_table(nll, pos, tgt, val_leak=True, max_entries=10**9) == CorrectionTable(pos, tgt)
    assert len(build_table(nll, pos, tgt, val_leak=True, max_entries=0)) == 0
    as_tensors = build_table(
        torch.tensor(nll), torch.tensor(pos), torch.tensor(tgt), val_leak=True, max_entries=50
    )
    assert as_tensors == table


def test_build_breaks_ties_by_earlier_position():
    table = build_table(
        [1.0, 2.0, 2.0, 2.0, 0.5], [1, 2, 3, 4, 5], [9, 8, 7, 6, 5], val_leak=True, max_entries=2
    )
    assert table.positions.tolist() == [2, 3] and table.tokens.tolist() == [8, 7]


@pytest.mark.parametrize("budget", [8, 9, 10, 11, 12, 13, 50, 101, 777, 2000, -1, 0, 1, 10**6])
def test_build_with_budget_is_the_largest_table_that_fits(budget):
    nll, pos, tgt = _stream(1, 800)
    full = CorrectionTable(pos, tgt).nbytes
    if budget in (-1, 0, 1):  # around the size of the whole stream's table
        budget += full
    table = build_table(nll, pos, tgt, val_leak=True, budget_bytes=budget)
    assert table.nbytes == len(table.encode()) <= budget
    assert table == build_table(nll, pos, tgt, val_leak=True, max_entries=len(table))
    if len(table) < len(pos):
        assert build_table(nll, pos, tgt, val_leak=True, max_entries=len(table) + 1).nbytes > budget
    else:
        assert budget >= full


def test_encoded_size_rises_with_every_entry():
    nll, pos, tgt = _stream(2, 300)
    sizes = [build_table(nll, pos, tgt, val_leak=True, max_entries=k).nbytes for k in range(301)]
    assert (np.diff(sizes) >= 2).all()  # + 2 token bytes, and the varints never shrink


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({}, ConfigError),
        ({"max_entries": 1, "budget_bytes": 100}, ConfigError),
        ({"budget_bytes": 7}, ConfigError),
        ({"max_entries": -1}, ConfigError),
    ],
)
def test_build_refuses_bad_limits(kwargs, error):
    with pytest.raises(error):
        build_table([1.0], [1], [0], val_leak=True, **kwargs)


@pytest.mark.parametrize(
    ("nll", "pos", "tgt"),
    [
        ([1.0, 2.0], [1, 2], [0]),
        ([1.0, 2.0], [2, 2], [0, 0]),
        ([1.0], [0], [0]),
        ([float("nan")], [1], [0]),
        ([1.0], [1], [65536]),
        ([1.0], [1.5], [0]),
        ([[1.0]], [[1]], [[0]]),
    ],
)
def test_build_refuses_bad_inputs(nll, pos, tgt):
    with pytest.raises(DataError):
        build_table(nll, pos, tgt, val_leak=True, max_entries=1)


# ---------------------------------------------------------------- apply


def test_apply_boosts_stored_tokens_only():
    torch.manual_seed(0)
    logits = 30.0 * torch.tanh(torch.randn(2, 6, 13) * 4.0 / 30.0)  # softcapped
    before = logits.clone()
    table = CorrectionTable([2, 5, 9, 100], [3, 0, 12, 7])
    where = torch.tensor([[0, 1, 2, 3, 4, 5], [7, 8, 9, 10, 100, 101]])
    out = apply(logits, where, table, val_leak=True)
    assert torch.equal(logits, before) and out is not logits
    expected = logits.clone()
    stored = dict(zip(table.positions.tolist(), table.tokens.tolist(), strict=True))
    hits = 0
    for b in range(2):
        for t in range(6):
            p = int(where[b, t])
            if p in stored:
                expected[b, t, stored[p]] += DEFAULT_BOOST
                hits += 1
    assert hits == 4
    assert torch.equal(out, expected)
    assert torch.equal(out[0, 0], logits[0, 0]) and torch.equal(out[1, 5], logits[1, 5])
    logz = torch.logsumexp(torch.log_softmax(out, dim=-1), dim=-1)
    assert torch.allclose(logz, torch.zeros_like(logz), atol=1e-5)
    assert torch.log_softmax(out, -1)[0, 2, 3] > torch.log_softmax(logits, -1)[0, 2, 3]


def test_apply_with_custom_boost_log_probs_and_non_contiguous_input():
    torch.manual_seed(1)
    logp = torch.log_softmax(torch.randn(5, 3, 7), dim=-1).transpose(0, 1)  # (3, 5, 7), not contiguous
    where = torch.arange(1, 16).reshape(3, 5)
    table = CorrectionTable([4, 15], [6, 1])
    out = apply(logp, where, table, boost=5.0, val_leak=True)
    expected = logp.clone()
    expected[0, 3, 6] += 5.0
    expected[2, 4, 1] += 5.0
    assert torch.equal(out, expected)


def test_apply_empty_table_changes_nothing_and_checks_inputs():
    logits = torch.randn(1, 4, 5)
    where = torch.arange(1, 5).reshape(1, 4)
    assert torch.equal(apply(logits, where, CorrectionTable([], []), val_leak=True), logits)
    with pytest.raises(ArtifactError, match="vocab"):
        apply(logits, where, CorrectionTable([2], [5]), val_leak=True)
    with pytest.raises(DataError):
        apply(logits, where.to(torch.int32), CorrectionTable([2], [1]), val_leak=True)
    with pytest.raises(DataError):
        apply(logits, where[:, :3], CorrectionTable([2], [1]), val_leak=True)
    with pytest.raises(DataError):
        apply(logits[0], where[0], CorrectionTable([2], [1]), val_leak=True)


# ---------------------------------------------------------------- the guard


@pytest.mark.parametrize("flag", [None, False, 1, "yes"])
def test_refuses_without_val_leak(flag):
    kwargs = {} if flag is None else {"val_leak": flag}
    with pytest.raises(ConfigError, match="stores validation targets; it runs only with --val-leak"):
        build_table([1.0], [1], [0], max_entries=1, **kwargs)
    with pytest.raises(ConfigError, match="--val-leak"):
        apply(torch.zeros(1, 1, 2), torch.ones(1, 1, dtype=torch.int64), CorrectionTable([1], [0]), **kwargs)
