"""The attention kernel chosen once at start-up (model/kernels.py): the choice per device and config,
the refusals, a pinned kernel that raises instead of falling back, FlashAttention-3's layout through a
stand-in function, and the trainer's log line. The real FA3 and CUDA kernels are in tests/test_gpu.py."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from pgolf.config.run import apply_overrides
from pgolf.errors import ConfigError
from pgolf.model import kernels
from pgolf.model.gpt import GPT
from pgolf.model.kernels import Fa3, Sdpa, resolve_attention
from pgolf.pipeline import run
from pgolf.tools.presets import get_preset

CPU, CUDA = torch.device("cpu"), torch.device("cuda")


def fake_fa3(q, k, v, causal):
    """FA3's contract: (B, T, H, D) half precision in, (B, T, H, D) out, grouped heads natively."""
    assert causal and q.dtype == torch.bfloat16 and q.shape[2] % k.shape[2] == 0
    y = F.scaled_dot_product_attention(
        *(t.float().transpose(1, 2) for t in (q, k, v)), is_causal=True, enable_gqa=True
    )
    return y.transpose(1, 2).to(q.dtype), torch.zeros(1)  # some builds also return the LSE


@pytest.mark.parametrize(
    ("requested", "device", "doc_mask", "fa3", "want"),
    [
        ("auto", CPU, False, False, "flash"),
        ("auto", CPU, True, False, "flash"),
        ("auto", CUDA, False, True, "fa3"),
        ("auto", CUDA, False, False, "flash"),
        ("auto", CUDA, True, True, "efficient"),
        ("math", CUDA, True, False, "math"),
        ("flash", CPU, True, False, "flash"),  # the CPU flash kernel takes a mask
        ("fa3", CUDA, False, True, "fa3"),
    ],
)
def test_the_kernel_each_config_resolves_to(monkeypatch, requested, device, doc_mask, fa3, want):
    monkeypatch.setattr(kernels, "fa3_function", lambda: fake_fa3 if fa3 else None)
    monkeypatch.setattr(kernels, "cuda_major", lambda device=None: 9)
    assert resolve_attention(requested, device, doc_mask) == want


def test_before_ampere_sdpa_flash_is_never_chosen(monkeypatch):
    monkeypatch.setattr(kernels, "cuda_major", lambda device=None: 7)
    assert resolve_attention("auto", CUDA, False) == "efficient"
    with pytest.raises(ConfigError, match="Ampere"):
        resolve_attention("flash", CUDA, False)


@pytest.mark.parametrize(
    ("requested", "device", "doc_mask", "fa3", "match"),
    [
        ("fa3", CUDA, False, False, "needs flash_attn_interface"),
        ("fa3", CPU, False, True, "needs flash_attn_interface"),
        ("fa3", CUDA, True, True, "takes no mask"),
        ("flash", CUDA, True, False, "takes no mask"),
        ("efficient", CPU, False, False, "no memory-efficient kernel on a CPU"),
        ("xformers", CPU, False, False, "expected one of auto, fa3"),
    ],
)
def test_a_kernel_that_cannot_run_the_model_is_refused_at_start_up(
    monkeypatch, requested, device, doc_mask, fa3, match
):
    monkeypatch.setattr(kernels, "fa3_function", lambda: fake_fa3 if fa3 else None)
    monkeypatch.setattr(kernels, "cuda_major", lambda device=None: 9)
    with pytest.raises(ConfigError, match=match):
        resolve_attention(requested, device, doc_mask)


def _model(**overrides) -> tuple[GPT, torch.Tensor]:
    cfg = apply_overrides(get_preset("debug"), overrides)
    torch.manual_seed(0)
    model = GPT(cfg.model)
    for p in model.parameters():
        p.data.normal_(0, 0.05)
    return model, torch.randint(0, cfg.model.vocab_size, (2, 32), generator=torch.Generator().manual_seed(1))


@pytest.mark.arith
@pytest.mark.parametrize("doc_mask", [False, True])
def test_a_pinned_kernel_gives_sdpas_own_result_and_traces_as_one_graph(doc_mask):
    model, ids = _model(**{"model.doc_mask": str(doc_mask).lower()})
    want = model(ids)
    model.use_attention("flash")
    assert torch.allclose(model(ids), want, atol=1e-6)
    torch._dynamo.reset()
    traced = torch.compile(model, dynamic=False, fullgraph=True, backend="aot_eager")
    assert torch.allclose(traced(ids), want, atol=1e-6)


def test_a_pinned_kernel_raises_where_sdpa_would_fall_back():
    q = torch.randn(1, 2, 8, 4)
    with pytest.raises(RuntimeError, match=r"No viable backend|No available kernel"):
        Sdpa(kernels.SDPA_BACKENDS["efficient"])(q, q, q, None)  # no such kernel on a CPU
    assert torch.allclose(
        Sdpa()(q, q, q, None), Sdpa(kernels.SDPA_BACKENDS["math"])(q, q, q, None), atol=1e-6
    )


@pytest.mark.arith
def test_fa3_layout_and_grouped_heads_through_a_stand_in():
    """Fa3 hands (B, T, H, D) bf16 tensors with the KV heads ungrouped to the kernel and returns the
    model's (B, H, T, D) in the input dtype: the model agrees with SDPA to bf16 precision."""
    model, ids = _model(**{"model.num_heads": "4", "model.num_kv_heads": "2"})
    want = model(ids)
    for block in model.blocks:
        block.attn.kernel = Fa3(fake_fa3)
    got = model(ids)
    assert got.dtype == want.dtype and torch.allclose(got, want, atol=3e-2)
    q = torch.randn(1, 4, 8, 16)
    with torch.autocast("cpu", dtype=torch.bfloat16):  # under autocast, the half dtype, as SDPA gives
        assert Fa3(fake_fa3)(q, q[:, :2], q[:, :2].bfloat16(), None).dtype == torch.bfloat16


def test_the_run_logs_its_kernel_and_refuses_one_this_device_lacks(debug_cfg, tmp_path):
    run(debug_cfg(**{"train.iterations": "2"}), out_dir=tmp_path / "a", echo=False)
    assert "attention:flash (train.attention=auto)" in (tmp_path / "a" / "train.log").read_text()
    with pytest.raises(ConfigError, match=r"train\.attention=efficient"):
        run(debug_cfg(**{"train.iterations": "2", "train.attention": "efficient"}), out_dir=tmp_path / "b",
            echo=False)  # fmt: skip
