"""Text documents -> SentencePiece tokenizer + token shards + manifest (``pgolf data build``).

Layout (the contest's): ``<out>/tokenizers/<name>_<vocab>_bpe.model`` and
``<out>/datasets/<name>_sp<vocab>/fineweb_{val,train}_NNNNNN.bin`` with ``manifest.json`` beside the shards
(``fineweb_dev_NNNNNN.bin`` too with a dev split, in a folder whose name ends ``_dev<N>``).

Validation selection (fixed and documented in every manifest), by default ``hash``: documents are
deduplicated by exact text, ordered by the SHA-256 of their UTF-8 text, and the first ``val_docs``
of that order are the validation split. The order does not depend on input order, so adding files
elsewhere never moves a document between splits by position alone. ``first`` is the contest's rule
for its frozen, shuffled ``docs_selected.jsonl``: the first ``val_docs`` documents in input order
(50,000 reproduce its validation set), no training copy of any of them. The tokenizer is trained on
the training split only, so no validation text shapes anything that training produces.

A dev split (``dev_docs`` > 0, ``DEV_RULE``) is carved from the training documents after the
validation split is chosen: the first ``dev_docs`` of the training documents in the rule's order. It is
written like the validation split, never trains and never shapes the tokenizer, so settings can be
tuned on it and the validation set read only for final scores (issue 34).
"""

from __future__ import annotations

import hashlib
import io
import itertools
import json
import os
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pgolf.data.manifest import MANIFEST_FORMAT, MANIFEST_NAME
from pgolf.data.shards import write_shard
from pgolf.errors import DataBuildError
from pgolf.fileio import file_sha256, write_bytes_atomic, write_json_atomic
from pgolf.tools.data.align import Pieces, token_bytes
from pgolf.tools.data.caseops import CASEOPS_VERSION, OPERATORS, encode_with_bytes
from pgolf.tools.data.caseops import encode as caseops_encode
from pgolf.tools.progress import Progress, track
from pgolf.vocab import BOS_ID, EOS_ID, PAD_ID, UNK_ID

SELECTION_RULES = {
    "hash": (
        "documents deduplicated by exact text; ordered by sha256 of their UTF-8 text; "
        "the first val_docs documents of that order form the validation split, the rest train"
    ),
    "first": (
        "the first val_docs documents in input order form the validation split (the contest's "
        "rule for docs_selected.jsonl); the rest train, less exact duplicates of each other or of a "
        "validation document"
    ),
}
DEV_RULE = (
    "the first dev_docs training documents in the selection's order (by hash: the next after the "
    "validation split; first: the next in input order) form the dev split; they never train and the "
    "tokenizer never sees them"
)
# The contest tokenizer's trainer settings (seed-techniques §2.3).
SP_SETTINGS = {
    "model_type": "bpe",
    "byte_fallback": True,
    "split_digits": True,
    "normalization_rule_name": "nmt_nfkc",
    "add_dummy_prefix": False,
    "character_coverage": 0.999,
    "pad_id": PAD_ID,
    "bos_id": BOS_ID,
    "eos_id": EOS_ID,
    "unk_id": UNK_ID,
}
# CaseOps text must reach the tokenizer as it is, or the byte sidecar could not be aligned to it.
CASEOPS_SP_SETTINGS = {
    **SP_SETTINGS,
    "normalization_rule_name": "identity",
    "remove_extra_whitespaces": False,
}
SHARD_TOKENS = 100_000_000


@dataclass(frozen=True)
class BuiltDataset:
    dataset_dir: Path
    tokenizer_path: Path
    manifest: dict


def doc_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def iter_input_documents(inputs: Iterable[str | os.PathLike]) -> Iterator[str]:
    """Documents from files: ``.txt`` is one document per file; ``.jsonl`` is one JSON object per
    line with a string ``text`` field. Folders are walked (sorted) for both kinds."""
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            files = sorted(p for p in path.rglob("*") if p.suffix in (".txt", ".jsonl") and p.is_file())
            if not files:
                raise DataBuildError(f"{path}: folder has no .txt or .jsonl files")
            yield from iter_input_documents(files)
        elif not path.exists():
            raise DataBuildError(f"{path}: input not found")
        elif path.suffix == ".jsonl":
            yield from _jsonl_documents(path)
        elif path.suffix == ".txt":
            yield path.read_text(encoding="utf-8")
        else:
            raise DataBuildError(f"{path}: unsupported input type (expected .txt, .jsonl or a folder)")


def _jsonl_documents(path: Path) -> Iterator[str]:
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataBuildError(f"{path}:{lineno}: invalid JSON ({e.msg})") from None
            if not isinstance(obj, dict) or not isinstance(obj.get("text"), str):
                raise DataBuildError(f"{path}:{lineno}: expected an object with a string 'text' field")
            yield obj["text"]


def split_documents(
    docs: Iterable[str], val_docs: int, rule: str = "hash"
) -> tuple[list[str], list[str], int]:
    """Apply a selection rule (``SELECTION_RULES``); return (val, train, documents dropped)."""
    if rule not in SELECTION_RULES:
        raise DataBuildError(f"selection rule {rule!r}; expected one of {sorted(SELECTION_RULES)}")
    if val_docs < 1:
        raise DataBuildError(f"val_docs={val_docs} must be >= 1")
    unique: dict[str, str] = {}
    total, val = 0, []
    for d in docs:
        total += 1
        if rule == "first" and len(val) < val_docs:  # as they come, blank ones too (the contest's)
            val.append(d)
            unique.setdefault(doc_hash(d), "")  # a later copy of a validation document never trains
        elif d.strip():
            unique.setdefault(doc_hash(d), d)
    if rule == "first":
        train = [d for d in unique.values() if d]
        if len(val) < val_docs or not train:
            raise DataBuildError(
                f"val_docs={val_docs} must be >= 1 and leave training documents; have {len(val) + len(train)}"
            )
        return val, train, total - len(val) - len(train)
    ordered = [unique[h] for h in sorted(unique)]
    if val_docs < 1 or val_docs >= len(ordered):
        raise DataBuildError(
            f"val_docs={val_docs} must be >= 1 and leave training documents; have {len(ordered)} "
            "distinct non-empty documents"
        )
    return ordered[:val_docs], ordered[val_docs:], total - len(unique)


def carve_dev(train: list[str], dev_docs: int) -> tuple[list[str], list[str]]:
    """(dev, train): the first ``dev_docs`` training documents (in the selection's order) held out
    (``DEV_RULE``); none when ``dev_docs`` is 0."""
    if dev_docs < 0 or dev_docs >= len(train):
        raise DataBuildError(
            f"dev_docs={dev_docs} must be >= 0 and leave training documents; the validation split left "
            f"{len(train)} training documents"
        )
    return train[:dev_docs], train[dev_docs:]


def _sentences(docs: list[str], max_bytes: int) -> Iterator[str]:
    # SentencePiece skips "sentences" longer than max_sentence_length, so feed lines.
    for d in docs:
        for line in d.split("\n"):
            line = line.strip()
            if line and len(line.encode()) <= max_bytes:
                yield line


def train_tokenizer(
    train_docs: list[str],
    vocab_size: int,
    path: Path,
    user_symbols: tuple[str, ...] = (),
    settings: dict = SP_SETTINGS,
) -> None:
    """A BPE (the contest's settings by default); ``user_symbols`` become atomic pieces (CaseOps'
    operators)."""
    import sentencepiece as spm

    max_bytes = 16_384
    model = io.BytesIO()
    try:
        spm.SentencePieceTrainer.train(
            sentence_iterator=_sentences(train_docs, max_bytes),
            model_writer=model,
            vocab_size=vocab_size,
            max_sentence_length=max_bytes,
            num_threads=os.cpu_count() or 1,
            minloglevel=2,
            **settings,
            **({"user_defined_symbols": list(user_symbols)} if user_symbols else {}),
        )
    except RuntimeError as e:
        raise DataBuildError(f"SentencePiece could not train a {vocab_size}-piece BPE: {e}") from None
    write_bytes_atomic(path, model.getvalue())


def _write_split(
    docs: list[str],
    texts: list[str],
    sp,
    folder: Path,
    split: str,
    shard_tokens: int,
    char_bytes: list[list[int]] | None = None,
) -> dict:
    """Shards of ``texts`` (the documents ``docs`` as the tokenizer reads them: CaseOps-encoded or
    the same); with ``char_bytes`` (each text character's original bytes), the byte sidecar too."""
    ids = sp.encode(texts, out_type=int, num_threads=os.cpu_count() or 1)
    stream = _prefixed(ids, BOS_ID)
    out = {
        "docs": len(docs),
        "tokens": len(stream),
        "utf8_bytes": sum(len(d.encode()) for d in docs),
        "shards": _write_shards(stream, folder, f"fineweb_{split}", shard_tokens),
        "doc_sha256": [doc_hash(d) for d in docs],
    }
    if char_bytes is not None:
        pieces = Pieces(sp)
        per_doc = zip(ids, texts, char_bytes, strict=True)
        nbytes = _prefixed([token_bytes(pieces, *doc) for doc in per_doc], 0)  # BOS stands for no byte
        if int(nbytes.sum()) != out["utf8_bytes"]:  # impossible by construction; checked
            raise DataBuildError(f"sidecar sums to {int(nbytes.sum())}, the documents to {out['utf8_bytes']}")
        out["byte_sidecar"] = {
            "shards": _write_shards(nbytes, folder, f"fineweb_{split}_bytes", shard_tokens),
            "bytes": int(nbytes.sum()),
        }
    return out


def _prefixed(per_doc, first: int) -> np.ndarray:
    """One uint16 stream: ``first``, then each document's values, document after document."""
    n = sum(len(d) + 1 for d in per_doc)
    return np.fromiter((t for doc in per_doc for t in (first, *doc)), dtype=np.uint16, count=n)


def _write_shards(stream: np.ndarray, folder: Path, stem: str, shard_tokens: int) -> list[dict]:
    shards = []
    for i, start in enumerate(range(0, len(stream), shard_tokens)):
        path = folder / f"{stem}_{i:06d}.bin"
        write_shard(path, stream[start : start + shard_tokens])
        shards.append({"file": path.name, "tokens": int(min(shard_tokens, len(stream) - start))})
        shards[-1]["sha256"] = file_sha256(path)
    return shards


def build_dataset(
    docs: Iterable[str],
    *,
    out_root: str | os.PathLike,
    name: str,
    vocab_size: int,
    val_docs: int,
    source: dict | None = None,
    shard_tokens: int = SHARD_TOKENS,
    caseops: bool = False,
    selection: str = "hash",
    dev_docs: int = 0,
) -> BuiltDataset:
    """Build tokenizer, shards and manifest under ``out_root``; returns their paths. With ``caseops``
    the documents are case-factored (``data.caseops``) before tokenisation and the held-out splits
    get byte sidecars; the split itself is chosen on the original text, so it is the same. With
    ``dev_docs`` a dev split is carved from the training documents (``carve_dev``)."""
    import sentencepiece as spm

    if vocab_size < 260 or vocab_size > 65_536:
        raise DataBuildError(f"vocab={vocab_size}: must be in [260, 65536] (256 byte pieces + 4 specials)")
    out_root = Path(out_root)
    started = time.time()
    docs = track(docs, "data: reading documents", unit="doc")
    val, train, dropped = split_documents(docs, val_docs, selection)
    dev, train = carve_dev(train, dev_docs)
    dataset, tokenizer = layout(name, vocab_size, dataset_tag(caseops, dev_docs))
    folder = out_root / dataset
    old = folder / MANIFEST_NAME
    if old.is_file() and json.loads(old.read_text()).get("source", {}).get("repo"):
        raise DataBuildError(
            f"{folder} holds a downloaded export ({old}); building here would replace its shards and leave "
            "its tokenizer beside them: choose another --name"
        )
    tok_path = out_root / tokenizer
    settings = CASEOPS_SP_SETTINGS if caseops else SP_SETTINGS
    held_out = {"val": val, **({"dev": dev} if dev else {})}
    with Progress("data", total=2 + len(held_out), unit="stage") as progress:
        train_texts = [caseops_encode(d) for d in train] if caseops else train  # encoded once, used twice
        progress.stage(f"training a {vocab_size}-piece tokenizer")
        train_tokenizer(train_texts, vocab_size, tok_path, OPERATORS if caseops else (), settings)
        sp = spm.SentencePieceProcessor(model_file=str(tok_path))
        folder.mkdir(parents=True, exist_ok=True)
        old.unlink(missing_ok=True)  # a build that dies part-way leaves no manifest naming new shards
        for stale in list(folder.glob("fineweb_*.bin")):
            stale.unlink()
        splits = {}
        for k, d in held_out.items():
            progress.stage(f"encoding {len(d):,} {'validation' if k == 'val' else k} documents")
            splits[k] = _write_held_out(d, sp, folder, k, shard_tokens, caseops)
        progress.stage(f"encoding {len(train):,} training documents")
        splits["train"] = _write_split(train, train_texts, sp, folder, "train", shard_tokens)
    manifest = {
        "format": MANIFEST_FORMAT,
        "name": folder.name,
        "source": source or {},
        "selection": SELECTION_RULES[selection],
        "val_docs": val_docs,
        **({"dev_docs": dev_docs, "dev_selection": DEV_RULE} if dev else {}),
        "duplicates_dropped": dropped,
        "bos_id": BOS_ID,
        "tokenizer": {
            "path": str(tok_path.relative_to(out_root)),
            "sha256": file_sha256(tok_path),
            "vocab_size": sp.vocab_size(),
            "settings": settings,
        },
        **({"caseops": {"version": CASEOPS_VERSION, "operators": list(OPERATORS)}} if caseops else {}),
        "splits": splits,
        "build_seconds": round(time.time() - started, 2),
    }
    hashes = {k: set(v["doc_sha256"]) for k, v in manifest["splits"].items()}
    for a, b in itertools.combinations(hashes, 2):  # impossible by construction; checked so a future
        if hashes[a] & hashes[b]:  # change cannot break it silently
            raise DataBuildError(f"{a}/{b} overlap of {len(hashes[a] & hashes[b])} documents")
    write_json_atomic(folder / MANIFEST_NAME, manifest)
    return BuiltDataset(folder, tok_path, manifest)


def _write_held_out(docs: list[str], sp, folder: Path, split: str, shard_tokens: int, caseops: bool) -> dict:
    """A held-out split's shards (validation, dev); CaseOps ones with their byte sidecars."""
    if not caseops:
        return _write_split(docs, docs, sp, folder, split, shard_tokens)
    encoded = [encode_with_bytes(d) for d in docs]  # each character's original bytes, for the sidecar
    texts, char_bytes = [t for t, _ in encoded], [b for _, b in encoded]
    return _write_split(docs, texts, sp, folder, split, shard_tokens, char_bytes)


def dataset_tag(caseops: bool, dev_docs: int) -> str:
    """The suffix of a build's folder and tokenizer: ``_caseops``, then ``_dev<N>`` with a dev split
    (its training documents, hence its tokenizer, differ from the build without one)."""
    return ("_caseops" if caseops else "") + (f"_dev{dev_docs}" if dev_docs else "")


def layout(name: str, vocab_size: int, tag: str = "") -> tuple[str, str]:
    """Where a build named ``name`` puts its shards and its tokenizer, relative to the data root, in the
    contest's naming (``fineweb10B`` at 1,024 pieces: ``datasets/fineweb10B_sp1024``)."""
    return f"datasets/{name}_sp{vocab_size}{tag}", f"tokenizers/{name}_{vocab_size}{tag}_bpe.model"
