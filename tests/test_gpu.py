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


def test_the_chosen_attention_kernel_runs_and_agrees_with_math():
    """``train.attention=auto`` on this GPU (FA3 where installed on Hopper, else SDPA flash), pinned:
    the whole model runs on it under bf16 autocast and agrees with the math kernel."""
    from pgolf.model.kernels import resolve_attention

    torch.manual_seed(0)
    model = GPT(ModelConfig(vocab_size=1024, num_layers=2, model_dim=256, num_heads=4, num_kv_heads=2)).cuda()
    for p in model.parameters():
        p.data.normal_(0, 0.05)
    ids = torch.randint(0, 1024, (2, 512), device="cuda")
    kernel = resolve_attention("auto", torch.device("cuda"), doc_mask=False)
    with autocast_for(torch.device("cuda")):
        model.use_attention("math")
        want = model(ids).float()
        model.use_attention(kernel)
        got = model(ids).float()
    assert torch.allclose(got, want, atol=5e-2, rtol=2e-2), kernel


def test_calibration_statistics_under_cuda_autocast_are_fp32():
    from pgolf.quant.gptq import collect_hessians

    torch.manual_seed(8)
    model = GPT(ModelConfig(vocab_size=1024, num_layers=2, model_dim=512, num_heads=8, num_kv_heads=4)).cuda()
    for p in model.parameters():
        p.data.normal_(0, 0.05)
    inputs = []
    hook = model.blocks[1].mlp.fc.register_forward_hook(
        lambda m, i, o: inputs.append(i[0].float().flatten(0, 1))
    )
    with autocast_for(torch.device("cuda")):
        batches = [torch.randint(0, 1024, (8, 512), device="cuda") for _ in range(4)]
        hs = collect_hessians(model, {"blocks.1.mlp.fc.weight"}, batches)
    hook.remove()
    x = torch.cat(inputs).double()
    want = x.T @ x / x.shape[0]
    got = hs["blocks.1.mlp.fc.weight"]
    assert got.dtype == torch.float32 and float((got.double() - want).norm() / want.norm()) < 1e-4


def test_preflight_and_a_short_run_on_cuda(tmp_path):
    """The debug preset end to end on the GPU: the preflight passes and names CUDA; a run reports the
    peak CUDA memory of each phase."""
    import json

    from pgolf.tools.cli import main
    from pgolf.tools.data.stdlib_corpus import build_demo_dataset

    build_demo_dataset(tmp_path / "data", vocab_size=1024, val_docs=12, max_docs=160)
    args = ["debug", "--data.root", str(tmp_path / "data"), "--train.device", "cuda"]
    assert main(["preflight", *args, "--out", str(tmp_path / "pf")]) == 0
    assert main(["train", "--preset", *args, "--out", str(tmp_path / "run")]) == 0
    result = json.loads((tmp_path / "run" / "result.json").read_text())
    assert result["peak_memory"]["train"]["allocated_mib"] > 0
