"""The evaluation's schema."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from pgolf.config.base import non_negative, positive
from pgolf.errors import ConfigError


@dataclass(frozen=True, kw_only=True)
class EvalConfig:
    SECTION: ClassVar[str] = "eval"

    batch_tokens: int = 524_288
    """Validation tokens per forward batch, summed over ranks."""
    seq_len: int = 0
    """Evaluation window length (0: the training sequence length)."""
    method: str = "plain"
    """plain (the contest's non-overlapping windows; the tail is not scored), sliding (windows
    every eval.stride tokens, each scoring its last stride targets with the rest as context) or docs
    (sliding windows inside each document: context never crosses a BOS)."""
    stride: int = 64
    """Sliding and docs windows: tokens between window starts (1 to the window length)."""

    def __post_init__(self) -> None:
        positive(self, "batch_tokens", "stride")
        non_negative(self, "seq_len")
        if self.method not in ("plain", "sliding", "docs"):
            raise ConfigError(f"eval.method={self.method!r}; expected plain, sliding or docs")
        if self.method != "plain" and self.seq_len and self.stride > self.seq_len:
            raise ConfigError(f"eval.stride={self.stride} is longer than eval.seq_len={self.seq_len}")

    @property
    def tag(self) -> str:
        """The method in a score's label: empty for plain, e.g. ``sliding64``."""
        return "" if self.method == "plain" else f"{self.method}{self.stride}"
