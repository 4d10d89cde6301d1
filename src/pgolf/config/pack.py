"""The export's schema: which tensors are quantised, how, and the compressor (seed-techniques §9)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from pgolf.errors import ConfigError

COMPRESSORS = ("zlib",)


@dataclass(frozen=True, kw_only=True)
class ExportConfig:
    SECTION: ClassVar[str] = "export"

    compressor: str = "zlib"
    """Compressor of the artifact payload."""
    level: int = 9
    """Compression level."""
    keep_float_max_numel: int = 65_536
    """Float tensors with at most this many elements are stored unquantised (fp16, or fp32 for
    control tensors)."""
    clip_quantile: float = 0.9999984
    """Per-row quantile of |w| used as the int8 clip value (seed-techniques §9.1)."""

    def __post_init__(self) -> None:
        if self.compressor not in COMPRESSORS:
            raise ConfigError(f"export.compressor={self.compressor!r}; expected one of {COMPRESSORS}")
        if not 0.0 < self.clip_quantile <= 1.0:
            raise ConfigError(f"export.clip_quantile must be in (0, 1], got {self.clip_quantile}")
