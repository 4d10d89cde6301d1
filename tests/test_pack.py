"""The artifact format, codecs, meta schema and byte accounting (seed-techniques §10)."""

import hashlib
import json
import pickle
import struct
import subprocess
import sys
import zlib

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from pgolf.config import ExportConfig
from pgolf.config.pack import COMPRESSORS
from pgolf.errors import ArtifactError
from pgolf.pack.codec import CODECS, get_codec
from pgolf.pack.format import MAGIC, VERSION, decode, encode, read_artifact, write_artifact
from pgolf.pack.meta import ArtifactMeta
from pgolf.pack.size import SizeReport, code_bytes, code_sha256, counted_modules, package_dir
from pgolf.quant.export import dequantize_state_dict, quantize_state_dict
from pgolf.quant.grid import QTensor


def _entries():
    torch.manual_seed(1)
    return {
        "a": QTensor(
            "int8_row",
            torch.randint(-127, 128, (5, 7), dtype=torch.int8),
            torch.float32,
            torch.rand(5).half(),
        ),
        "b": QTensor("raw", torch.randn(4).half(), torch.bfloat16),
        "c": QTensor("raw", torch.arange(6, dtype=torch.int64).view(2, 3), torch.int64),
        "d": QTensor(
            "int8_tensor",
            torch.randint(-127, 128, (3, 2, 2), dtype=torch.int8),
            torch.float32,
            torch.tensor(0.25),
        ),
        "e": QTensor("raw", torch.randn(3, dtype=torch.float32).to(torch.bfloat16), torch.bfloat16),
    }


def _frame(body: bytes, codec: str = "zlib") -> bytes:
    """Artifact bytes around a hand-made body (valid header and digest)."""
    name = codec.encode()
    return MAGIC + struct.pack("<HB", VERSION, len(name)) + name + hashlib.sha256(body).digest() + body


def _body(meta: dict, payload: bytes = b"") -> bytes:
    m = json.dumps(meta).encode()
    return zlib.compress(struct.pack("<I", len(m)) + m + payload)


def test_encode_decode_is_exact():
    entries = _entries()
    out, meta = decode(encode(entries, {"model": {"x": 1}}, "zlib", 9))
    assert meta == {"model": {"x": 1}}
    for name, e in entries.items():
        o = out[name]
        assert (o.kind, o.orig_dtype, o.data.dtype, o.data.shape) == (
            e.kind,
            e.orig_dtype,
            e.data.dtype,
            e.data.shape,
        )
        assert torch.equal(o.data, e.data)
        assert (o.scale is None) == (e.scale is None) and (e.scale is None or torch.equal(o.scale, e.scale))


@settings(max_examples=30, deadline=None)
@given(rows=st.integers(1, 20), cols=st.integers(1, 20), seed=st.integers(0, 10**6), level=st.integers(0, 9))
def test_quantised_state_round_trips_through_bytes(rows, cols, seed, level):
    g = torch.Generator().manual_seed(seed)
    state = {"w": torch.randn(rows, cols, generator=g) * 3, "v": torch.randn(cols, generator=g)}
    entries, _ = quantize_state_dict(state, ExportConfig(keep_float_max_numel=10))
    back, _ = decode(encode(entries, {}, "zlib", level))
    for name, e in entries.items():  # codes exact, so the dequantised values are exact too
        assert torch.equal(back[name].data, e.data)
    want, got = dequantize_state_dict(entries), dequantize_state_dict(back)
    assert all(torch.equal(got[k], want[k]) for k in want)


def test_corruption_is_refused(tmp_path):
    path = tmp_path / "m.pgolf"
    write_artifact(path, _entries(), {}, "zlib", 9)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match="checksum mismatch"):
        read_artifact(path)
    path.write_bytes(bytes(data[: len(data) // 2]))
    with pytest.raises(ArtifactError, match="checksum mismatch"):
        read_artifact(path)
    path.write_bytes(b"NOTPGOLF" + bytes(data[8:]))
    with pytest.raises(ArtifactError, match="bad magic"):
        read_artifact(path)
    with pytest.raises(ArtifactError, match="not found"):
        read_artifact(tmp_path / "missing.pgolf")


def test_version_and_codec_are_checked():
    data = bytearray(encode(_entries(), {}, "zlib", 9))
    data[8] = 9
    with pytest.raises(ArtifactError, match="artifact version 9"):
        decode(bytes(data))
    body = _body({"tensors": []})
    with pytest.raises(ArtifactError, match="unknown codec 'lzmq'"):
        decode(_frame(body, "lzmq"))
    with pytest.raises(ArtifactError, match="corrupt zlib stream"):  # digest fine, stream is not zlib
        decode(_frame(b"\x00" * 40))
    with pytest.raises(ArtifactError, match="zlib stream is truncated"):
        decode(_frame(body[:-6]))


def test_codecs_round_trip_and_bound_decompression():
    assert set(CODECS) == set(COMPRESSORS)  # the config accepts exactly the registered codecs
    data = bytes(range(256)) * 100
    for name, codec in CODECS.items():
        assert codec.decompress(codec.compress(data, 9), len(data)) == data, name
        with pytest.raises(ArtifactError, match="exceeds 1000 bytes"):
            get_codec(name).decompress(codec.compress(data, 9), 1000)


@pytest.mark.parametrize(
    ("record", "match"),
    [
        ({"name": "w", "kind": "raw", "orig_dtype": "float32",
          "data": {"dtype": "float32", "shape": [3, 3], "offset": 0, "nbytes": 16}}, "shape"),
        ({"name": "w", "kind": "raw", "orig_dtype": "float32"}, "malformed tensor record"),
        ({"name": "w", "kind": "raw", "orig_dtype": "float32",
          "data": {"dtype": "float32", "shape": [4], "offset": 8, "nbytes": 16}}, "outside the payload"),
        ({"name": "w", "kind": "int8_row", "orig_dtype": "float32",
          "data": {"dtype": "int8", "shape": [16], "offset": 0, "nbytes": 16}}, "bad kind"),
        ({"name": "w", "kind": "raw", "orig_dtype": "complex64",
          "data": {"dtype": "float32", "shape": [4], "offset": 0, "nbytes": 16}}, "unknown dtype"),
    ],
)  # fmt: skip
def test_handcrafted_bad_tensor_records_raise_the_artifact_error(record, match):
    with pytest.raises(ArtifactError, match=match):
        decode(_frame(_body({"tensors": [record]}, bytes(16))))


def _meta_dict() -> dict:
    from pgolf.config import DataConfig, EvalConfig, ModelConfig

    return ArtifactMeta(
        pgolf_version="0", preset="p", track="debug", steps=1, looping=False, model=ModelConfig(),
        data=DataConfig(), eval=EvalConfig(seq_len=64), export=ExportConfig(), scheme="int8",
        tokenizer_sha256="t", tokenizer_vocab_size=1024, val_tokens=10, val_sha256="v", code_sha256="c",
        code_bytes=5,
    ).to_dict()  # fmt: skip


def test_meta_round_trips_and_bad_meta_raises_the_artifact_error():
    d = _meta_dict()
    meta = ArtifactMeta.from_dict(json.loads(json.dumps(d)))
    assert meta.to_dict() == d and meta.label == "int8_zlib" and meta.size_label == "int8+zlib"
    broken = {k: v for k, v in d.items() if k != "val_sha256"}
    with pytest.raises(ArtifactError, match=r"missing \['val_sha256'\]"):
        ArtifactMeta.from_dict(broken)
    with pytest.raises(ArtifactError, match="bad meta"):
        ArtifactMeta.from_dict({**d, "model": {**d["model"], "num_heads": 7}})
    with pytest.raises(ArtifactError, match="bad meta"):
        ArtifactMeta.from_dict({**d, "model": {**d["model"], "depth": 3}})
    with pytest.raises(ArtifactError, match="steps must be int"):
        ArtifactMeta.from_dict({**d, "steps": "1"})


def test_loading_never_unpickles(tmp_path, monkeypatch):
    path = tmp_path / "m.pgolf"
    write_artifact(path, _entries(), {"k": "v"}, "zlib", 9)

    def boom(*a, **k):
        raise AssertionError("unpickling attempted")

    monkeypatch.setattr(pickle, "loads", boom)
    monkeypatch.setattr(pickle, "load", boom)
    monkeypatch.setattr(torch, "load", boom)
    entries, meta = read_artifact(path)
    assert meta == {"k": "v"} and set(entries) == set(_entries())


TOOLING = {"__main__.py", "cli.py", "demo.py", "plot.py", "presets.py", "estimate.py", "config/overrides.py",
           "data/build.py", "data/fineweb.py", "data/stdlib_corpus.py"}  # fmt: skip


def test_counted_code_is_the_import_closure_and_excludes_tooling():
    counted = set(counted_modules())
    files = {str(p.relative_to(package_dir())) for p in package_dir().rglob("*.py")}
    assert counted <= files and not counted & TOOLING
    assert files - counted == TOOLING, "every module is either counted or declared tooling here"
    assert {"pipeline.py", "eval/artifact.py", "pack/format.py", "model/gpt.py", "__init__.py"} <= counted
    assert code_bytes() == sum(len((package_dir() / m).read_bytes()) for m in counted)
    assert len(code_sha256()) == 64


def test_a_lazy_import_of_tooling_would_be_counted(tmp_path, monkeypatch):
    """The closure follows imports inside functions too: a counted module that lazily imported the
    CLI would pull it (and what it imports) into the count."""
    from pgolf.pack import size

    fake = tmp_path / "pgolf"
    fake.mkdir()
    (fake / "__init__.py").write_text("")
    (fake / "entry.py").write_text("def f():\n    from pgolf import tool\n")
    (fake / "tool.py").write_text("from .helper import x\n")
    (fake / "helper.py").write_text("x = 1\n")
    (fake / "unused.py").write_text("")
    monkeypatch.setattr(size, "package_dir", lambda: fake)
    size.counted_modules.cache_clear()
    try:
        assert size.counted_modules(("pgolf.entry",)) == ("__init__.py", "entry.py", "helper.py", "tool.py")
    finally:
        size.counted_modules.cache_clear()


def test_a_run_through_the_pipeline_loads_no_uncounted_module(data_root, tmp_path):
    script = """
import sys, json
from pgolf.config.run import config_from_dict
from pgolf.pipeline import run
cfg = config_from_dict(json.loads(sys.argv[1]))
run(cfg, out_dir=sys.argv[2], echo=False)
print(json.dumps(sorted(m for m in sys.modules if m == "pgolf" or m.startswith("pgolf."))))
"""
    from dataclasses import replace

    from pgolf.presets import get_preset

    cfg = get_preset("debug")
    cfg = replace(cfg, data=replace(cfg.data, root=str(data_root)), train=replace(cfg.train, iterations=2))
    proc = subprocess.run(
        [sys.executable, "-c", script, json.dumps(cfg.to_dict()), str(tmp_path)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    loaded = json.loads(proc.stdout.strip().splitlines()[-1])
    as_files = set()
    for m in loaded:
        rel = m.split(".")[1:]
        p = package_dir().joinpath(*rel)
        as_files.add(
            str((p / "__init__.py" if p.is_dir() else p.with_suffix(".py")).relative_to(package_dir()))
        )
    assert as_files <= set(counted_modules()), as_files - set(counted_modules())
    assert "pipeline.py" in as_files and not as_files & TOOLING


def test_size_report():
    s = SizeReport(1_500, 600, 2_000)
    assert (s.total_bytes, s.fits, s.headroom) == (2_100, False, -100)
    assert (
        s.log_lines("int8+zlib")[2]
        == "Total submission size int8+zlib: 2100 bytes (cap 2000, OVER THE CAP by 100)"
    )
    assert SizeReport(10**9, 0, 0).fits and SizeReport(10**9, 0, 0).verdict() == "no cap"
