"""Byte tables of a SentencePiece tokenizer: how many UTF-8 bytes each scored token stands for
(seed-techniques §3), the denominator of val_bpb.

For target y_t whose preceding (input) token is p_t:
    bytes_t = base_bytes[y_t] + [has_leading_space[y_t] and not is_boundary[p_t]]
Control, unknown and unused pieces (BOS, EOS, PAD) are 0 bytes and are boundaries; byte-fallback
pieces ``<0xNN>`` are 1 byte; any other piece is the UTF-8 length of its text after stripping one
leading "▁" (U+2581), which instead becomes a space byte unless the previous token is a boundary.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

LEADING_SPACE = "\u2581"


@dataclass(frozen=True)
class ByteLUT:
    base_bytes: torch.Tensor  # (V,) int16
    has_leading_space: torch.Tensor  # (V,) bool
    is_boundary: torch.Tensor  # (V,) bool

    def to(self, device: torch.device | str) -> ByteLUT:
        return ByteLUT(*(t.to(device) for t in (self.base_bytes, self.has_leading_space, self.is_boundary)))

    def target_bytes(self, prev: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Bytes of each target given the token before it; same shape as ``target``, int32."""
        extra = self.has_leading_space[target] & ~self.is_boundary[prev]
        return self.base_bytes[target].to(torch.int32) + extra.to(torch.int32)

    def stream_bytes(self, tokens: torch.Tensor) -> torch.Tensor:
        """(N,) int32: the bytes of the target at each position of a stream (0 at position 0, which
        is never a target)."""
        out = torch.zeros(tokens.numel(), dtype=torch.int32)
        out[1:] = self.target_bytes(tokens[:-1], tokens[1:])
        return out


def build_byte_lut(sp, vocab_size: int = 0) -> ByteLUT:
    """Tables for a SentencePiece processor, sized max(sp vocab, ``vocab_size``); ids beyond the
    tokenizer keep the defaults (0 bytes, boundary)."""
    n = max(sp.vocab_size(), vocab_size)
    base = torch.zeros(n, dtype=torch.int16)
    space = torch.zeros(n, dtype=torch.bool)
    boundary = torch.ones(n, dtype=torch.bool)
    for i in range(sp.vocab_size()):
        if sp.is_control(i) or sp.is_unknown(i) or sp.is_unused(i):
            continue
        boundary[i] = False
        if sp.is_byte(i):
            base[i] = 1
            continue
        piece = sp.id_to_piece(i)
        if piece.startswith(LEADING_SPACE):
            space[i] = True
            piece = piece[1:]
        base[i] = len(piece.encode("utf-8"))
    return ByteLUT(base, space, boundary)
