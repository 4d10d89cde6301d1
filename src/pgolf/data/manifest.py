"""The dataset manifest (written by ``pgolf data build`` and ``pgolf data fineweb``) and the guard
that keeps held-out data (validation, and the dev split where there is one) out of training: no shard
may be both a training and a held-out shard, no training shard may be a copy of a held-out shard, and,
where there is a manifest, every shard is one it lists, with the token count and sha256 it lists, and
no document is listed in two splits. (``pgolf check`` also looks for validation documents in the
training tokens themselves: ``data.docs``.)"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import os
from pathlib import Path

from pgolf.data.shards import HEADER_BYTES, read_header
from pgolf.errors import DataError
from pgolf.fileio import file_sha256, write_json_atomic

MANIFEST_FORMAT = "pgolf-dataset-v1"
MANIFEST_NAME = "manifest.json"
HASH_CACHE = ".sha256-cache.json"
"""Beside the manifest: file name -> [size, mtime_ns, sha256] of the shards hashed so far."""
_PREFIX_BYTES = 1 << 20
_SPLITS = (("val", "validation"), ("dev", "dev"))
"""The held-out splits a manifest may list, and what a message calls each."""


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
    """Raise DataError if training data is held-out data (``val_files``, and the validation and dev
    shards the manifest lists, whichever split is scored): the same file, a copy of a held-out shard's
    tokens (size and a prefix digest, confirmed by a digest of the whole payload), or, where the
    dataset has a manifest, a shard that is not the one it lists (``verify_shards``: held-out tokens
    prepended to a training shard change its count and hash) or a document in two of its splits."""
    manifest = (dataset_dir / MANIFEST_NAME).is_file()
    held = {p.resolve(): p for p in val_files}
    for name in _held_out(dataset_dir) if manifest else ():
        if (p := dataset_dir / name).is_file():
            held[p.resolve()] = p
    shared = sorted(str(p) for p in train_files if p.resolve() in held)
    if shared:
        raise DataError(
            f"{len(shared)} shard(s) match both data.train_pattern and data.val_pattern or the dev split, "
            f"e.g. {shared[0]}: training on held-out data is not allowed"
        )
    prints = {_payload_digest(p, _PREFIX_BYTES): p for p in held.values()}
    for p in train_files:
        twin = prints.get(_payload_digest(p, _PREFIX_BYTES))
        if twin is not None and _payload_digest(p, None) == _payload_digest(twin, None):
            raise DataError(f"training shard {p} holds the same tokens as held-out shard {twin}")
    if manifest:
        _check_manifest_splits(dataset_dir, train_files)
        verify_shards(dataset_dir, [*train_files, *held.values()])


def _held_out(dataset_dir: Path) -> dict[str, str]:
    """File name -> ``validation`` or ``dev``: the held-out token shards the manifest lists."""
    splits = load_manifest(dataset_dir).get("splits", {})
    try:
        return {e["file"]: k for s, k in _SPLITS for e in splits.get(s, {}).get("shards", [])}
    except (AttributeError, TypeError, KeyError) as e:
        where = dataset_dir / MANIFEST_NAME
        raise DataError(f"{where}: malformed splits ({type(e).__name__}: {e})") from None


def _listed(dataset_dir: Path) -> dict[str, dict]:
    """File name -> the manifest's entry (tokens, sha256) of every shard it lists, sidecars included."""
    splits = load_manifest(dataset_dir).get("splits", {})
    try:
        parts = [p for s in splits.values() for p in (s, s.get("byte_sidecar", {}))]
        return {e["file"]: e for p in parts for e in p.get("shards", [])}
    except (AttributeError, TypeError, KeyError) as e:
        raise DataError(
            f"{dataset_dir / MANIFEST_NAME}: malformed splits ({type(e).__name__}: {e})"
        ) from None


def _sha256(f: Path, cache: dict) -> str:
    key = [f.stat().st_size, f.stat().st_mtime_ns]
    if cache.get(f.name, [])[:2] != key:
        cache[f.name] = [*key, file_sha256(f)]
    return cache[f.name][2]


def verify_shards(dataset_dir: Path, files: list[Path]) -> None:
    """Raise DataError unless every shard of ``files`` is listed in the dataset's manifest with its
    token count (the header's, which the file size must match) and its sha256. A file's sha256 is
    computed once per (size, mtime) and kept in ``HASH_CACHE`` beside the manifest (FineWeb's training
    shards are 200 MB each); a read-only folder only costs the hashing again. The cache guards against
    accidents, as the manifest itself does, not against someone who edits both."""
    where, listed, path = dataset_dir / MANIFEST_NAME, _listed(dataset_dir), dataset_dir / HASH_CACHE
    try:
        cache = {k: v for k, v in json.loads(path.read_text()).items() if isinstance(v, list) and len(v) == 3}
    except (OSError, ValueError, AttributeError):
        cache = {}
    before = dict(cache)
    try:
        for f in files:
            want = listed.get(f.name)
            if want is None:
                raise DataError(f"{f}: not listed in {where} (added after the dataset was built?)")
            got = {"tokens": read_header(f), **({"sha256": _sha256(f, cache)} if "sha256" in want else {})}
            for key, value in got.items():
                if value != want.get(key):
                    raise DataError(
                        f"{f}: {key} {value}, but {where} lists {key} {want.get(key)} "
                        "(the shard changed after the manifest was written)"
                    )
    finally:
        if cache != before:
            with contextlib.suppress(OSError):
                write_json_atomic(path, cache)


def _check_manifest_splits(dataset_dir: Path, train_files: list[Path]) -> None:
    path = dataset_dir / MANIFEST_NAME
    splits = load_manifest(dataset_dir).get("splits", {})
    try:
        docs = {k: set(splits.get(s, {}).get("doc_sha256", [])) for s, k in (("train", "train"), *_SPLITS)}
    except (AttributeError, TypeError) as e:
        raise DataError(f"{path}: malformed splits ({type(e).__name__}: {e})") from None
    for a, b in itertools.combinations(docs, 2):
        if docs[a] & docs[b]:
            raise DataError(
                f"{path}: {len(docs[a] & docs[b])} document(s) are in both the {a} and the {b} split"
            )
    held = _held_out(dataset_dir)
    listed = sorted(p.name for p in train_files if p.name in held)
    if listed:
        raise DataError(f"{path} lists {listed[0]} as a {held[listed[0]]} shard")
    train, listed = {e.get("file") for e in splits.get("train", {}).get("shards", [])}, _listed(dataset_dir)
    if train and (other := sorted(p.name for p in train_files if p.name in listed and p.name not in train)):
        raise DataError(  # an unlisted file: verify_shards says so
            f"{path}: {other[0]} is not one of its training shards (data.train_pattern matches "
            f"{len(other)} such file(s), e.g. a held-out split's byte sidecar)"
        )
