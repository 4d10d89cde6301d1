"""Rounding grids, the export policy and state dicts (seed-techniques §9.1)."""

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from pgolf.config import ExportConfig, ModelConfig
from pgolf.model.gpt import GPT
from pgolf.model.params import count_parameters
from pgolf.quant.export import dequantize_state_dict, quantize_state_dict
from pgolf.quant.grid import SCALE_FLOOR, dequantize, quantize_int8
from pgolf.quant.policy import FORMATS, tensor_format


def test_int8_rows_reconstruct_within_half_a_step():
    torch.manual_seed(0)
    w = torch.randn(64, 256) * torch.logspace(-1, 1, 64)[:, None]
    e, floored = quantize_int8(w, 0.9999984)
    q, scale = e.data, e.scale
    assert e.kind == "int8_row" and q.dtype == torch.int8 and scale.dtype == torch.float16
    assert q.abs().max() <= 127
    clip = torch.quantile(w.abs(), 0.9999984, dim=1)
    deq = dequantize(e)
    clipped = torch.maximum(torch.minimum(w, clip[:, None]), -clip[:, None])
    assert ((deq - clipped).abs() <= scale.float()[:, None] / 2 + 1e-6).all()
    assert floored == int((clip / 127 < SCALE_FLOOR).sum())


def test_scale_floor_applies_to_small_rows():
    e, floored = quantize_int8(torch.full((3, 8), 0.01), 1.0)
    assert floored == 3 and torch.allclose(e.scale.float(), torch.full((3,), 1 / 127), rtol=1e-3)
    assert e.data.unique().tolist() == [1]  # 0.01 / (1/127) = 1.27 -> 1


def test_contest_int8_rows_by_hand():
    """A 2x4 matrix quantised by hand with the contest's rule: clip at the row's max (q = 1),
    scale = max(clip/127, 1/127) in fp16, codes = round(w / scale)."""
    w = torch.tensor([[2.54, -1.27, 0.0, 0.5], [0.001, -0.002, 0.003, 0.0]])
    e, floored = quantize_int8(w, 1.0)
    s0 = torch.tensor(2.54 / 127).half().float()
    assert e.scale.tolist() == [s0.item(), torch.tensor(1 / 127).half().item()]
    assert e.data[0].tolist() == [
        round(2.54 / s0.item()),
        round(-1.27 / s0.item()),
        0,
        round(0.5 / s0.item()),
    ]
    assert e.data[1].tolist() == [0, 0, 0, 0] and floored == 1  # 0.003 * 127 = 0.38 rounds to 0


def test_policy_routing():
    model = GPT(ModelConfig(vocab_size=1024, num_layers=2, model_dim=128, num_heads=4, num_kv_heads=2))
    cfg = ExportConfig(keep_float_max_numel=20_000)
    state = model.state_dict()
    assert tensor_format("tok_emb.weight", state["tok_emb.weight"], cfg) == "int8"
    assert tensor_format("blocks.0.mlp.fc.weight", state["blocks.0.mlp.fc.weight"], cfg) == "int8"
    assert tensor_format("blocks.0.attn.c_q.weight", state["blocks.0.attn.c_q.weight"], cfg) == "fp16"
    assert tensor_format("blocks.0.resid_mix", state["blocks.0.resid_mix"], cfg) == "fp32"  # control
    assert tensor_format("x", torch.arange(3), cfg) == "exact"
    assert {tensor_format(k, v, cfg) for k, v in state.items()} <= set(FORMATS)
    entries, stats = quantize_state_dict(state, cfg)
    assert entries["blocks.0.attn.c_q.weight"].data.dtype == torch.float16
    assert entries["blocks.0.resid_mix"].data.dtype == torch.float32
    assert stats.int8_params + stats.raw_params == count_parameters(model)


@settings(max_examples=30, deadline=None)
@given(rows=st.integers(1, 20), cols=st.integers(1, 20), seed=st.integers(0, 10**6))
def test_dequantised_values_stay_within_half_a_step_of_the_clipped_input(rows, cols, seed):
    g = torch.Generator().manual_seed(seed)
    state = {"w": torch.randn(rows, cols, generator=g) * 3, "v": torch.randn(cols, generator=g)}
    entries, _ = quantize_state_dict(state, ExportConfig(keep_float_max_numel=10, clip_quantile=1.0))
    back = dequantize_state_dict(entries)
    for k, v in state.items():
        e = entries[k]
        if e.kind == "raw":
            assert torch.equal(back[k], v.to(e.data.dtype).float())
        else:
            step = e.scale.float()[:, None] if e.kind == "int8_row" else e.scale.float()
            assert ((back[k] - v).abs() <= step / 2 + 1e-6).all()
