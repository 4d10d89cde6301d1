"""Compressors of the artifact body, by name, with bounded decompression: a corrupt or hostile
payload cannot make the loader allocate more than ``MAX_BODY_BYTES``."""

from __future__ import annotations

import zlib
from collections.abc import Callable
from dataclasses import dataclass

from pgolf.errors import ArtifactError

MAX_BODY_BYTES = 1 << 30
"""Largest decompressed body accepted (1 GiB: a 16 MB artifact of int8 codes inflates to ~40 MB)."""


@dataclass(frozen=True)
class Codec:
    name: str
    compress: Callable[[bytes, int], bytes]
    decompress: Callable[[bytes, int], bytes]
    """(data, limit) -> bytes; raises ArtifactError past ``limit`` bytes or on a corrupt stream."""


def _zlib_decompress(data: bytes, limit: int) -> bytes:
    d = zlib.decompressobj()
    try:
        out = d.decompress(data, limit)
    except zlib.error as e:
        raise ArtifactError(f"corrupt zlib stream ({e})") from None
    if d.unconsumed_tail:
        raise ArtifactError(f"decompressed body exceeds {limit} bytes")
    if not d.eof:
        raise ArtifactError("zlib stream is truncated")
    return out


CODECS: dict[str, Codec] = {
    "zlib": Codec("zlib", lambda data, level: zlib.compress(data, level), _zlib_decompress),
}


def get_codec(name: str) -> Codec:
    if name not in CODECS:
        raise ArtifactError(f"unknown codec {name!r}; this pgolf reads {sorted(CODECS)}")
    return CODECS[name]
