"""The dataset manifest (written by ``pgolf data build``) and the guard that keeps validation data
out of training: no shard may be both a training and a validation shard, no training shard may be
a copy of a validation shard, and, where a manifest lists document hashes, no document may be in
both splits."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from pgolf.data.shards import HEADER_BYTES
from pgolf.errors import DataError

MANIFEST_FORMAT = "pgolf-dataset-v1"
MANIFEST_NAME = "manifest.json"
_PREFIX_BYTES = 1 << 20


def load_manifest(dataset_dir: str | os.PathLike) -> dict:
    path = Path(dataset_dir) / MANIFEST_NAME
    try:
        manifest = json.loads(path.read_text())
    except FileNotFoundError:
        raise DataError(f"{path}: manifest not found") from None
    except json.JSONDecodeError as e:
        raise DataError(f"{path}: invalid JSON ({e.msg})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != MANIFEST_FORMAT:
        got = manifest.get("format") if isinstance(manifest, dict) else None
        raise DataError(f"{path}: format {got!r}, expected {MANIFEST_FORMAT!r}")
    return manifest


def _payload_digest(path: Path, limit: int | None) -> tuple[int, str]:
    """(payload bytes, sha256 of the first ``limit`` payload bytes, or all of them): the 1 KiB header
    is skipped, so a copy with an edited header still matches."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        f.seek(HEADER_BYTES)
        left = limit
        while block := f.read(1 << 20 if left is None else min(1 << 20, left)):
            h.update(block)
            if left is not None:
                left -= len(block)
                if not left:
                    break
    return path.stat().st_size - HEADER_BYTES, h.hexdigest()


def check_train_val_disjoint(train_files: list[Path], val_files: list[Path], dataset_dir: Path) -> None:
    """Raise DataError if training data is validation data: the same file, a copy of a validation
    shard's tokens (size and a prefix digest, confirmed by a digest of the whole payload), or, where
    the dataset's manifest lists document hashes, a document in both splits. A validation shard
    re-cut into differently sized training shards is caught only by the manifest's document check."""
    val = {p.resolve() for p in val_files}
    shared = sorted(str(p) for p in train_files if p.resolve() in val)
    if shared:
        raise DataError(
            f"{len(shared)} shard(s) match both data.train_pattern and data.val_pattern, e.g. {shared[0]}: "
            "training on validation data is not allowed"
        )
    val_prints = {_payload_digest(p, _PREFIX_BYTES): p for p in val_files}
    for p in train_files:
        twin = val_prints.get(_payload_digest(p, _PREFIX_BYTES))
        if twin is not None and _payload_digest(p, None) == _payload_digest(twin, None):
            raise DataError(f"training shard {p} holds the same tokens as validation shard {twin}")
    if (dataset_dir / MANIFEST_NAME).is_file():
        _check_manifest_splits(dataset_dir, train_files)


def _check_manifest_splits(dataset_dir: Path, train_files: list[Path]) -> None:
    path = dataset_dir / MANIFEST_NAME
    splits = load_manifest(dataset_dir).get("splits", {})
    try:
        val_docs = set(splits.get("val", {}).get("doc_sha256", []))
        train_docs = set(splits.get("train", {}).get("doc_sha256", []))
        val_names = {s["file"] for s in splits.get("val", {}).get("shards", [])}
    except (AttributeError, TypeError, KeyError) as e:
        raise DataError(f"{path}: malformed splits ({type(e).__name__}: {e})") from None
    if val_docs & train_docs:
        raise DataError(
            f"{path}: {len(val_docs & train_docs)} document(s) are in both the train and the validation split"
        )
    listed = sorted(p.name for p in train_files if p.name in val_names)
    if listed:
        raise DataError(f"{path} lists {listed[0]} as a validation shard")
