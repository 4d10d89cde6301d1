import itertools
import json

import numpy as np
import pytest

from pgolf.data.shards import find_shards, read_shard
from pgolf.tools.data.build import (
    DataBuildError,
    build_dataset,
    doc_hash,
    iter_input_documents,
    split_documents,
)


def _docs(n):
    words = [
        "alpha",
        "beta",
        "gamma",
        "delta",
        "epsilon",
        "zeta",
        "eta",
        "theta",
        "iota",
        "kappa",
        "lambda",
        "mu",
    ]
    rng = np.random.default_rng(0)
    return [" ".join(rng.choice(words, size=40 + i % 17)) + f". Document {i} ends here." for i in range(n)]


def test_split_is_by_hash_order_and_dedupes():
    docs = _docs(30)
    val, train, dropped = split_documents(docs + docs[:5] + ["", "  "], 4)
    assert dropped == 7  # 5 exact duplicates + 2 blank documents
    ordered = sorted(set(docs), key=doc_hash)
    assert val == ordered[:4] and train == ordered[4:]
    # the rule does not depend on input order
    assert split_documents(list(reversed(docs)), 4)[0] == val
    with pytest.raises(DataBuildError, match="val_docs=30 must be >= 1 and leave training documents"):
        split_documents(docs, 30)


def _decoded_docs(built, split):
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor(model_file=str(built.tokenizer_path))
    toks = np.concatenate(
        [np.asarray(read_shard(f)) for f in find_shards(built.dataset_dir, f"fineweb_{split}_*")]
    )
    bos = [*np.flatnonzero(toks == 1).tolist(), len(toks)]
    assert bos[0] == 0, "every document starts with BOS"
    return [sp.decode(toks[a + 1 : b].tolist()) for a, b in itertools.pairwise(bos)]


def test_no_train_val_overlap(built):
    """Proof in two independent ways: the manifest's document hashes are disjoint, and the texts
    decoded back from the two splits' shards share no document."""
    m = built.manifest
    val_h, train_h = set(m["splits"]["val"]["doc_sha256"]), set(m["splits"]["train"]["doc_sha256"])
    assert len(val_h) == m["splits"]["val"]["docs"] and len(train_h) == m["splits"]["train"]["docs"]
    assert not val_h & train_h
    val_text, train_text = _decoded_docs(built, "val"), _decoded_docs(built, "train")
    assert len(val_text) == m["splits"]["val"]["docs"] and not set(val_text) & set(train_text)


def test_build_is_deterministic_and_manifest_is_complete(tmp_path):
    docs = _docs(80)
    a = build_dataset(docs, out_root=tmp_path / "a", name="t", vocab_size=300, val_docs=8, shard_tokens=5000)
    b = build_dataset(
        list(reversed(docs)), out_root=tmp_path / "b", name="t", vocab_size=300, val_docs=8, shard_tokens=5000
    )
    assert a.dataset_dir.name == "t_sp300" and a.tokenizer_path.name == "t_300_bpe.model"
    ma, mb = a.manifest, b.manifest
    assert ma["tokenizer"]["sha256"] == mb["tokenizer"]["sha256"]
    assert ma["splits"] == mb["splits"]
    train = ma["splits"]["train"]
    assert len(train["shards"]) > 1 and sum(s["tokens"] for s in train["shards"]) == train["tokens"]
    assert train["tokens"] == sum(len(read_shard(a.dataset_dir / s["file"])) for s in train["shards"])
    assert ma["tokenizer"]["settings"]["byte_fallback"] and ma["tokenizer"]["vocab_size"] == 300
    assert "sha256 of their UTF-8 text" in ma["selection"]
    assert json.loads((a.dataset_dir / "manifest.json").read_text()) == ma


def test_tokenizer_has_contest_special_ids(built):
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor(model_file=str(built.tokenizer_path))
    assert [sp.pad_id(), sp.bos_id(), sp.eos_id(), sp.unk_id()] == [0, 1, 2, 3]
    assert sp.encode("12345") == [sp.piece_to_id(c) for c in "12345"]  # split_digits
    assert not sp.id_to_piece(sp.encode("hello")[0]).startswith("\u2581")  # no dummy prefix


def test_input_files(tmp_path):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "a.txt").write_text("first document")
    (tmp_path / "d" / "b.jsonl").write_text('{"text": "second"}\n\n{"text": "third"}\n')
    assert list(iter_input_documents([tmp_path / "d"])) == ["first document", "second", "third"]
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "ok"}\n{oops\n')
    with pytest.raises(DataBuildError, match=r"bad\.jsonl:2: invalid JSON"):
        list(iter_input_documents([bad]))
    bad.write_text('{"body": "x"}\n')
    with pytest.raises(DataBuildError, match=r"bad\.jsonl:1: expected an object with a string 'text' field"):
        list(iter_input_documents([bad]))
    with pytest.raises(DataBuildError, match="input not found"):
        list(iter_input_documents([tmp_path / "nope.txt"]))
    (tmp_path / "x.csv").write_text("a,b")
    with pytest.raises(DataBuildError, match="unsupported input type"):
        list(iter_input_documents([tmp_path / "x.csv"]))


def test_vocab_bounds(tmp_path):
    with pytest.raises(DataBuildError, match=r"vocab=100: must be in \[260, 65536\]"):
        build_dataset(_docs(10), out_root=tmp_path, name="t", vocab_size=100, val_docs=2)


def test_the_contests_first_documents_rule():
    docs = _docs(12)
    val, train, dropped = split_documents([docs[0], "", *docs[1:], "  ", docs[0], docs[5]], 3, "first")
    assert val == [docs[0], "", docs[1]]  # input order, as they are
    assert train == docs[2:]  # a blank, a later copy of a validation document and a repeat never train
    assert dropped == 3
    with pytest.raises(DataBuildError, match="leave training documents"):
        split_documents(docs[:3], 3, "first")
    with pytest.raises(DataBuildError, match="selection rule 'random'"):
        split_documents(docs, 3, "random")
