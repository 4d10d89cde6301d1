import pickle

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from pgolf.artifact import (
    COUNTED_MODULES,
    TOOLING_MODULES,
    ArtifactError,
    code_bytes,
    decode,
    encode,
    package_dir,
    read_artifact,
    write_artifact,
)
from pgolf.config import ExportConfig, ModelConfig
from pgolf.model import GPT
from pgolf.quant import SCALE_FLOOR, QTensor, dequantize, quantize_state_dict, quantize_tensor


def test_int8_rows_reconstruct_within_half_a_step():
    torch.manual_seed(0)
    w = torch.randn(64, 256) * torch.logspace(-1, 1, 64)[:, None]
    q, scale, floored = quantize_tensor(w, 0.9999984)
    assert q.dtype == torch.int8 and scale.dtype == torch.float16 and q.abs().max() <= 127
    clip = torch.quantile(w.abs(), 0.9999984, dim=1)
    deq = q.float() * scale.float()[:, None]
    clipped = torch.maximum(torch.minimum(w, clip[:, None]), -clip[:, None])
    assert ((deq - clipped).abs() <= scale.float()[:, None] / 2 + 1e-6).all()
    assert floored == int((clip / 127 < SCALE_FLOOR).sum())


def test_scale_floor_applies_to_small_rows():
    q, scale, floored = quantize_tensor(torch.full((3, 8), 0.01), 1.0)
    assert floored == 3 and torch.allclose(scale.float(), torch.full((3,), 1 / 127), rtol=1e-3)
    assert q.unique().tolist() == [1]  # 0.01 / (1/127) = 1.27 -> 1


def test_export_routing():
    model = GPT(ModelConfig(vocab_size=1024, num_layers=2, model_dim=128, num_heads=4, num_kv_heads=2))
    entries, stats = quantize_state_dict(model.state_dict(), ExportConfig(keep_float_max_numel=20_000))
    assert entries["tok_emb.weight"].kind == "int8_row"
    assert entries["blocks.0.mlp.fc.weight"].kind == "int8_row"
    assert entries["blocks.0.attn.c_q.weight"].data.dtype == torch.float16  # 16,384 elements: small
    assert entries["blocks.0.resid_mix"].data.dtype == torch.float32  # control tensor: fp32
    assert stats.int8_params + stats.raw_params == sum(p.numel() for p in model.parameters())


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


def test_encode_decode_is_exact():
    entries = _entries()
    data = encode(entries, {"model": {"x": 1}}, "zlib", 9)
    out, meta = decode(data)
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
    assert dequantize(out).keys() == entries.keys()


@settings(max_examples=30, deadline=None)
@given(rows=st.integers(1, 20), cols=st.integers(1, 20), seed=st.integers(0, 10**6))
def test_quantised_state_round_trips_through_bytes(rows, cols, seed):
    g = torch.Generator().manual_seed(seed)
    state = {"w": torch.randn(rows, cols, generator=g) * 3, "v": torch.randn(cols, generator=g)}
    entries, _ = quantize_state_dict(state, ExportConfig(keep_float_max_numel=10))
    back, _ = decode(encode(entries, {}, "zlib", 9))
    for k, v in dequantize(entries).items():
        assert torch.equal(dequantize(back)[k], v)


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


def test_version_and_codec_checks():
    data = bytearray(encode(_entries(), {}, "zlib", 9))
    data[8] = 9  # version
    with pytest.raises(ArtifactError, match="artifact version 9"):
        decode(bytes(data))


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


def test_every_package_file_is_classified_for_byte_counting():
    files = {str(p.relative_to(package_dir())) for p in package_dir().rglob("*.py")}
    assert set(COUNTED_MODULES) | set(TOOLING_MODULES) == files
    assert not set(COUNTED_MODULES) & set(TOOLING_MODULES)
    assert code_bytes() == sum((package_dir() / m).stat().st_size for m in COUNTED_MODULES)
