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
from pgolf.vocab import BOS_ID


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
    with pytest.raises(DataError, match="holds the same tokens as held-out shard"):
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


def _copy_dataset(data_root, tmp_path):
    """A copy of the demo dataset (shards and manifest) to tamper with."""
    import shutil

    src = data_root / "datasets" / "pgolf_demo_sp1024"
    dst = tmp_path / "datasets" / "pgolf_demo_sp1024"
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns(".sha256-cache.json"))
    return dst


def test_shards_are_verified_against_the_manifest_with_cached_hashes(data_root, tmp_path, monkeypatch):
    import json

    from pgolf.data import manifest
    from pgolf.errors import DataError

    ds = _copy_dataset(data_root, tmp_path)
    train, val = find_shards(ds, "fineweb_train_*.bin"), find_shards(ds, "fineweb_val_*.bin")
    hashed = []
    sha256 = manifest.file_sha256
    monkeypatch.setattr(manifest, "file_sha256", lambda p: hashed.append(p.name) or sha256(p))
    manifest.check_train_val_disjoint(train, val, ds)
    assert sorted(hashed) == ["fineweb_train_000000.bin", "fineweb_val_000000.bin"]
    cache = json.loads((ds / manifest.HASH_CACHE).read_text())
    assert cache["fineweb_train_000000.bin"][2] == sha256(train[0])
    manifest.check_train_val_disjoint(train, val, ds)  # unchanged (size, mtime): nothing re-hashed
    assert len(hashed) == 2
    listed = json.loads((ds / "manifest.json").read_text())["splits"]["train"]["shards"][0]["tokens"]
    original = train[0].read_bytes()

    # the leak: the first validation tokens prepended, the header's count updated
    leaked = np.concatenate([read_shard(val[0])[:5000], read_shard(train[0])])
    write_shard(train[0], leaked)
    with pytest.raises(DataError, match=rf"fineweb_train_000000\.bin: tokens {listed + 5000}, but .*manifest"
                       rf"\.json lists tokens {listed} \(the shard changed"):  # fmt: skip
        manifest.check_train_val_disjoint(train, val, ds)
    # the same count, other tokens: only the content hash sees it (and the edit's mtime re-hashes it)
    swapped = np.asarray(read_shard(train[0]))[5000:].copy()
    swapped[10:20] = 7
    write_shard(train[0], swapped)
    with pytest.raises(
        DataError, match=r"fineweb_train_000000\.bin: sha256 [0-9a-f]{64}, but .* lists sha256"
    ):
        manifest.check_train_val_disjoint(train, val, ds)
    # a shard the build never wrote
    train[0].write_bytes(original)
    write_shard(ds / "fineweb_train_000001.bin", swapped)
    with pytest.raises(DataError, match=r"fineweb_train_000001\.bin: not listed in .*manifest\.json"):
        manifest.check_train_val_disjoint([*train, ds / "fineweb_train_000001.bin"], val, ds)


def _stream(docs):
    return np.concatenate([np.array([BOS_ID, *d], dtype=np.uint16) for d in docs])


def test_validation_documents_are_found_in_the_training_tokens(tmp_path, data_root):
    from pgolf.tools.data.docs import MIN_DOC_TOKENS, val_docs_in_train

    rng = np.random.default_rng(0)
    long = [list(rng.integers(4, 900, size=n)) for n in (40, 300, 64, 500)]
    short = [[], [5], list(range(10, 20))]  # empty, one token, ten: below MIN_DOC_TOKENS
    val = [long[0], short[0], long[1], short[1], long[2], short[2], long[3]]
    write_shard(tmp_path / "fineweb_val_000000.bin", _stream(val))
    other = [list(rng.integers(4, 900, size=n)) for n in (50, 80, 300)]
    # training: its own duplicates, the short validation documents, long[1] whole and long[2] cut short
    train = _stream([other[0], other[0], *short, other[1], long[1], long[2][:-1], other[2], other[2]])
    cut = len(train) - (301 + 64 + 301 + 301) + 150  # inside long[1]: whole again across the two shards
    write_shard(tmp_path / "fineweb_train_000000.bin", train[:cut])
    write_shard(tmp_path / "fineweb_train_000001.bin", train[cut:])
    trains = find_shards(tmp_path, "fineweb_train_*.bin")
    o = val_docs_in_train(trains, [tmp_path / "fineweb_val_000000.bin"])
    assert (o.val_docs, o.checked, o.train_docs, o.min_tokens) == (7, 4, 10, MIN_DOC_TOKENS)
    assert o.found == [(2, [BOS_ID, *map(int, long[1][:7])])]
    assert "1 of 4 validation documents (of 7; 3 under 32 tokens not compared)" in o.describe()
    assert "val doc 2 (tokens [1, " in o.describe()
    write_shard(tmp_path / "fineweb_train_000002.bin", _stream([long[1]]))  # long[1] twice: found once
    write_shard(tmp_path / "fineweb_train_000001.bin", _stream([long[0]]))
    o = val_docs_in_train(find_shards(tmp_path, "fineweb_train_*.bin"), [tmp_path / "fineweb_val_000000.bin"])
    assert [i for i, _ in o.found] == [0, 2]
    # the clean demo dataset: nothing found
    ds = data_root / "datasets" / "pgolf_demo_sp1024"
    clean = val_docs_in_train(find_shards(ds, "fineweb_train_*.bin"), find_shards(ds, "fineweb_val_*.bin"))
    assert clean.found == [] and clean.checked == clean.val_docs == 12 and clean.train_docs > 100
