"""The packing schema: how the stored tensors are compressed into the artifact (seed-techniques §9.9,
sota-stack §2.5)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from pgolf.errors import ConfigError

COMPRESSORS = ("zlib", "zstd", "lzma", "brotli", "auto")
LEVELS = {"zlib": (0, 9), "zstd": (1, 22), "lzma": (0, 9), "brotli": (0, 11)}
"""Valid levels per codec (pack.codec's registry agrees; a test checks it)."""
TRANSFORMS = ("none", "shuffle", "auto")
CODE_FORMS = ("readable", "minified", "compressed")


@dataclass(frozen=True, kw_only=True)
class PackConfig:
    SECTION: ClassVar[str] = "pack"

    compressor: str = "zlib"
    """zlib, zstd, lzma, brotli, or auto: per tensor group, the codec that gives the fewest bytes."""
    level: int = 9
    """Compression level of a named compressor (auto uses each codec's strongest)."""
    transform: str = "none"
    """Byte transform before compression: none, shuffle (byte planes of multi-byte values), or auto
    (per group, whichever is smaller)."""
    code_form: str = "compressed"
    """Form of the bundled train_gpt.py whose bytes count: readable (the sources as they are),
    minified (python-minifier) or compressed (minified, lzma, base85, self-extracting)."""

    def __post_init__(self) -> None:
        if self.compressor not in COMPRESSORS:
            raise ConfigError(f"pack.compressor={self.compressor!r}; expected one of {COMPRESSORS}")
        low, high = LEVELS.get(self.compressor, (self.level, self.level))  # auto: each codec's strongest
        if not low <= self.level <= high:
            raise ConfigError(
                f"pack.level={self.level} is not a {self.compressor} level (expected {low}-{high})"
            )
        if self.transform not in TRANSFORMS:
            raise ConfigError(f"pack.transform={self.transform!r}; expected one of {TRANSFORMS}")
        if self.code_form not in CODE_FORMS:
            raise ConfigError(f"pack.code_form={self.code_form!r}; expected one of {CODE_FORMS}")
