"""The validation set, in one place: the token stream (every document, BOS included, untrimmed:
which windows score which targets is the evaluation's business), the tokenizer checked against
the model's vocabulary, its byte tables, and the digest that identifies the stream."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from pgolf.config.data import DataConfig
from pgolf.data.bytes import ByteLUT, build_byte_lut
from pgolf.data.paths import load_tokenizer, resolve_data
from pgolf.data.shards import check_token_ids, find_shards, read_shard
from pgolf.fileio import file_sha256


@dataclass(frozen=True)
class ValidationSet:
    tokens: torch.Tensor
    """(N,) int64: the concatenated validation shards."""
    lut: ByteLUT
    files: list[Path]
    tokenizer_path: Path
    tokenizer_sha256: str
    tokenizer_vocab_size: int
    sha256: str
    """sha256 of the stream as little-endian uint16 (the shards' payloads, concatenated)."""


def load_validation(data: DataConfig, vocab_size: int) -> ValidationSet:
    paths = resolve_data(data)
    sp = load_tokenizer(paths.tokenizer, vocab_size)
    files = find_shards(paths.dataset_dir, data.val_pattern)
    tokens = np.concatenate([np.asarray(read_shard(f)) for f in files])
    check_token_ids(tokens, vocab_size, f"validation data {[str(f) for f in files]}")
    return ValidationSet(
        tokens=torch.from_numpy(tokens.astype(np.int64)),
        lut=build_byte_lut(sp, vocab_size),
        files=files,
        tokenizer_path=paths.tokenizer,
        tokenizer_sha256=file_sha256(paths.tokenizer),
        tokenizer_vocab_size=sp.vocab_size(),
        sha256=hashlib.sha256(tokens.astype("<u2", copy=False).tobytes()).hexdigest(),
    )
