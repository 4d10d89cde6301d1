"""The contest's token shard format (seed-techniques §2.1).

A shard is a 1024-byte header of 256 little-endian int32 (``[0]`` magic 20240520, ``[1]`` version 1,
``[2]`` token count, the rest zero) followed by that many little-endian uint16 token ids.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from pgolf.errors import ShardError
from pgolf.fileio import atomic_file

MAGIC = 20240520
VERSION = 1
HEADER_INTS = 256
HEADER_BYTES = HEADER_INTS * 4
MAX_TOKENS = 2**31 - 1


def write_shard(path: str | os.PathLike, tokens: np.ndarray) -> None:
    """Write ``tokens`` (ids < 65536) as one shard, atomically (temp file + rename)."""
    path = Path(path)
    tokens = np.asarray(tokens)
    if tokens.ndim != 1:
        raise ShardError(f"{path}: tokens must be 1-D, got shape {tokens.shape}")
    if len(tokens) >= MAX_TOKENS:
        raise ShardError(f"{path}: {len(tokens)} tokens exceed the format limit of 2^31 - 1")
    if len(tokens) and (tokens.min() < 0 or tokens.max() >= 2**16):
        raise ShardError(f"{path}: token ids must be in [0, 65536), got [{tokens.min()}, {tokens.max()}]")
    header = np.zeros(HEADER_INTS, dtype="<i4")
    header[0], header[1], header[2] = MAGIC, VERSION, len(tokens)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(path) as f:
        f.write(header.tobytes())
        f.write(tokens.astype("<u2", copy=False).tobytes())


def read_header(path: str | os.PathLike) -> int:
    """Validate the header and the file size; return the token count."""
    path = Path(path)
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            raw = f.read(HEADER_BYTES)
    except FileNotFoundError:
        raise ShardError(f"{path}: shard file not found") from None
    if len(raw) < HEADER_BYTES:
        raise ShardError(f"{path}: truncated header ({len(raw)} of {HEADER_BYTES} bytes)")
    header = np.frombuffer(raw, dtype="<i4")
    if header[0] != MAGIC:
        raise ShardError(f"{path}: bad magic {header[0]} (expected {MAGIC}); not a token shard")
    if header[1] != VERSION:
        raise ShardError(f"{path}: unsupported shard version {header[1]} (expected {VERSION})")
    n = int(header[2])
    if n < 0:
        raise ShardError(f"{path}: negative token count {n} in header")
    expected = HEADER_BYTES + 2 * n
    if size != expected:
        what = "truncated" if size < expected else "has trailing bytes"
        raise ShardError(f"{path}: file {what}: {size} bytes, header says {n} tokens = {expected} bytes")
    return n


def read_shard(path: str | os.PathLike, *, mmap: bool = True) -> np.ndarray:
    """Return the shard's tokens as a uint16 array (memory-mapped by default)."""
    n = read_header(path)
    if mmap:
        if n == 0:
            return np.zeros(0, dtype="<u2")
        return np.memmap(path, dtype="<u2", mode="r", offset=HEADER_BYTES, shape=(n,))
    with open(path, "rb") as f:
        f.seek(HEADER_BYTES)
        data = np.frombuffer(f.read(2 * n), dtype="<u2")
    if len(data) != n:
        raise ShardError(f"{path}: short read ({len(data)} of {n} tokens)")
    return data


def find_shards(folder: str | os.PathLike, pattern: str) -> list[Path]:
    """Sorted shard paths matching ``pattern`` in ``folder``; errors if there are none."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ShardError(f"{folder}: data folder not found (expected shards matching {pattern!r})")
    files = sorted(folder.glob(pattern))
    if not files:
        raise ShardError(f"{folder}: no files match {pattern!r}")
    return files


def check_token_ids(tokens: np.ndarray, vocab_size: int, source: str) -> None:
    """Every id must index the model's embedding: the tokenizer and the model must agree."""
    if len(tokens) and int(tokens.max()) >= vocab_size:
        raise ShardError(
            f"{source}: token id {int(tokens.max())} >= model.vocab_size={vocab_size} "
            "(tokenizer and model vocabularies do not match)"
        )
