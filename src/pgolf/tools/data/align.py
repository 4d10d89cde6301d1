"""Align a tokenisation to the text it was made from, character by character, to compute a byte
sidecar (``data.sidecar``) that never depends on the tokenizer's byte rules: a normal piece spells
its characters (``▁`` for a space), a byte piece one UTF-8 byte of the current character, a control
piece nothing. Any mismatch (a normaliser that changed the text, an unknown piece) is an error, not
a guess."""

from __future__ import annotations

import numpy as np

from pgolf.data.bytes import LEADING_SPACE
from pgolf.errors import DataBuildError


class Pieces:
    """What each id of a SentencePiece model spells: its text (spaces for ``▁``), or a byte."""

    def __init__(self, sp) -> None:
        n = sp.vocab_size()
        self.text: list[str | None] = [None] * n
        """What a normal piece spells ("" for control pieces; None for byte and unknown ones)."""
        self.byte: list[int | None] = [None] * n
        """The byte a byte-fallback piece ``<0xNN>`` stands for."""
        for i in range(n):
            if sp.is_control(i) or sp.is_unused(i):
                self.text[i] = ""
            elif sp.is_byte(i):
                self.byte[i] = int(sp.id_to_piece(i)[3:5], 16)
            elif not sp.is_unknown(i):
                self.text[i] = sp.id_to_piece(i).replace(LEADING_SPACE, " ")


def token_bytes(pieces: Pieces, ids: list[int], text: str, char_bytes: list[int]) -> np.ndarray:
    """Original bytes of each token of ``ids``, the tokenisation of ``text``, whose i-th character
    stands for ``char_bytes[i]`` original bytes. Raises DataBuildError unless the pieces spell
    ``text`` exactly."""
    out = np.zeros(len(ids), dtype=np.int64)
    spaced = text.replace(LEADING_SPACE, " ")  # a literal ▁ of the text is spelled like a space
    pos, pending = 0, b""
    for k, t in enumerate(ids):
        spelled = pieces.text[t] if t < len(pieces.text) else None
        if spelled is not None:
            if pending or spaced[pos : pos + len(spelled)] != spelled:
                _misaligned(text, pos, t)
            out[k] = sum(char_bytes[pos : pos + len(spelled)])
            pos += len(spelled)
            continue
        byte = pieces.byte[t] if t < len(pieces.byte) else None
        if byte is None or pos >= len(text):
            _misaligned(text, pos, t)
        pending += bytes([byte])
        want = text[pos].encode()
        if not want.startswith(pending):
            _misaligned(text, pos, t)
        # Every byte piece of a character counts one byte when the character stands for its own
        # bytes; otherwise its first byte piece carries the whole count.
        same = char_bytes[pos] == len(want)
        out[k] = 1 if same else (char_bytes[pos] if len(pending) == 1 else 0)
        if pending == want:
            pos, pending = pos + 1, b""
    if pos != len(text) or pending:
        _misaligned(text, pos, None)
    return out


def _misaligned(text: str, pos: int, token: int | None) -> None:
    where = f"token {token}" if token is not None else "the end"
    raise DataBuildError(
        f"tokens do not spell the text at character {pos} ({text[pos : pos + 20]!r}, at {where}): the "
        "tokenizer must keep text as it is (identity normalisation, no whitespace removal, byte fallback)"
    )
