"""CUDA paths against their CPU/eager twins. Skipped without a GPU (CI has none)."""

import pytest
import torch

from pgolf.config import ModelConfig
from pgolf.evaluate import autocast_for
from pgolf.model import GPT
from pgolf.optim import newton_schulz5

pytestmark = pytest.mark.gpu


def test_compiled_bf16_forward_matches_eager_fp32():
    torch.manual_seed(0)
    cfg = ModelConfig(vocab_size=1024, num_layers=2, model_dim=128, num_heads=4, num_kv_heads=2)
    model = GPT(cfg).cuda()
    for p in model.parameters():
        p.data.normal_(0, 0.05)
    ids, tgt = (
        torch.randint(0, 1024, (4, 256), device="cuda"),
        torch.randint(0, 1024, (4, 256), device="cuda"),
    )
    eager = model(ids, tgt, reduction="none")
    compiled = torch.compile(model, dynamic=False, fullgraph=True)
    with autocast_for(torch.device("cuda")):
        fast = compiled(ids, tgt, reduction="none")
    assert fast.dtype == torch.float32
    assert torch.allclose(fast, eager, atol=5e-2, rtol=2e-2)
    assert abs(fast.mean().item() - eager.mean().item()) < 5e-3


def test_bf16_newton_schulz_matches_fp32():
    g = torch.randn(512, 1536, device="cuda")
    a = newton_schulz5(g, 5, torch.float32)
    b = newton_schulz5(g, 5, torch.bfloat16).float()
    assert (a - b).norm() / a.norm() < 0.02


def test_flash_sdpa_is_used_for_the_attention_shapes():
    from torch.nn.attention import SDPBackend, sdpa_kernel

    q = torch.randn(2, 8, 256, 64, device="cuda", dtype=torch.bfloat16)
    k = torch.randn(2, 4, 256, 64, device="cuda", dtype=torch.bfloat16)
    with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
        torch.nn.functional.scaled_dot_product_attention(q, k, k, is_causal=True, enable_gqa=True)
