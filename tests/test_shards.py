import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from pgolf.data.shards import (
    HEADER_BYTES,
    MAGIC,
    ShardError,
    find_shards,
    read_header,
    read_shard,
    write_shard,
)


@settings(max_examples=40, deadline=None)
@given(tokens=arrays(np.uint16, st.integers(0, 3000)))
def test_shard_round_trip(tmp_path_factory, tokens):
    path = tmp_path_factory.mktemp("s") / "fineweb_train_000000.bin"
    write_shard(path, tokens)
    assert path.stat().st_size == HEADER_BYTES + 2 * len(tokens)
    for mmap in (True, False):
        assert np.array_equal(np.asarray(read_shard(path, mmap=mmap)), tokens)


def test_header_layout_matches_the_contest(tmp_path):
    path = tmp_path / "a.bin"
    write_shard(path, np.arange(5, dtype=np.uint16))
    header = np.fromfile(path, dtype="<i4", count=256)
    assert header[0] == MAGIC == 20240520 and header[1] == 1 and header[2] == 5 and not header[3:].any()
    assert np.fromfile(path, dtype="<u2", offset=HEADER_BYTES).tolist() == [0, 1, 2, 3, 4]


def _raw(path, header, payload=b""):
    path.write_bytes(np.asarray(header, dtype="<i4").tobytes() + payload)
    return path


def test_bad_magic(tmp_path):
    p = _raw(tmp_path / "x.bin", [123, 1, 0] + [0] * 253)
    with pytest.raises(ShardError, match=r"x\.bin: bad magic 123"):
        read_shard(p)


def test_bad_version(tmp_path):
    p = _raw(tmp_path / "x.bin", [MAGIC, 2, 0] + [0] * 253)
    with pytest.raises(ShardError, match="unsupported shard version 2"):
        read_header(p)


def test_truncated_payload_and_trailing_bytes(tmp_path):
    p = _raw(tmp_path / "t.bin", [MAGIC, 1, 10] + [0] * 253, b"\0" * 8)
    with pytest.raises(ShardError, match=r"t\.bin: file truncated: 1032 bytes, header says 10 tokens"):
        read_shard(p)
    p = _raw(tmp_path / "u.bin", [MAGIC, 1, 1] + [0] * 253, b"\0" * 4)
    with pytest.raises(ShardError, match="has trailing bytes"):
        read_shard(p)


def test_truncated_header(tmp_path):
    p = tmp_path / "h.bin"
    p.write_bytes(b"\0" * 100)
    with pytest.raises(ShardError, match=r"truncated header \(100 of 1024 bytes\)"):
        read_shard(p)


def test_missing_file_and_empty_glob(tmp_path):
    with pytest.raises(ShardError, match="shard file not found"):
        read_shard(tmp_path / "nope.bin")
    with pytest.raises(ShardError, match="data folder not found"):
        find_shards(tmp_path / "nothere", "*.bin")
    with pytest.raises(ShardError, match=r"no files match 'fineweb_train_\*\.bin'"):
        find_shards(tmp_path, "fineweb_train_*.bin")


def test_writer_refuses_out_of_range_ids_and_leaves_nothing(tmp_path):
    with pytest.raises(ShardError, match="token ids must be in"):
        write_shard(tmp_path / "bad.bin", np.array([1, 70_000]))
    assert list(tmp_path.iterdir()) == []


def test_train_val_guard_compares_whole_payloads(tmp_path, monkeypatch):
    import json

    import numpy as np
    import pytest

    from pgolf.data import manifest
    from pgolf.errors import DataError

    monkeypatch.setattr(manifest, "_PREFIX_BYTES", 64)  # tiny shards, same logic as 1 MiB prefixes
    tokens = np.arange(1000, dtype=np.uint16) % 700
    val = tmp_path / "fineweb_val_000000.bin"
    write_shard(val, tokens)
    near = tokens.copy()
    near[-1] += 1  # same size, same prefix, different tokens: not a copy
    write_shard(tmp_path / "fineweb_train_000000.bin", near)
    manifest.check_train_val_disjoint([tmp_path / "fineweb_train_000000.bin"], [val], tmp_path)
    copy = bytearray(val.read_bytes())
    copy[100] = 7  # a reserved header int edited: still the validation tokens
    (tmp_path / "fineweb_train_000001.bin").write_bytes(bytes(copy))
    with pytest.raises(DataError, match="holds the same tokens as validation shard"):
        manifest.check_train_val_disjoint([tmp_path / "fineweb_train_000001.bin"], [val], tmp_path)
    (tmp_path / "manifest.json").write_text(json.dumps({"format": manifest.MANIFEST_FORMAT, "splits": []}))
    with pytest.raises(DataError, match="malformed splits"):
        manifest.check_train_val_disjoint([tmp_path / "fineweb_train_000000.bin"], [val], tmp_path)


def _coprime_shards(tmp_path, sizes=(301, 97, 1000)):
    files = []
    for i, n in enumerate(sizes):
        files.append(tmp_path / f"fineweb_train_{i:06d}.bin")
        write_shard(files[-1], (np.arange(n) + 1000 * i) % 4000)
    return files


def test_coprime_blocks_read_every_block_once_before_repeating(tmp_path):
    import torch

    from pgolf.data.loader import CoprimeBlocks, DistributedTokenLoader

    files = _coprime_shards(tmp_path)
    seq = 8
    n = sum((s - 1) // seq for s in (301, 97, 1000))
    blocks = CoprimeBlocks(files, 4000)
    rows = blocks.take(n, seq)
    shards = [np.asarray(read_shard(f)) for f in files]
    seen, first = [], np.cumsum([0, 300 // seq, 96 // seq])
    for row in rows:  # every row is a block of seq + 1 tokens of one shard, at a multiple of seq
        i, a = int(row[0]) // 1000, int(row[0]) % 1000
        assert a % seq == 0 and np.array_equal(row, shards[i][a : a + seq + 1])
        seen.append(int(first[i]) + a // seq)  # the block's number over all shards
    assert sorted(seen) == list(range(n))  # a permutation of all blocks
    gaps = [min((b - a) % n, (a - b) % n) for a, b in itertools.pairwise(seen)]
    assert min(gaps) >= n // 4  # neighbours come from far apart
    assert np.array_equal(blocks.take(5, seq), rows[:5])  # then the cycle repeats

    def batches(world: int, steps: int = 3, state=None) -> list[torch.Tensor]:
        out = []
        cpu = torch.device("cpu")
        loaders = [DistributedTokenLoader(files, rank=r, world_size=world, vocab_size=4000, device=cpu,
                                          kind="coprime") for r in range(world)]  # fmt: skip
        for lo in loaders:
            if state:
                lo.stream.load_state(state)
        for _ in range(steps):
            parts = [lo.next_batch(64 // world, seq) for lo in loaders]
            out.append(torch.cat([x for x, _ in parts]))
            assert all(torch.equal(x[:, 1:], y[:, :-1]) for x, y in parts)
        return out, loaders[0].stream.state()

    one, state = batches(1)
    assert state == {"kind": "coprime", "count": 24, "total": 1398}
    two, _ = batches(2)
    assert all(torch.equal(a, b) for a, b in zip(one, two, strict=True))  # any world size, same batch
    again, _ = batches(1, 2, state={**state, "count": 16})
    assert all(torch.equal(a, b) for a, b in zip(one[2:], again, strict=False))  # resumes exactly
    with pytest.raises(ShardError, match="stream loader position, not coprime"):
        CoprimeBlocks(files, 4000).load_state({"file_idx": 0, "pos": 3})
    with pytest.raises(ShardError, match="the data changed"):
        CoprimeBlocks(files[:2], 4000).load_state(state)
