"""Compressors and byte transforms of the artifact's sections, by name, with bounded decompression:
a corrupt or hostile payload cannot make the loader allocate more than the size its header declares
(itself bounded by ``MAX_BODY_BYTES``).

Codecs (seed-techniques §9.9, sota-stack §2.5): zlib (levels 0-9), zstd (1-22, long-distance
matching from level 20), lzma (0-9, extreme), brotli (0-11). Transform ``shuffle`` regroups the bytes
of fixed-size values by byte position (all low bytes, then all high bytes), which helps entropy
coders on fp16/fp32 data; on 1-byte codes it is the identity and is never chosen.
"""

from __future__ import annotations

import lzma
import zlib
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from pgolf.errors import ArtifactError

MAX_BODY_BYTES = 1 << 30
"""Largest decompressed artifact accepted (1 GiB: a 16 MB artifact of int8 codes inflates to ~40 MB)."""
LZMA_MEMLIMIT = 1 << 28
"""lzma decoder memory (256 MiB; preset 9 extreme needs ~65 MiB)."""


@dataclass(frozen=True)
class Codec:
    name: str
    max_level: int
    compress: Callable[[bytes, int], bytes]
    decompress: Callable[[bytes, int], bytes]
    """(data, limit) -> bytes; raises ArtifactError past ``limit`` bytes or on a corrupt stream."""


def _finish(codec: str, out: bytes, limit: int, *, complete: bool, trailing: bytes = b"") -> bytes:
    """The checks every bounded decompressor ends with: within the limit, at the end of its stream,
    nothing after it."""
    if len(out) > limit:
        raise ArtifactError(f"decompressed section exceeds {limit} bytes")
    if not complete:
        raise ArtifactError(f"{codec} stream is truncated")
    if trailing:
        raise ArtifactError(f"trailing bytes after the {codec} stream")
    return out


def _zlib_decompress(data: bytes, limit: int) -> bytes:
    d = zlib.decompressobj()
    try:  # limit + 1: zlib reads a max_length of 0 as "no limit"
        out = d.decompress(data, limit + 1)
    except zlib.error as e:
        raise ArtifactError(f"corrupt zlib stream ({e})") from None
    if d.unconsumed_tail:
        raise ArtifactError(f"decompressed section exceeds {limit} bytes")
    return _finish("zlib", out, limit, complete=d.eof, trailing=d.unused_data)


def _zstd_compress(data: bytes, level: int) -> bytes:
    import zstandard

    params = zstandard.ZstdCompressionParameters.from_level(level, enable_ldm=level >= 20)
    return zstandard.ZstdCompressor(compression_params=params).compress(data)


def _zstd_decompress(data: bytes, limit: int) -> bytes:
    import zstandard

    try:  # the frame header declares the size (we always write it): check it before allocating
        size = zstandard.frame_content_size(data)
        if size < 0:
            raise ArtifactError("zstd frame does not declare its size")
        if size > limit:
            raise ArtifactError(f"decompressed section exceeds {limit} bytes")
        d = zstandard.ZstdDecompressor(max_window_size=1 << 31).decompressobj()
        out = d.decompress(data)
    except zstandard.ZstdError as e:
        raise ArtifactError(f"corrupt zstd stream ({e})") from None
    return _finish("zstd", out, limit, complete=d.eof and len(out) == size, trailing=d.unused_data)


def _lzma_compress(data: bytes, level: int) -> bytes:
    return lzma.compress(data, preset=level | lzma.PRESET_EXTREME)


def _lzma_decompress(data: bytes, limit: int) -> bytes:
    # .xz only (what _lzma_compress writes), and a decoder memory limit: a header cannot make the
    # loader reserve a 4 GiB dictionary
    d = lzma.LZMADecompressor(format=lzma.FORMAT_XZ, memlimit=LZMA_MEMLIMIT)
    try:
        out = d.decompress(data, max_length=limit + 1)
    except lzma.LZMAError as e:
        raise ArtifactError(f"corrupt lzma stream ({e})") from None
    return _finish("lzma", out, limit, complete=d.eof, trailing=d.unused_data)


def _brotli_compress(data: bytes, level: int) -> bytes:
    import brotli

    return brotli.compress(data, quality=level)


def _brotli_decompress(data: bytes, limit: int) -> bytes:
    import brotli

    d = brotli.Decompressor()
    try:
        out = d.process(data, output_buffer_limit=limit + 1)
    except brotli.error as e:
        raise ArtifactError(f"corrupt brotli stream ({e})") from None
    return _finish("brotli", out, limit, complete=d.is_finished())


CODECS: dict[str, Codec] = {
    "zlib": Codec("zlib", 9, lambda data, level: zlib.compress(data, level), _zlib_decompress),
    "zstd": Codec("zstd", 22, _zstd_compress, _zstd_decompress),
    "lzma": Codec("lzma", 9, _lzma_compress, _lzma_decompress),
    "brotli": Codec("brotli", 11, _brotli_compress, _brotli_decompress),
}

TRANSFORMS = ("none", "shuffle")


def get_codec(name: str) -> Codec:
    if name not in CODECS:
        raise ArtifactError(f"unknown codec {name!r}; this pgolf reads {sorted(CODECS)}")
    return CODECS[name]


def shuffle(data: bytes, width: int) -> bytes:
    """Byte planes of ``width``-byte values: byte 0 of every value, then byte 1, ..."""
    if width <= 1 or len(data) % width:
        return data
    return np.frombuffer(data, np.uint8).reshape(-1, width).T.tobytes()


def unshuffle(data: bytes, width: int) -> bytes:
    if width <= 1 or len(data) % width:
        return data
    return np.frombuffer(data, np.uint8).reshape(width, -1).T.tobytes()


def apply_transform(name: str, data: bytes, width: int) -> bytes:
    return shuffle(data, width) if name == "shuffle" else data


def undo_transform(name: str, data: bytes, width: int) -> bytes:
    if name not in TRANSFORMS:
        raise ArtifactError(f"unknown byte transform {name!r}")
    return unshuffle(data, width) if name == "shuffle" else data
