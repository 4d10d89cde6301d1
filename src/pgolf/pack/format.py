"""The artifact file: stored tensors plus a JSON meta, in compressed sections, no pickle. Imports
nothing of model, data or train: it knows bytes, dtypes and shapes, not what they mean
(``pack.meta`` does).

Layout (integers little-endian)::

    magic     8 bytes  b"PGOLFART"
    version   u16      2
    sha256    32 bytes digest of everything after it
    sections  u32 count, then per section:
              u8 len + name | u8 len + codec | u8 len + transform | u8 value width |
              u64 raw length | u64 stored length | stored bytes

Section 0 is the meta JSON; it lists every tensor (name, kind, format, original dtype, and for its
codes and scale: section, dtype, shape, offset and length in that section's raw bytes). Tensor
bytes are grouped into sections by storage format and part (e.g. ``int6.codes``, ``int6.scales``,
``fp16``), so each group gets the codec and transform that suit it: ``pack.compressor=auto`` tries
every codec (at its strongest level) and transform and keeps the smallest. Loading checks magic,
version, digest, every declared length (their sum is bounded before anything is decompressed),
offset and shape, and rebuilds tensors with numpy from raw bytes: nothing in the file is executed
or unpickled.
"""

from __future__ import annotations

import hashlib
import json
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from pgolf.errors import ArtifactError
from pgolf.fileio import write_bytes_atomic
from pgolf.pack.codec import CODECS, MAX_BODY_BYTES, TRANSFORMS, apply_transform, get_codec, undo_transform
from pgolf.quant.grid import KINDS, QTensor

MAGIC = b"PGOLFART"
VERSION = 2

_DTYPES = {
    "float32": (torch.float32, "<f4"),
    "float16": (torch.float16, "<f2"),
    "bfloat16": (torch.bfloat16, "<i2"),
    "int8": (torch.int8, "i1"),
    "int16": (torch.int16, "<i2"),
    "int32": (torch.int32, "<i4"),
    "int64": (torch.int64, "<i8"),
    "bool": (torch.bool, "?"),
}


@dataclass(frozen=True)
class PackSpec:
    compressor: str = "zlib"
    """A codec name, or ``auto`` (per section, the smallest result of every codec at its max level)."""
    level: int = 9
    transform: str = "none"
    """none, shuffle or auto (per section, whichever is smaller)."""


@dataclass(frozen=True)
class Section:
    name: str
    codec: str
    transform: str
    width: int
    raw_bytes: int
    stored_bytes: int


def pack_spec(cfg) -> PackSpec:
    """The PackSpec of a ``config.pack.PackConfig`` (duck-typed: this module imports no config)."""
    return PackSpec(cfg.compressor, cfg.level, cfg.transform)


def _dtype_name(dtype: torch.dtype) -> str:
    name = str(dtype).removeprefix("torch.")
    if name not in _DTYPES:
        raise ArtifactError(f"cannot store dtype {name}")
    return name


def _to_bytes(t: torch.Tensor) -> bytes:
    t = t.detach().cpu().contiguous()
    if t.dtype == torch.bfloat16:
        t = t.view(torch.int16)
    return t.numpy().astype(t.numpy().dtype.newbyteorder("<"), copy=False).tobytes()


def _from_bytes(buf: bytes, dtype_name: str, shape: list[int]) -> torch.Tensor:
    if dtype_name not in _DTYPES:
        raise ArtifactError(f"unknown tensor dtype {dtype_name!r}")
    torch_dtype, np_dtype = _DTYPES[dtype_name]
    t = torch.from_numpy(np.frombuffer(buf, dtype=np_dtype).copy())
    if torch_dtype == torch.bfloat16:
        t = t.view(torch.bfloat16)
    return t.reshape(shape)


def section_name(e: QTensor, part: str) -> str:
    """The section a stored tensor's ``data`` or ``scale`` goes to: e.g. ``int6.codes``,
    ``int6.scales.float16``, ``fp16.float16``. Tensors of one format and part compress together."""
    if part == "scale":
        return f"{e.fmt}.scales.{_dtype_name(e.scale.dtype)}"
    return f"{e.fmt}.codes" if e.kind != "raw" else f"{e.fmt}.{_dtype_name(e.data.dtype)}"


def _compress(raw: bytes, width: int, spec: PackSpec) -> tuple[str, str, bytes]:
    """(codec, transform, stored bytes): the smallest over the choices ``spec`` allows."""
    codecs = list(CODECS) if spec.compressor == "auto" else [spec.compressor]
    if width <= 1:  # shuffling 1-byte values is the identity
        transforms = ["none"]
    else:
        transforms = ["none", "shuffle"] if spec.transform == "auto" else [spec.transform]
    best: tuple[str, str, bytes] | None = None
    for name in codecs:
        codec = get_codec(name)
        level = codec.max_level if spec.compressor == "auto" else spec.level
        for transform in transforms:
            stored = codec.compress(apply_transform(transform, raw, width), level)
            if best is None or len(stored) < len(best[2]):
                best = (name, transform, stored)
    return best


def _pstr(s: str) -> bytes:
    b = s.encode("ascii")
    return struct.pack("<B", len(b)) + b


def encode(entries: dict[str, QTensor], meta: dict, spec: PackSpec = PackSpec()) -> bytes:
    """Serialise stored tensors and ``meta`` (JSON-able, without a ``tensors`` key) into bytes."""
    groups: dict[str, list[bytes]] = {}
    widths: dict[str, int] = {}
    sizes: dict[str, int] = {}

    def add(t: torch.Tensor, group: str) -> dict:
        raw = _to_bytes(t)
        index = list(groups).index(group) + 1 if group in groups else len(groups) + 1
        groups.setdefault(group, []).append(raw)
        widths[group] = t.element_size()
        rec = {
            "section": index,
            "dtype": _dtype_name(t.dtype),
            "shape": list(t.shape),
            "offset": sizes.get(group, 0),
            "nbytes": len(raw),
        }
        sizes[group] = sizes.get(group, 0) + len(raw)
        return rec

    records = []
    for name, e in entries.items():
        rec = {
            "name": name,
            "kind": e.kind,
            "fmt": e.fmt,
            "orig_dtype": _dtype_name(e.orig_dtype),
            "data": add(e.data, section_name(e, "data")),
        }
        if e.scale is not None:
            rec["scale"] = add(e.scale, section_name(e, "scale"))
        records.append(rec)
    meta_raw = json.dumps({**meta, "tensors": records}, sort_keys=True).encode()
    parts = [("meta", meta_raw, 1)] + [(g, b"".join(blobs), widths[g]) for g, blobs in groups.items()]
    body = [struct.pack("<I", len(parts))]
    for name, raw, width in parts:
        codec, transform, stored = _compress(raw, width, spec)
        body += [
            _pstr(name),
            _pstr(codec),
            _pstr(transform),
            struct.pack("<BQQ", width, len(raw), len(stored)),
            stored,
        ]
    body_bytes = b"".join(body)
    return MAGIC + struct.pack("<H", VERSION) + hashlib.sha256(body_bytes).digest() + body_bytes


class _Reader:
    def __init__(self, data: bytes, source: str) -> None:
        self.data, self.pos, self.source = data, 0, source

    def take(self, n: int) -> bytes:
        if n < 0 or self.pos + n > len(self.data):
            raise ArtifactError(f"{self.source}: truncated section table")
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    def pstr(self) -> str:
        return self.take(self.take(1)[0]).decode("ascii", "replace")


def read_sections(data: bytes, source: str = "artifact") -> list[tuple[Section, bytes]]:
    """Check the header and digest; return every section's header and stored bytes (not decompressed)."""
    if len(data) < len(MAGIC) + 34 or data[: len(MAGIC)] != MAGIC:
        raise ArtifactError(f"{source}: not a pgolf artifact (bad magic)")
    (version,) = struct.unpack_from("<H", data, len(MAGIC))
    if version != VERSION:
        raise ArtifactError(f"{source}: artifact version {version}, this pgolf reads {VERSION}")
    digest, body = data[len(MAGIC) + 2 : len(MAGIC) + 34], data[len(MAGIC) + 34 :]
    if hashlib.sha256(body).digest() != digest:
        raise ArtifactError(f"{source}: checksum mismatch (file corrupt or truncated)")
    r = _Reader(body, source)
    (count,) = struct.unpack("<I", r.take(4))
    out, declared = [], 0
    for _ in range(count):
        name, codec, transform = r.pstr(), r.pstr(), r.pstr()
        width, raw_len, stored_len = struct.unpack("<BQQ", r.take(17))
        declared += raw_len
        if declared > MAX_BODY_BYTES:
            raise ArtifactError(f"{source}: sections declare more than {MAX_BODY_BYTES} bytes")
        out.append((Section(name, codec, transform, width, raw_len, stored_len), r.take(stored_len)))
    if r.pos != len(body) or not out or out[0][0].name != "meta":
        raise ArtifactError(f"{source}: malformed section table")
    return out


def _inflate(section: Section, stored: bytes, source: str) -> bytes:
    if section.transform not in TRANSFORMS:
        raise ArtifactError(f"{source}: section {section.name}: unknown byte transform {section.transform!r}")
    try:
        raw = get_codec(section.codec).decompress(stored, section.raw_bytes)
    except ArtifactError as e:
        raise ArtifactError(f"{source}: section {section.name}: {e}") from None
    if len(raw) != section.raw_bytes:
        raise ArtifactError(
            f"{source}: section {section.name} holds {len(raw)} bytes, declares {section.raw_bytes}"
        )
    return undo_transform(section.transform, raw, section.width)


def _nat(value, what: str) -> int:
    if type(value) is not int or value < 0:
        raise ArtifactError(f"{what} must be a non-negative integer, got {value!r:.40}")
    return value


def _part(rec: dict, key: str, raws: list[bytes]) -> torch.Tensor:
    r = rec[key]
    index, start, size = (
        _nat(r[k], f"tensor {rec['name']} {key}.{k}") for k in ("section", "offset", "nbytes")
    )
    shape = r["shape"]
    if not isinstance(shape, list):
        raise ArtifactError(f"tensor {rec['name']} {key}.shape must be a list")
    shape = [_nat(d, f"tensor {rec['name']} {key}.shape") for d in shape]
    if not 1 <= index < len(raws) or start + size > len(raws[index]):
        raise ArtifactError(f"tensor {rec['name']} points outside its section")
    return _from_bytes(raws[index][start : start + size], r["dtype"], shape)


def _entry(rec: dict, raws: list[bytes]) -> tuple[str, QTensor]:
    if not isinstance(rec.get("name"), str) or not isinstance(rec.get("fmt"), str):
        raise ArtifactError(f"tensor record without a string name and format: {rec!r:.100}")
    tensors = {key: _part(rec, key, raws) for key in ("data", "scale") if key in rec}
    if rec["kind"] not in KINDS or (rec["kind"] != "raw") != ("scale" in tensors):
        raise ArtifactError(f"tensor {rec['name']}: bad kind {rec['kind']!r} for its stored parts")
    if rec["orig_dtype"] not in _DTYPES:
        raise ArtifactError(f"tensor {rec['name']} has unknown dtype {rec['orig_dtype']!r}")
    orig = _DTYPES[rec["orig_dtype"]][0]
    return rec["name"], QTensor(rec["kind"], tensors["data"], orig, tensors.get("scale"), rec["fmt"])


def decode(data: bytes, source: str = "artifact") -> tuple[dict[str, QTensor], dict]:
    """Parse artifact bytes; every structural problem raises ArtifactError naming ``source``."""
    sections = read_sections(data, source)
    raws = [_inflate(s, stored, source) for s, stored in sections]
    try:
        meta = json.loads(raws[0])
    except (ValueError, RecursionError):  # JSONDecodeError, UnicodeDecodeError, ints over 4300 digits
        raise ArtifactError(f"{source}: metadata is not valid JSON") from None
    if not isinstance(meta, dict) or not isinstance(meta.get("tensors"), list):
        raise ArtifactError(f"{source}: metadata has no tensor list")
    entries = {}
    for rec in meta.pop("tensors"):
        try:
            name, entry = _entry(rec, raws)
        except ArtifactError as e:
            raise ArtifactError(f"{source}: {e}") from None
        except (KeyError, TypeError, ValueError, RuntimeError, OverflowError, AttributeError) as e:
            raise ArtifactError(
                f"{source}: malformed tensor record {rec!r:.200} ({type(e).__name__}: {e})"
            ) from None
        if name in entries:
            raise ArtifactError(f"{source}: tensor {name} is stored twice")
        entries[name] = entry
    return entries, meta


def write_artifact(path: str | Path, entries: dict[str, QTensor], meta: dict, spec: PackSpec) -> int:
    """Write atomically; return the file size in bytes."""
    data = encode(entries, meta, spec)
    write_bytes_atomic(path, data)
    return len(data)


def read_artifact(path: str | Path) -> tuple[dict[str, QTensor], dict]:
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ArtifactError(f"{path}: artifact not found") from None
    return decode(data, str(path))
