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

from pgolf.config import QuantConfig
from pgolf.config.eval import EvalConfig
from pgolf.config.pack import COMPRESSORS
from pgolf.errors import ArtifactError
from pgolf.pack.codec import CODECS, TRANSFORMS, get_codec, shuffle, unshuffle
from pgolf.pack.format import (
    MAGIC,
    VERSION,
    PackSpec,
    decode,
    encode,
    read_artifact,
    read_sections,
    write_artifact,
)
from pgolf.pack.meta import ArtifactMeta
from pgolf.pack.size import SizeReport, counted_modules, package_dir, sources_sha256
from pgolf.quant.export import dequantize_state_dict, quantize_state_dict
from pgolf.quant.grid import QTensor


def _entries():
    torch.manual_seed(1)
    return {
        "a": QTensor("row", torch.randint(-31, 32, (5, 7), dtype=torch.int8), torch.float32,
                     torch.rand(5).half(), "int6"),
        "b": QTensor("raw", torch.randn(4).half(), torch.bfloat16, fmt="fp16"),
        "c": QTensor("raw", torch.arange(6, dtype=torch.int64).view(2, 3), torch.int64, fmt="exact"),
        "d": QTensor("tensor", torch.randint(-127, 128, (3, 2, 2), dtype=torch.int8), torch.float32,
                     torch.tensor(0.25), "int8-contest"),
        "e": QTensor("raw", torch.randn(3).to(torch.bfloat16), torch.bfloat16, fmt="fp16"),
    }  # fmt: skip


def _pstr(s: str) -> bytes:
    return bytes([len(s)]) + s.encode()


def _frame(sections: list[tuple[str, str, bytes, int]], version: int = VERSION) -> bytes:
    """Artifact bytes around hand-made sections (name, codec, stored bytes, declared raw length)."""
    body = struct.pack("<I", len(sections)) + b"".join(
        _pstr(n) + _pstr(c) + _pstr("none") + struct.pack("<BQQ", 1, raw, len(b)) + b
        for n, c, b, raw in sections
    )
    return MAGIC + struct.pack("<H", version) + hashlib.sha256(body).digest() + body


def _meta_section(meta: dict) -> tuple[str, str, bytes, int]:
    raw = json.dumps(meta).encode()
    return ("meta", "zlib", zlib.compress(raw), len(raw))


def test_encode_decode_is_exact():
    entries = _entries()
    out, meta = decode(encode(entries, {"model": {"x": 1}}))
    assert meta == {"model": {"x": 1}}
    for name, e in entries.items():
        o = out[name]
        assert (o.kind, o.fmt, o.orig_dtype, o.data.dtype, o.data.shape) == (
            e.kind, e.fmt, e.orig_dtype, e.data.dtype, e.data.shape)  # fmt: skip
        assert torch.equal(o.data, e.data)
        assert (o.scale is None) == (e.scale is None) and (e.scale is None or torch.equal(o.scale, e.scale))


@settings(max_examples=25, deadline=None)
@given(
    rows=st.integers(1, 20), cols=st.integers(1, 20), seed=st.integers(0, 10**6),
    codec=st.sampled_from(["zlib", "zstd", "lzma", "brotli", "auto"]), transform=st.sampled_from(TRANSFORMS),
    fmt=st.sampled_from(["int8-contest", "int6", "int5", "int4"]),
)  # fmt: skip
def test_quantised_state_round_trips_through_bytes(rows, cols, seed, codec, transform, fmt):
    """quantize -> pack -> compress -> decompress -> unpack -> dequantize: codes exact, values exact."""
    g = torch.Generator().manual_seed(seed)
    state = {"w": torch.randn(rows, cols, generator=g) * 3, "v": torch.randn(cols, generator=g)}
    cfg = QuantConfig(keep_float_max_numel=10, matrix=fmt, clip="max")
    entries, _ = quantize_state_dict(state, {"w": "matrix", "v": "control"}, cfg)
    back, _ = decode(encode(entries, {}, PackSpec(codec, 6, transform)))
    for name, e in entries.items():
        assert torch.equal(back[name].data, e.data) and back[name].fmt == e.fmt
    want, got = dequantize_state_dict(entries), dequantize_state_dict(back)
    assert all(torch.equal(got[k], want[k]) for k in want)


def test_sections_group_by_format_and_auto_picks_the_smallest():
    torch.manual_seed(5)
    state = {"blocks.0.mlp.fc.weight": torch.randn(64, 256), "blocks.0.attn.c_q.weight": torch.randn(64, 256)}
    cfg = QuantConfig(keep_float_max_numel=0, matrix="int6", mlp="int5")
    entries, _ = quantize_state_dict(state, dict.fromkeys(state, "matrix"), cfg)
    data = encode(entries, {}, PackSpec("auto", 0, "auto"))
    sections = {s.name: s for s, _ in read_sections(data)}
    assert {"meta", "int6.codes", "int5.codes", "int6.scales.float16", "int5.scales.float16"} == set(sections)
    for name in ("int6.codes", "int5.codes"):
        raw = b"".join(entries[k].data.numpy().tobytes() for k in entries if entries[k].fmt == name[:4])
        smallest = min(len(CODECS[c].compress(raw, CODECS[c].max_level)) for c in CODECS)
        assert sections[name].stored_bytes == smallest
    assert sections["int6.codes"].transform == "none"  # 1-byte values are never shuffled


def test_shuffle_is_a_byte_plane_transpose():
    data = bytes(range(12))
    assert shuffle(data, 4) == bytes([0, 4, 8, 1, 5, 9, 2, 6, 10, 3, 7, 11])
    assert unshuffle(shuffle(data, 4), 4) == data and shuffle(data, 1) == data
    odd = bytes(range(13))  # not a whole number of values: left as is, both ways
    assert shuffle(odd, 4) == odd and unshuffle(odd, 4) == odd


def test_corruption_is_refused(tmp_path):
    path = tmp_path / "m.pgolf"
    write_artifact(path, _entries(), {}, PackSpec())
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


def test_version_codec_and_lengths_are_checked():
    meta = _meta_section({"tensors": []})
    with pytest.raises(ArtifactError, match="artifact version 1, this pgolf reads 2"):
        decode(_frame([meta], version=1))
    assert decode(_frame([meta])) == ({}, {})
    with pytest.raises(ArtifactError, match="unknown codec 'lzmq'"):
        decode(_frame([(meta[0], "lzmq", meta[2], meta[3])]))
    with pytest.raises(ArtifactError, match="corrupt zlib stream"):  # digest fine, stream is not zlib
        decode(_frame([("meta", "zlib", b"\x00" * 40, 40)]))
    with pytest.raises(ArtifactError, match="zlib stream is truncated"):
        decode(_frame([(meta[0], "zlib", meta[2][:-6], meta[3])]))
    with pytest.raises(ArtifactError, match="exceeds 5 bytes"):  # declares less than it inflates to
        decode(_frame([(meta[0], "zlib", meta[2], 5)]))
    with pytest.raises(ArtifactError, match="declare more than"):  # a hostile length, refused up front
        decode(_frame([(meta[0], "zlib", meta[2], 1 << 40)]))
    whole = _frame([meta])
    body = struct.pack("<I", 2) + whole[len(MAGIC) + 34 + 4 :]  # claims 2 sections, holds 1; digest valid
    with pytest.raises(ArtifactError, match="truncated section table"):
        decode(MAGIC + struct.pack("<H", VERSION) + hashlib.sha256(body).digest() + body)
    with pytest.raises(ArtifactError, match="malformed section table"):
        decode(_frame([("data", "zlib", meta[2], meta[3])]))


def test_empty_and_hostile_zero_length_sections():
    """A section may be empty; one that declares 0 bytes but inflates to more is refused before the
    whole stream is inflated (zlib reads a max_length of 0 as 'no limit')."""
    for name, codec in CODECS.items():
        assert codec.decompress(codec.compress(b"", codec.max_level), 0) == b"", name
        with pytest.raises(ArtifactError, match="exceeds 0 bytes"):
            codec.decompress(codec.compress(bytes(1 << 20), 1), 0)
    meta = _meta_section({"tensors": []})
    hostile = ("x", "zlib", zlib.compress(bytes(1 << 22)), 0)
    with pytest.raises(ArtifactError, match="exceeds 0 bytes"):
        decode(_frame([meta, hostile]))


def test_foreign_frames_are_refused():
    import lzma

    import zstandard

    no_size = zstandard.ZstdCompressor(write_content_size=False).compress(b"abc" * 100)
    with pytest.raises(ArtifactError, match="does not declare its size"):
        CODECS["zstd"].decompress(no_size, 300)
    alone = lzma.compress(b"abc" * 100, format=lzma.FORMAT_ALONE)  # .lzma: may declare any dictionary
    with pytest.raises(ArtifactError, match="corrupt lzma stream"):
        CODECS["lzma"].decompress(alone, 300)


def test_config_levels_match_the_codecs():
    from pgolf.config.pack import LEVELS

    assert {name: high for name, (_, high) in LEVELS.items()} == {n: c.max_level for n, c in CODECS.items()}


def test_codecs_round_trip_and_bound_decompression():
    assert set(CODECS) | {"auto"} == set(COMPRESSORS)  # the config accepts exactly the registered codecs
    data = bytes(range(256)) * 100
    for name, codec in CODECS.items():
        stored = codec.compress(data, codec.max_level)
        assert codec.decompress(stored, len(data)) == data, name
        with pytest.raises(ArtifactError, match=r"exceeds 1000 bytes|truncated or exceeds 1000"):
            get_codec(name).decompress(stored, 1000)
        with pytest.raises(ArtifactError, match=r"corrupt|truncated"):
            get_codec(name).decompress(stored[: len(stored) // 2], len(data))
        with pytest.raises(ArtifactError, match=r"trailing|corrupt"):
            get_codec(name).decompress(stored + b"xyz", len(data))


W = {"name": "w", "kind": "raw", "fmt": "fp32", "orig_dtype": "float32"}
D = {"section": 1, "dtype": "float32", "shape": [4], "offset": 0, "nbytes": 16}


@pytest.mark.parametrize(
    ("record", "match"),
    [
        ({**W, "data": {**D, "shape": [3, 3]}}, "shape"),
        (W, "malformed tensor record"),
        ({**W, "data": {**D, "offset": 8}}, "outside its section"),
        ({**W, "data": {**D, "section": 0}}, "outside its section"),
        ({**W, "kind": "row", "data": {**D, "dtype": "int8", "shape": [16]}}, "bad kind"),
        ({**W, "orig_dtype": "complex64", "data": D}, "unknown dtype"),
        ({**W, "data": {**D, "dtype": "float64"}}, "unknown tensor dtype"),
        ({**W, "name": [1], "data": D}, "string name"),
        ({**W, "data": {**D, "offset": 1e400}}, "offset must be a non-negative integer"),
        ({**W, "data": {**D, "offset": 0.9}}, "offset must be a non-negative integer"),
        ({**W, "data": {**D, "shape": [-1]}}, "shape must be a non-negative integer"),
        ({**W, "data": {**D, "shape": "4"}}, "shape must be a list"),
        ("not a record", "malformed tensor record"),
    ],
)  # fmt: skip
def test_handcrafted_bad_tensor_records_raise_the_artifact_error(record, match):
    """Each record lies about its section (payload: 16 zero bytes in section 1)."""
    payload = ("fp32", "zlib", zlib.compress(bytes(16)), 16)
    with pytest.raises(ArtifactError, match=match):
        decode(_frame([_meta_section({"tensors": [record]}), payload]))


def test_hostile_meta_bodies_raise_the_artifact_error():
    payload = ("fp32", "zlib", zlib.compress(bytes(16)), 16)
    deep = b"[" * 200_000
    with pytest.raises(ArtifactError, match="not valid JSON"):
        decode(_frame([("meta", "zlib", zlib.compress(deep), len(deep))]))
    with pytest.raises(ArtifactError, match="stored twice"):
        decode(_frame([_meta_section({"tensors": [{**W, "data": D}, {**W, "data": D}]}), payload]))


def _meta_dict() -> dict:
    from pgolf.config import DataConfig, EvalConfig, ModelConfig, PackConfig

    return ArtifactMeta(
        pgolf_version="0", preset="p", track="debug", steps=1, looping=False, model=ModelConfig(),
        data=DataConfig(), eval=EvalConfig(seq_len=64), quant=QuantConfig(), pack=PackConfig(),
        tokenizer_sha256="t", tokenizer_vocab_size=1024, val_tokens=10, val_sha256="v",
        code_form="compressed", code_bytes=5, code_sha256="c", sources_sha256="s", train_seconds=1.5,
        train_cap_seconds=0.0,
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
        ArtifactMeta.from_dict({**d, "quant": {**d["quant"], "matrix": "int3"}})
    with pytest.raises(ArtifactError, match="steps must be int"):
        ArtifactMeta.from_dict({**d, "steps": "1"})
    bad = [
        ({"code_bytes": -10_000_000}, "code_bytes must be >= 0"),
        ({"val_tokens": -5}, "val_tokens must be >= 0"),
        ({"track": "nope"}, "unknown track"),
        ({"eval": {**d["eval"], "seq_len": 0}}, r"eval\.seq_len must be >= 1"),
        ({"eval": {**d["eval"], "seq_len": 64.5}}, r"eval\.seq_len must be int"),
        ({"model": {**d["model"], "num_layers": 9.5}}, r"model\.num_layers must be int"),
        ({"model": {**d["model"], "logit_softcap": float("nan")}}, r"model\.logit_softcap must be float"),
        ({"data": {**d["data"], "val_pattern": ["x"]}}, r"data\.val_pattern must be str"),
        ({"train_seconds": True}, "train_seconds must be float"),
        ({"quant": [1]}, "quant must be an object"),
    ]
    for change, match in bad:
        with pytest.raises(ArtifactError, match=match):
            ArtifactMeta.from_dict({**d, **change})


def test_loading_never_unpickles(tmp_path, monkeypatch):
    path = tmp_path / "m.pgolf"
    write_artifact(path, _entries(), {"k": "v"}, PackSpec("brotli", 5, "shuffle"))

    def boom(*a, **k):
        raise AssertionError("unpickling attempted")

    monkeypatch.setattr(pickle, "loads", boom)
    monkeypatch.setattr(pickle, "load", boom)
    monkeypatch.setattr(torch, "load", boom)
    entries, meta = read_artifact(path)
    assert meta == {"k": "v"} and set(entries) == set(_entries())


TOOLING = {"__main__.py"} | {
    str(p.relative_to(package_dir())) for p in (package_dir() / "tools").rglob("*.py")
}
"""Tooling is what lives under ``pgolf/tools/`` (and ``python -m pgolf``'s shim, which runs its CLI)."""


def test_counted_code_is_the_import_closure_and_excludes_tooling():
    counted = set(counted_modules())
    files = {str(p.relative_to(package_dir())) for p in package_dir().rglob("*.py")}
    assert counted <= files and not counted & TOOLING
    plugins = {"eval/sgd_ttt.py", "eval/lora.py", "eval/sgd.py", "eval/mixture.py", "eval/experts.py",
               "eval/correction.py"}  # fmt: skip
    assert files - counted == TOOLING | plugins, (
        "every module is counted, a plug-in, or declared tooling here"
    )
    every = EvalConfig(ttt="sgd", experts="ngram", val_leak=True, correction_bytes=1).plugin_modules
    assert set(counted_modules(every)) - counted == plugins - {"eval/lora.py"}
    assert {"entry.py", "pipeline.py", "eval/artifact.py", "pack/bundle.py", "__init__.py"} <= counted
    assert len(sources_sha256()) == 64


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
        assert size.counted_modules((), ("pgolf.entry",)) == (
            "__init__.py",
            "entry.py",
            "helper.py",
            "tool.py",
        )
    finally:
        size.counted_modules.cache_clear()


def test_a_run_through_the_pipeline_loads_no_uncounted_module(data_root, tmp_path):
    script = """
import sys, json, pathlib
import pgolf
from pgolf.config.run import config_from_dict
from pgolf.pipeline import run
cfg = config_from_dict(json.loads(sys.argv[1]))
run(cfg, out_dir=sys.argv[2], echo=False)
src = pathlib.Path(pgolf.__file__).resolve().parents[1]  # the src/ folder of a checkout
files = [pathlib.Path(f).resolve() for m in list(sys.modules.values()) if (f := getattr(m, "__file__", 0))]
siblings = sorted(str(f) for f in files if src.name == "src" and f.is_relative_to(src)
                  and "pgolf" not in f.parts)
print(json.dumps(siblings))
print(json.dumps(sorted(m for m in sys.modules if m == "pgolf" or m.startswith("pgolf."))))
"""
    from dataclasses import replace

    from pgolf.tools.presets import get_preset

    cfg = get_preset("debug")
    cfg = replace(cfg, data=replace(cfg.data, root=str(data_root)), train=replace(cfg.train, iterations=2))
    proc = subprocess.run(
        [sys.executable, "-c", script, json.dumps(cfg.to_dict()), str(tmp_path)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    *_, siblings, modules = proc.stdout.strip().splitlines()
    assert json.loads(siblings) == []  # no other package of the checkout (uncounted code) was loaded
    loaded = json.loads(modules)
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
