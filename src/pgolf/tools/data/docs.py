"""Validation documents looked for in the training tokens themselves (tooling: ``pgolf check``).

The manifest's guards (``data.manifest``) prove that the shards are the ones a build wrote; this
proves, on the tokens, with or without a manifest, that no validation document occurs in the
training shards: every document of both splits is hashed (BLAKE2b of its uint16 token bytes, BOS
included) and the validation hashes are looked up among the training ones. A document is a BOS and
the tokens up to the next BOS (``vocab.BOS_ID``, as ``eval.windows.doc_spans`` cuts them); shards
are read as one stream, so a document that crosses a shard boundary is whole.

Exact duplicates are what is found: a validation document with one token changed, cut in two, or
merged into a longer training document is not (near-duplicates would need MinHash or n-gram
overlap). Training documents may repeat among themselves; only their overlap with validation counts.
"""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pgolf.data.shards import read_shard
from pgolf.vocab import BOS_ID

MIN_DOC_TOKENS = 32
"""Validation documents with fewer tokens after their BOS are not compared. An empty document, a
single token or a one-line boilerplate text ("Page not found") can be in both splits without either
holding the other's text, and they score a negligible share of the set; 32 SP1024 tokens are about
100-140 bytes of text, past which an identical token sequence is a copied document. The rule
reports how many validation documents were too short to check."""
SHOW = 5
"""Documents named in a report, at most."""


def iter_docs(files: list[Path]) -> Iterator[np.ndarray]:
    """The documents of the shards ``files`` read in order as one stream: each a uint16 array
    starting with its BOS (the stream's first, if it does not start with a BOS, without one)."""
    carry = np.zeros(0, dtype=np.uint16)
    for f in files:
        tokens = np.asarray(read_shard(f))
        starts = np.flatnonzero(tokens == BOS_ID)
        if not len(starts):
            carry = np.concatenate([carry, tokens])
            continue
        head = np.concatenate([carry, tokens[: starts[0]]])
        if len(head):
            yield head
        for a, b in itertools.pairwise(starts.tolist()):
            yield tokens[a:b]
        carry = np.array(tokens[starts[-1] :])
    if len(carry):
        yield carry


def doc_hash(doc: np.ndarray) -> bytes:
    return hashlib.blake2b(doc.astype("<u2", copy=False).tobytes(), digest_size=16).digest()


@dataclass(frozen=True)
class Overlap:
    """Validation documents found in the training stream."""

    val_docs: int
    checked: int
    """Validation documents of at least ``min_tokens`` tokens: the ones looked for."""
    train_docs: int
    min_tokens: int
    found: list[tuple[int, list[int]]] = field(default_factory=list)
    """(index in the validation stream, first tokens) of each validation document found, in order."""
    kind: str = "validation"
    """What the held-out documents are: ``validation``, or ``dev`` (the dev split's)."""

    def describe(self) -> str:
        head = (
            f"{len(self.found)} of {self.checked} {self.kind} documents (of {self.val_docs}; "
            f"{self.val_docs - self.checked} under {self.min_tokens} tokens not compared) occur exactly "
            f"in the {self.train_docs:,} training documents"
        )
        short = "val" if self.kind == "validation" else self.kind
        shown = "; ".join(f"{short} doc {i} (tokens {first})" for i, first in self.found[:SHOW])
        more = f"; and {len(self.found) - SHOW} more" if len(self.found) > SHOW else ""
        return head + (f": {shown}{more}" if self.found else "")


def val_docs_in_train(
    train_files: list[Path], val_files: list[Path], min_tokens: int = MIN_DOC_TOKENS, kind: str = "validation"
) -> Overlap:
    """Hash every validation document of at least ``min_tokens`` tokens after its BOS, then every
    training document of a length some validation document has, and report the validation
    documents whose hash occurs in training. ``kind`` names what ``val_files`` hold (``dev``: the dev
    split's shards, looked for in the same way)."""
    wanted: dict[bytes, int] = {}
    lengths: set[int] = set()
    first: dict[int, list[int]] = {}
    n_val = 0
    for i, doc in enumerate(iter_docs(val_files)):
        n_val += 1
        if len(doc) - 1 >= min_tokens:
            wanted.setdefault(doc_hash(doc), i)
            lengths.add(len(doc))
            first[i] = [int(t) for t in doc[:8]]
    hits: set[int] = set()
    n_train = 0
    for doc in iter_docs(train_files):
        n_train += 1
        if len(doc) in lengths and (i := wanted.get(doc_hash(doc))) is not None:
            hits.add(i)
    found = [(i, first[i]) for i in sorted(hits)]
    return Overlap(n_val, len(first), n_train, min_tokens, found, kind)
