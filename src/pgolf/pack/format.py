"""The artifact file: stored tensors plus a JSON meta, no pickle. Imports nothing of model, data or
train: it knows bytes, dtypes and shapes, not what they mean (``pack.meta`` does).

Layout (all integers little-endian)::

    magic      8 bytes   b"PGOLFART"
    version    u16       1
    codec      u8 length + ASCII name (e.g. "zlib")
    sha256     32 bytes  digest of the compressed body
    body       compressed: u32 meta length | meta JSON (UTF-8) | tensor bytes

The meta JSON carries a ``tensors`` list (name, kind, stored dtype, shape, byte offset and length,
original dtype, and a scale tensor if quantised). Loading checks the magic, version, codec,
digest, every offset, length and shape, and rebuilds tensors with numpy from raw bytes only:
nothing in the file is ever executed or unpickled.
"""

from __future__ import annotations

import hashlib
import json
import struct
from pathlib import Path

import numpy as np
import torch

from pgolf.errors import ArtifactError
from pgolf.fileio import write_bytes_atomic
from pgolf.pack.codec import MAX_BODY_BYTES, get_codec
from pgolf.quant.grid import KINDS, QTensor

MAGIC = b"PGOLFART"
VERSION = 1

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


def encode(entries: dict[str, QTensor], meta: dict, codec: str = "zlib", level: int = 9) -> bytes:
    """Serialise stored tensors and ``meta`` (JSON-able, without a ``tensors`` key) into bytes."""
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
    body = get_codec(codec).compress(struct.pack("<I", len(meta_bytes)) + meta_bytes + b"".join(blobs), level)
    name = codec.encode("ascii")
    return MAGIC + struct.pack("<HB", VERSION, len(name)) + name + hashlib.sha256(body).digest() + body


def _entry(rec: dict, payload: memoryview) -> tuple[str, QTensor]:
    tensors = {}
    for key in ("data", "scale"):
        if key not in rec:
            continue
        r = rec[key]
        start, size = int(r["offset"]), int(r["nbytes"])
        if start < 0 or size < 0 or start + size > len(payload):
            raise ArtifactError(f"tensor {rec['name']} points outside the payload")
        tensors[key] = _from_bytes(bytes(payload[start : start + size]), r["dtype"], r["shape"])
    if rec["kind"] not in KINDS or (rec["kind"] != "raw") != ("scale" in tensors):
        raise ArtifactError(f"tensor {rec['name']}: bad kind {rec['kind']!r} for its stored parts")
    if rec["orig_dtype"] not in _DTYPES:
        raise ArtifactError(f"tensor {rec['name']} has unknown dtype {rec['orig_dtype']!r}")
    return rec["name"], QTensor(
        rec["kind"], tensors["data"], _DTYPES[rec["orig_dtype"]][0], tensors.get("scale")
    )


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
        raw = get_codec(codec).decompress(body, MAX_BODY_BYTES)
    except ArtifactError as e:
        raise ArtifactError(f"{source}: {e}") from None
    if len(raw) < 4:
        raise ArtifactError(f"{source}: body too short")
    (meta_len,) = struct.unpack_from("<I", raw, 0)
    try:
        meta = json.loads(raw[4 : 4 + meta_len])
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise ArtifactError(f"{source}: metadata is not valid JSON") from None
    if not isinstance(meta, dict) or not isinstance(meta.get("tensors"), list):
        raise ArtifactError(f"{source}: metadata has no tensor list")
    payload = memoryview(raw)[4 + meta_len :]
    entries = {}
    for rec in meta.pop("tensors"):
        try:
            name, entry = _entry(rec, payload)
        except ArtifactError as e:
            raise ArtifactError(f"{source}: {e}") from None
        except (KeyError, TypeError, ValueError, RuntimeError) as e:
            raise ArtifactError(
                f"{source}: malformed tensor record {rec!r:.200} ({type(e).__name__}: {e})"
            ) from None
        entries[name] = entry
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
