"""The dataset manifest (written by ``pgolf data build``) and the guard that keeps validation data
out of training: no shard may be both a training and a validation shard, no training shard may be
a copy of a validation shard, and, where a manifest lists document hashes, no document may be in
both splits."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

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


def _fingerprint(path: Path) -> tuple[int, str]:
    """(size, sha256 of the first MiB): equal for a copy, cheap for 100 MB shards."""
    with open(path, "rb") as f:
        return path.stat().st_size, hashlib.sha256(f.read(_PREFIX_BYTES)).hexdigest()


def check_train_val_disjoint(train_files: list[Path], val_files: list[Path], dataset_dir: Path) -> None:
    """Raise DataError if any training data is validation data (by file, by content, by document)."""
    val = {p.resolve() for p in val_files}
    shared = sorted(str(p) for p in train_files if p.resolve() in val)
    if shared:
        raise DataError(
            f"{len(shared)} shard(s) match both data.train_pattern and data.val_pattern, e.g. {shared[0]}: "
            "training on validation data is not allowed"
        )
    val_prints = {_fingerprint(p): p for p in val_files}
    for p in train_files:
        twin = val_prints.get(_fingerprint(p))
        if twin is not None:
            raise DataError(
                f"training shard {p} has the same size and content prefix as validation shard {twin}"
            )
    if not (dataset_dir / MANIFEST_NAME).is_file():
        return
    manifest = load_manifest(dataset_dir)
    splits = manifest.get("splits", {})
    val_docs = set(splits.get("val", {}).get("doc_sha256", []))
    train_docs = set(splits.get("train", {}).get("doc_sha256", []))
    if val_docs & train_docs:
        raise DataError(
            f"{dataset_dir / MANIFEST_NAME}: {len(val_docs & train_docs)} document(s) are in both the train "
            "and the validation split"
        )
    val_names = {s["file"] for s in splits.get("val", {}).get("shards", [])}
    listed = sorted(p.name for p in train_files if p.name in val_names)
    if listed:
        raise DataError(f"{dataset_dir / MANIFEST_NAME} lists {listed[0]} as a validation shard")
