"""The evaluation's schema."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from pgolf.config.base import non_negative, positive


@dataclass(frozen=True, kw_only=True)
class EvalConfig:
    SECTION: ClassVar[str] = "eval"

    batch_tokens: int = 524_288
    """Validation tokens per forward batch, summed over ranks."""
    seq_len: int = 0
    """Evaluation window length (0: the training sequence length)."""

    def __post_init__(self) -> None:
        positive(self, "batch_tokens")
        non_negative(self, "seq_len")
