"""The validation set, in one place: the token stream (every document, BOS included, untrimmed:
which windows score which targets is the evaluation's business), the bytes each target stands for,
the tokenizer checked against the model's vocabulary, and the digest that identifies the stream.

The bytes come from the dataset's per-token byte sidecars (``data.sidecar``) when it has them (a
CaseOps dataset must), else from the tokenizer's byte tables (``data.bytes``, the contest's rule).
Where the dataset folder holds a pgolf manifest, the shards' token counts are checked against it
(a truncated or re-cut validation shard fails here, not as a silently different score).

With ``data.score_split`` ``dev`` the same is read from the dataset's dev split (``DEV_PATTERN``, listed
in its manifest) instead: the set is then labelled ``dev`` and every score of it is a dev score.
"""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from pgolf.config.data import DataConfig
from pgolf.data.bytes import ByteLUT, build_byte_lut
from pgolf.data.manifest import MANIFEST_NAME, check_train_val_disjoint, load_manifest
from pgolf.data.paths import load_tokenizer, resolve_data
from pgolf.data.shards import check_token_ids, find_shards, read_shard
from pgolf.data.sidecar import OPERATORS, check_sidecar, is_sidecar, sidecar_name
from pgolf.errors import DataError
from pgolf.fileio import file_sha256
from pgolf.vocab import BOS_ID

DEV_PATTERN = "fineweb_dev_*.bin"
"""The dev split's shards (``pgolf data build --dev-docs``)."""


@dataclass(frozen=True)
class ValidationSet:
    tokens: torch.Tensor
    """(N,) int64: the concatenated validation shards."""
    target_bytes: torch.Tensor
    """(N,) int32: the bytes of the target at each position (0 at position 0, BOS and operators)."""
    lut: ByteLUT
    files: list[Path]
    tokenizer_path: Path
    tokenizer_sha256: str
    tokenizer_vocab_size: int
    sha256: str
    """sha256 of the stream as little-endian uint16 (the shards' payloads, concatenated), followed by
    the sidecars' payloads when there are sidecars."""
    sidecars: tuple[Path, ...] = ()
    subset: tuple[int, int] | None = None
    """(n, m) when this is the first n of the set's m documents (``first_docs``)."""
    split: str = "val"
    """``val``, or ``dev`` (``data.score_split``): what every score of this set is a score of."""
    unlisted: tuple[str, ...] = ()
    """Scored shards the dataset's manifest does not list for ``split``: then not the dataset's set
    (``pgolf eval`` of other data; never official)."""

    @property
    def bytes_source(self) -> str:
        return "sidecar" if self.sidecars else "tokenizer"

    def first_docs(self, n: int) -> ValidationSet:
        """The stream cut before the (n+1)-th document's BOS (all of it when n is 0 or covers every
        document): an unofficial subset for local iteration (``eval.val_docs``). The digest stays
        the whole set's, which is what an artifact records."""
        if not n:
            return self
        starts = torch.nonzero(self.tokens == BOS_ID).flatten()
        if n >= len(starts):
            return self
        cut = int(starts[n])
        return dataclasses.replace(
            self, tokens=self.tokens[:cut], target_bytes=self.target_bytes[:cut], subset=(n, len(starts))
        )

    def describe(self) -> str:
        kind = "validation" if self.split == "val" else "dev"
        return f"first {self.subset[0]} of {self.subset[1]} {kind} documents" if self.subset else ""


def load_validation(data: DataConfig, vocab_size: int) -> ValidationSet:
    paths, split = resolve_data(data), data.score_split
    manifest = _manifest(paths.dataset_dir)
    if split == "dev" and "dev" not in (manifest or {}).get("splits", {}):
        raise DataError(f"{paths.dataset_dir}: no dev split (pgolf data build --dev-docs N)")
    sp = load_tokenizer(paths.tokenizer, vocab_size)
    pattern = data.val_pattern if split == "val" else DEV_PATTERN
    files = [f for f in find_shards(paths.dataset_dir, pattern) if not is_sidecar(f)]
    if not files:
        raise DataError(f"{paths.dataset_dir}: {pattern!r} matches only byte sidecars")
    if split == "val" and any(f.match(DEV_PATTERN) for f in files):  # a dev score is never a validation one
        raise DataError(f"{pattern!r} matches dev shards: score them with data.score_split=dev")
    parts = [np.asarray(read_shard(f)) for f in files]
    tokens = np.concatenate(parts)
    check_token_ids(tokens, vocab_size, f"{split} data {[str(f) for f in files]}")
    unlisted = _check_manifest(manifest, paths.dataset_dir, files, parts, paths.tokenizer, split)
    sidecars = _sidecars(files, manifest, has_operators(sp))
    lut = build_byte_lut(sp, vocab_size)
    digest = hashlib.sha256(tokens.astype("<u2", copy=False).tobytes())
    if sidecars:
        nbytes = np.concatenate([np.asarray(read_shard(f)) for f in sidecars]).astype(np.int32)
        check_sidecar(tokens, nbytes, BOS_ID, f"{paths.dataset_dir}")
        digest.update(nbytes.astype("<u2").tobytes())
        target_bytes = torch.from_numpy(nbytes)
        target_bytes[0] = 0
    else:
        target_bytes = lut.stream_bytes(torch.from_numpy(tokens.astype(np.int64)))
    return ValidationSet(
        tokens=torch.from_numpy(tokens.astype(np.int64)),
        target_bytes=target_bytes,
        lut=lut,
        files=files,
        tokenizer_path=paths.tokenizer,
        tokenizer_sha256=file_sha256(paths.tokenizer),
        tokenizer_vocab_size=sp.vocab_size(),
        sha256=digest.hexdigest(),
        sidecars=tuple(sidecars),
        split=split,
        unlisted=unlisted,
    )


def train_files(data: DataConfig, valset: ValidationSet) -> list[Path]:
    """The training shards of ``data``, none shared with or copied from ``valset``'s (the manifest's
    checks, ``check_train_val_disjoint``): what training and a GPTQ re-pack read."""
    dataset = resolve_data(data).dataset_dir
    files = find_shards(dataset, data.train_pattern)
    if held := [f.name for f in files if f.match(DEV_PATTERN) or is_sidecar(f)]:  # manifest or not
        raise DataError(f"data.train_pattern matches {held[0]}, a dev shard or a byte sidecar: not training")
    check_train_val_disjoint(files, valset.files, dataset)
    return files


def _manifest(folder: Path) -> dict | None:
    return load_manifest(folder) if (folder / MANIFEST_NAME).is_file() else None


def _check_manifest(
    manifest: dict | None,
    folder: Path,
    files: list[Path],
    parts: list[np.ndarray],
    tokenizer: Path,
    split: str,
) -> tuple[str, ...]:
    """Every shard the manifest lists for ``split`` is here and holds the token count it lists, and the
    tokenizer is the manifest's (another one's byte tables would count other bytes). Returns the scored
    shards it does not list for ``split`` (none without a manifest, or with one listing no shards)."""
    if manifest is None:
        return ()
    if manifest.get("complete") is False:
        raise DataError(f"{folder}: its download did not finish; rerun pgolf data fineweb to complete it")
    held = manifest.get("splits", {}).get(split, {})
    entries = [*held.get("shards", []), *held.get("byte_sidecar", {}).get("shards", [])]
    listed = {s["file"]: s["tokens"] for s in entries}
    for name in listed:
        if not (folder / name).is_file():
            raise DataError(f"{folder / name}: listed in its manifest but missing (a partial copy?)")
    for f, part in zip(files, parts, strict=True):
        if f.name in listed and listed[f.name] != len(part):
            raise DataError(
                f"{f}: {len(part)} tokens, its manifest says {listed[f.name]} (a truncated or rebuilt shard?)"
            )
    want = manifest.get("tokenizer", {}).get("sha256")
    if want and file_sha256(tokenizer) != want:
        raise DataError(
            f"{tokenizer} is not the tokenizer {folder / MANIFEST_NAME} was built with (sha256 differs): "
            "set data.tokenizer to the dataset's own"
        )
    return tuple(f.name for f in files if f.name not in listed) if "shards" in held else ()


def has_operators(sp) -> bool:
    """Whether the tokenizer has CaseOps' operators as user-defined pieces: its tokens cannot spell
    the text. SentencePiece numbers user-defined pieces before the byte pieces; a plain tokenizer
    whose corpus held the characters learns them as ordinary pieces, after the bytes."""
    ids = [sp.piece_to_id(op) for op in OPERATORS]
    first_byte = sp.piece_to_id("<0x00>")
    bytes_from = first_byte if sp.is_byte(first_byte) else sp.vocab_size()
    return all(i != sp.unk_id() for i in ids) and max(ids) < bytes_from


def _sidecars(files: list[Path], manifest: dict | None, operators: bool) -> list[Path]:
    """The byte sidecar of every validation shard, or none; a dataset whose manifest says it has
    sidecars (or is CaseOps), or whose tokenizer has CaseOps' operators, must have one for every
    shard."""
    paired = {f: f.with_name(name) if (name := sidecar_name(f.name)) else None for f in files}
    have = [p for p in paired.values() if p is not None and p.is_file()]
    must = operators or (
        manifest is not None
        and ("caseops" in manifest or "byte_sidecar" in manifest.get("splits", {}).get("val", {}))
    )
    if (have and len(have) != len(files)) or (must and not have):
        lone = next(f for f, p in paired.items() if p is None or not p.is_file())
        raise DataError(
            f"{lone}: its byte sidecar ({paired[lone] or 'fineweb_val_bytes_*.bin'}) is missing; scoring "
            "this dataset from the tokenizer's byte tables would count the wrong bytes (CaseOps operators)"
        )
    return have
