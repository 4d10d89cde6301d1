"""The artifact file: quantised weights plus everything needed to rebuild the model, no pickle.

Layout (all integers little-endian)::

    magic      8 bytes   b"PGOLFART"
    version    u16       1
    codec      u8 length + ASCII name (e.g. "zlib")
    sha256     32 bytes  digest of the compressed body
    body       compressed: u32 meta length | meta JSON (UTF-8) | tensor bytes

The meta JSON lists each tensor (name, kind, stored dtype, shape, byte offset and length, original
dtype, and its scale tensor if quantised), the model config and the tokenizer hash. Loading checks
the magic, version, codec, digest, every offset and length, and rebuilds tensors with numpy from
raw bytes only: nothing in the file is ever executed or unpickled.

Counted bytes (the contest rule, seed-techniques §10): artifact file size + code bytes, where the
code is the source of the modules a run needs to train and evaluate (``COUNTED_MODULES``).
"""

from __future__ import annotations

import hashlib
import json
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from pgolf.fileio import write_bytes_atomic
from pgolf.quant import QTensor

MAGIC = b"PGOLFART"
VERSION = 1
MAX_BODY_BYTES = 1 << 32

COUNTED_MODULES = (
    "__init__.py",
    "config.py",
    "tracks.py",
    "presets.py",
    "fileio.py",
    "data/__init__.py",
    "data/shards.py",
    "data/loader.py",
    "data/paths.py",
    "metric.py",
    "model.py",
    "embed.py",
    "optim.py",
    "quant.py",
    "artifact.py",
    "evaluate.py",
    "averaging.py",
    "dist.py",
    "runlog.py",
    "train.py",
)
"""Package files a run needs to train, export and evaluate: their bytes count toward the cap."""
TOOLING_MODULES = (
    "__main__.py",
    "cli.py",
    "demo.py",
    "plot.py",
    "data/build.py",
    "data/demo.py",
    "data/fineweb.py",
)
"""Package files that only prepare data or present results; not counted."""

_DTYPES = {
    "float32": (torch.float32, "<f4"),
    "float16": (torch.float16, "<f2"),
    "bfloat16": (torch.bfloat16, None),
    "int8": (torch.int8, "i1"),
    "int16": (torch.int16, "<i2"),
    "int32": (torch.int32, "<i4"),
    "int64": (torch.int64, "<i8"),
    "bool": (torch.bool, "?"),
}


class ArtifactError(ValueError):
    """An artifact file is corrupt, truncated, of an unknown format, or over the cap."""


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
    if torch_dtype == torch.bfloat16:
        return torch.from_numpy(np.frombuffer(buf, dtype="<i2").copy()).view(torch.bfloat16).reshape(shape)
    return torch.from_numpy(np.frombuffer(buf, dtype=np_dtype).copy()).reshape(shape)


def _compress(codec: str, data: bytes, level: int) -> bytes:
    if codec == "zlib":
        return zlib.compress(data, level)
    raise ArtifactError(f"unknown codec {codec!r}")


def _decompress(codec: str, data: bytes) -> bytes:
    if codec == "zlib":
        d = zlib.decompressobj()
        out = d.decompress(data, MAX_BODY_BYTES)
        if d.unconsumed_tail:
            raise ArtifactError(f"decompressed body exceeds {MAX_BODY_BYTES} bytes")
        return out
    raise ArtifactError(f"unknown codec {codec!r}")


def encode(entries: dict[str, QTensor], meta: dict, codec: str = "zlib", level: int = 9) -> bytes:
    """Serialise quantised tensors and ``meta`` (JSON-able) into artifact bytes."""
    blobs: list[bytes] = []
    offset = 0
    records = []

    def add(t: torch.Tensor) -> dict:
        nonlocal offset
        raw = _to_bytes(t)
        rec = {"dtype": _dtype_name(t.dtype), "shape": list(t.shape), "offset": offset, "nbytes": len(raw)}
        blobs.append(raw)
        offset += len(raw)
        return rec

    for name, e in entries.items():
        rec = {"name": name, "kind": e.kind, "orig_dtype": _dtype_name(e.orig_dtype), "data": add(e.data)}
        if e.scale is not None:
            rec["scale"] = add(e.scale)
        records.append(rec)
    meta_bytes = json.dumps({**meta, "tensors": records}, sort_keys=True).encode()
    body = _compress(codec, struct.pack("<I", len(meta_bytes)) + meta_bytes + b"".join(blobs), level)
    name = codec.encode("ascii")
    return MAGIC + struct.pack("<HB", VERSION, len(name)) + name + hashlib.sha256(body).digest() + body


def decode(data: bytes, source: str = "artifact") -> tuple[dict[str, QTensor], dict]:
    """Parse artifact bytes; every structural problem raises ArtifactError naming ``source``."""
    if len(data) < len(MAGIC) + 3 or data[: len(MAGIC)] != MAGIC:
        raise ArtifactError(f"{source}: not a pgolf artifact (bad magic)")
    version, n = struct.unpack_from("<HB", data, len(MAGIC))
    if version != VERSION:
        raise ArtifactError(f"{source}: artifact version {version}, this pgolf reads {VERSION}")
    pos = len(MAGIC) + 3
    codec = data[pos : pos + n].decode("ascii", "replace")
    digest = data[pos + n : pos + n + 32]
    body = data[pos + n + 32 :]
    if len(digest) != 32 or hashlib.sha256(body).digest() != digest:
        raise ArtifactError(f"{source}: checksum mismatch (file corrupt or truncated)")
    try:
        raw = _decompress(codec, body)
    except zlib.error as e:
        raise ArtifactError(f"{source}: cannot decompress body ({e})") from None
    if len(raw) < 4:
        raise ArtifactError(f"{source}: body too short")
    (meta_len,) = struct.unpack_from("<I", raw, 0)
    try:
        meta = json.loads(raw[4 : 4 + meta_len])
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise ArtifactError(f"{source}: metadata is not valid JSON") from None
    payload = memoryview(raw)[4 + meta_len :]
    entries = {}
    for rec in meta.pop("tensors", []):
        tensors = {}
        for key in ("data", "scale"):
            if key not in rec:
                continue
            r = rec[key]
            start, size = int(r["offset"]), int(r["nbytes"])
            if start < 0 or size < 0 or start + size > len(payload):
                raise ArtifactError(f"{source}: tensor {rec['name']} points outside the payload")
            t = _from_bytes(bytes(payload[start : start + size]), r["dtype"], r["shape"])
            tensors[key] = t
        orig = _DTYPES.get(rec["orig_dtype"], (None,))[0]
        if orig is None:
            raise ArtifactError(f"{source}: tensor {rec['name']} has unknown dtype {rec['orig_dtype']!r}")
        entries[rec["name"]] = QTensor(rec["kind"], tensors["data"], orig, tensors.get("scale"))
    return entries, meta


def write_artifact(path: str | Path, entries: dict[str, QTensor], meta: dict, codec: str, level: int) -> int:
    """Write atomically; return the file size in bytes."""
    data = encode(entries, meta, codec, level)
    write_bytes_atomic(path, data)
    return len(data)


def read_artifact(path: str | Path) -> tuple[dict[str, QTensor], dict]:
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ArtifactError(f"{path}: artifact not found") from None
    return decode(data, str(path))


@dataclass(frozen=True)
class SizeReport:
    model_bytes: int
    code_bytes: int
    cap_bytes: int

    @property
    def total_bytes(self) -> int:
        return self.model_bytes + self.code_bytes

    @property
    def fits(self) -> bool:
        return self.total_bytes <= self.cap_bytes

    @property
    def headroom(self) -> int:
        return self.cap_bytes - self.total_bytes


def package_dir() -> Path:
    return Path(__file__).resolve().parent


def code_bytes() -> int:
    """UTF-8 bytes of the counted modules (the code a submission must ship)."""
    root = package_dir()
    return sum((root / m).stat().st_size for m in COUNTED_MODULES)
