"""Per-token byte sidecars: how many bytes of the *original* text each validation token stands for
(sota-stack §2.1, §3.5). A dataset whose tokens do not spell its text (CaseOps inserts operators
and lowercases) is scored against the sidecar, not the tokenizer's byte tables.

A sidecar is a token shard (``data.shards`` format) named ``fineweb_val_bytes_NNNNNN.bin``, parallel
to ``fineweb_val_NNNNNN.bin``: one uint16 per token, 0 for BOS and for inserted operators; the sum
over a document is its original UTF-8 length. This is the community CaseOps export's layout; a dev
split's sidecars are ``fineweb_dev_bytes_NNNNNN.bin``.

``data.align`` computes a sidecar at build time; this module is what scoring needs.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pgolf.errors import DataError

SIDECAR_PREFIX = "fineweb_val_bytes_"
OPERATORS = ("\ue001", "\ue002", "\ue003", "\ue004")
"""CaseOps' operators TITLE, ALLCAPS, CAPNEXT, ESC (``data.caseops``): a tokenizer with these as pieces
cannot spell its text, so its datasets must have sidecars."""


def is_sidecar(path: Path) -> bool:
    return path.name.startswith((SIDECAR_PREFIX, "fineweb_dev_bytes_"))


def sidecar_name(token_shard: str) -> str | None:
    """``fineweb_val_000003.bin`` -> ``fineweb_val_bytes_000003.bin`` (a dev shard's likewise); None
    for other names."""
    for stem in ("fineweb_val_", "fineweb_dev_"):
        if token_shard.startswith(stem):
            return stem + "bytes_" + token_shard[len(stem) :]
    return None


def check_sidecar(tokens: np.ndarray, nbytes: np.ndarray, bos_id: int, source: str) -> None:
    """A sidecar parallel to ``tokens`` that gives BOS no bytes."""
    if len(nbytes) != len(tokens):
        raise DataError(f"{source}: byte sidecar has {len(nbytes)} entries for {len(tokens)} tokens")
    bad = np.flatnonzero((tokens == bos_id) & (nbytes != 0))
    if len(bad):
        at = int(bad[0])
        raise DataError(f"{source}: byte sidecar gives the BOS at position {at} {int(nbytes[at])} bytes")
