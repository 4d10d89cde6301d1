"""CUDA paths against their CPU/eager twins. Skipped without a GPU (CI has none)."""

import pytest
import torch

from pgolf.config import ModelConfig
from pgolf.dist import autocast_for
from pgolf.model.gpt import GPT
from pgolf.model.layers import Attention
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
    eager = torch.log_softmax(model(ids).float(), -1)
    compiled = torch.compile(model, dynamic=False, fullgraph=True)
    with autocast_for(torch.device("cuda")):
        fast = torch.log_softmax(compiled(ids).float(), -1)
        loss = compiled(ids, tgt)
    assert loss.dtype == torch.float32
    assert torch.allclose(fast, eager, atol=5e-2, rtol=2e-2)
    assert abs(loss.item() - model(ids, tgt).item()) < 5e-3


def test_bf16_newton_schulz_matches_fp32():
    g = torch.randn(512, 1536, device="cuda")
    a = newton_schulz5(g, 5, torch.float32)
    b = newton_schulz5(g, 5, torch.bfloat16).float()
    assert (a - b).norm() / a.norm() < 0.02


def test_pgolf_attention_runs_on_the_flash_kernel():
    """pgolf's grouped-query Attention (8 heads / 4 KV, head_dim 64) under bf16 autocast with only
    the flash backend allowed: it must run (no fallback is permitted) and agree with the math kernel."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    from pgolf.model.layers import rotary_tables

    torch.manual_seed(0)
    attn = Attention(ModelConfig(model_dim=512, num_heads=8, num_kv_heads=4)).cuda()
    attn.proj.weight.data.normal_(0, 0.02)
    x = torch.randn(2, 256, 512, device="cuda")
    cos, sin = rotary_tables(256, 64, 10_000.0, x.device)
    with autocast_for(x.device):
        with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
            flash = attn(x, cos, sin)
        with sdpa_kernel(SDPBackend.MATH):
            math_ = attn(x, cos, sin)
    assert torch.allclose(flash.float(), math_.float(), atol=2e-2, rtol=2e-2)
