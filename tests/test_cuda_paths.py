"""The CUDA-only paths, exercised on the CPU (issue 11): whole-graph torch.compile of every technique
variant, bf16 autocast against fp32, grouped-query SDPA against the explicit head repeat, and the
compile-priming restore. Tracing (dynamo fullgraph + AOT autograd, ``aot_eager``) runs for every
variant; inductor's C++ code generation (minutes on 2 cores) runs on the all-techniques model when
PGOLF_INDUCTOR=1. What still needs a GPU (flash kernels, fused AdamW, NCCL, bf16 Newton-Schulz on
tensor cores) is in tests/test_gpu.py and listed in docs/gpu.md as unverified."""

from __future__ import annotations

import copy
import os

import pytest
import torch
import torch.nn.functional as F

from pgolf.config.run import apply_overrides
from pgolf.dist import DistInfo
from pgolf.model.gpt import GPT
from pgolf.model.layers import Attention, rotary_tables
from pgolf.optim import newton_schulz5
from pgolf.quant.qat import enable_qat
from pgolf.runlog import RunLog
from pgolf.tools.presets import get_preset
from pgolf.train.trainer import Trainer

INDUCTOR = pytest.mark.skipif(
    os.environ.get("PGOLF_INDUCTOR") != "1", reason="inductor C++ compile takes minutes: set PGOLF_INDUCTOR=1"
)
ALL_TECHNIQUES = {
    "model.smear_gate": "true", "model.bigram_buckets": "64", "model.bigram_dim": "16",
    "model.xsa_last_n": "1", "model.rope_dims": "8", "model.ln_scale": "true",
    "model.mlp_activation": "leaky_relu2",
    "model.ortho_init": "true", "model.loop_start": "0", "model.loop_end": "1", "model.loop_repeats": "1",
    "model.rope_ntk_seq_len": "32",
}  # fmt: skip
VARIANTS = {
    "baseline": {},
    "all-techniques": ALL_TECHNIQUES,
    "swiglu-untied": {"model.mlp_activation": "swiglu", "model.tie_embeddings": "false"},
    "recurrent": {"model.num_layers": "4", "model.recurrent_blocks": "2"},
    "qat": {"quant.matrix": "int6", "quant.clip": "sdclip", "quant.keep_float_max_numel": "0"},
    "frontier": {
        "model.skip_gates": "true", "model.parallel_from": "1", "model.attn_gate": "sparse",
        "model.value_embed_dim": "16", "model.value_embed_layers": "1", "model.smear_gate": "true",
        "model.smear_gate_window": "12", "model.logit_cap_asym": "true", "model.doc_mask": "true",
        "model.xsa_last_n": "2", "model.loop_start": "0", "model.loop_end": "1", "model.loop_repeats": "2",
    },
    "seed-003": {"model.micronorm": "true", "model.cpmr": "true", "model.qk_temp_split": "true"},
}  # fmt: skip


def _model(overrides: dict):
    cfg = apply_overrides(get_preset("debug"), overrides)
    torch.manual_seed(0)
    model = GPT(cfg.model)
    with torch.no_grad():
        for p in model.parameters():  # off the zero init, so every path carries signal
            p.add_(torch.randn_like(p) * 0.05)
    ids = torch.randint(
        0, cfg.model.vocab_size, (2, cfg.train.seq_len + 1), generator=torch.Generator().manual_seed(1)
    )
    return model, ids, cfg


def _loss_and_grads(fn, model: GPT, ids: torch.Tensor) -> tuple[float, list[torch.Tensor]]:
    model.zero_grad(set_to_none=True)
    loss = fn(ids[:, :-1], ids[:, 1:])
    loss.backward()
    return loss.item(), [p.grad.clone() for p in model.parameters() if p.requires_grad]


def _switches(model: GPT, cfg) -> list:
    """What the trainer flips mid-run, each a guard change (a recompile, never a graph break): the
    middle loop's passes one by one (train.loop_pass_fracs), QAT's fake quantisation at
    quant.qat_from_frac."""
    flips = [lambda: None]
    for n in range(1, cfg.model.loop_repeats + 1):
        flips.append(lambda n=n: setattr(model, "loop_passes", n))
    if cfg.quant.matrix == "int6":
        flips.append(lambda: enable_qat(model, cfg.quant))
    return flips


def _compiled_matches_eager(overrides: dict, backend: str) -> None:
    model, ids, cfg = _model(overrides)
    compiled = torch.compile(model, dynamic=False, fullgraph=True, backend=backend)
    for flip in _switches(model, cfg):
        flip()
        want, want_g = _loss_and_grads(model, model, ids)
        got, got_g = _loss_and_grads(compiled, model, ids)
        assert got == pytest.approx(want, abs=1e-5)
        for a, b in zip(got_g, want_g, strict=True):
            assert torch.allclose(a, b, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_variant_traces_as_one_graph(variant):
    """fullgraph=True raises on any graph break; aot_eager runs the traced forward and backward
    graphs, which must give eager's loss and gradients."""
    torch._dynamo.reset()
    _compiled_matches_eager(VARIANTS[variant], "aot_eager")


@pytest.mark.slow
@INDUCTOR
@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_inductor_compiles_every_variant(variant):
    """Inductor on every variant, QAT included: its grid value is a custom op (``quant.grid.grid_value``),
    so the compiled forward uses exactly the export's weights (fused, it re-rounded some: 7.07023 against
    eager's 7.06984 on the debug model, before 2026-12-01's fix)."""
    torch._dynamo.reset()
    _compiled_matches_eager(VARIANTS[variant], "inductor")


@pytest.mark.parametrize(
    "backend", ["aot_eager", pytest.param("inductor", marks=[pytest.mark.slow, INDUCTOR])]
)
def test_compiled_newton_schulz_matches_eager(backend):
    g = torch.randn(96, 160, generator=torch.Generator().manual_seed(0))
    want = newton_schulz5(g, 5, torch.float32)
    got = torch.compile(newton_schulz5, backend=backend)(g, 5, torch.float32)
    assert torch.allclose(got, want, atol=1e-4)


def test_bf16_autocast_forward_backward_within_tolerance_of_fp32():
    """The GPU trains under bf16 autocast; the same autocast on the CPU must stay near fp32: loss
    within 1% and every gradient pointing the same way (cosine > 0.99, relative norm error < 5%)."""
    model, ids, _ = _model(ALL_TECHNIQUES)
    want, want_g = _loss_and_grads(model, model, ids)

    def amp(x, y):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return model(x, y)

    got, got_g = _loss_and_grads(amp, model, ids)
    assert abs(got - want) / want < 0.01
    for (name, _), a, b in zip(model.named_parameters(), got_g, want_g, strict=True):
        assert a.dtype == torch.float32, name  # autocast keeps fp32 master gradients
        if b.norm() > 1e-6:
            assert F.cosine_similarity(a.flatten(), b.flatten(), dim=0) > 0.99, name
            assert (a - b).norm() / b.norm() < 0.05, name


@pytest.mark.parametrize("kv_heads", [1, 2])
def test_sdpa_grouped_heads_match_the_explicit_repeat(kv_heads, monkeypatch):
    """``enable_gqa`` (the flash path's grouped heads) against repeating each KV head over its query
    group, forward and backward, in fp32 and under bf16 autocast."""
    from pgolf.config import ModelConfig

    torch.manual_seed(0)
    attn = Attention(ModelConfig(model_dim=64, num_heads=4, num_kv_heads=kv_heads))
    attn.proj.weight.data.normal_(0, 0.1)
    x = torch.randn(2, 32, 64, requires_grad=True)
    cos, sin = rotary_tables(32, 16, 10_000.0, x.device)

    sdpa = F.scaled_dot_product_attention

    def repeat_sdpa(q, k, v, attn_mask=None, is_causal=True, enable_gqa=False):
        rep = q.size(1) // k.size(1)
        k, v = k.repeat_interleave(rep, 1), v.repeat_interleave(rep, 1)
        return sdpa(q, k, v, attn_mask=attn_mask, is_causal=is_causal)

    for amp in (False, True):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
            fused = attn(x, cos, sin)
            (gx,) = torch.autograd.grad(fused.float().square().sum(), x)
            with monkeypatch.context() as m:
                m.setattr(F, "scaled_dot_product_attention", repeat_sdpa)
                explicit = attn(x, cos, sin)
            (ex,) = torch.autograd.grad(explicit.float().square().sum(), x)
        tol = 2e-2 if amp else 1e-5
        assert torch.allclose(fused.float(), explicit.float(), atol=tol, rtol=tol)
        assert torch.allclose(gx, ex, atol=tol * 10, rtol=tol)


def _priming_restores_everything(cfg, tmp_path, backend: str) -> None:
    info = DistInfo(0, 1, 0, torch.device("cpu"))
    eager = Trainer(cfg, tmp_path / "eager", info, RunLog(None, echo=False), False)
    eager.setup()
    trainer = Trainer(cfg, tmp_path / "compiled", info, RunLog(None, echo=False), False)
    trainer.setup()
    trainer.compile(backend)
    start = copy.deepcopy(trainer.base_model.state_dict())
    trainer.prime()
    for k, v in trainer.base_model.state_dict().items():
        assert torch.equal(v, start[k]), k
    assert not trainer.opt.muon.state and not trainer.opt.adam.state  # momentum buffers undone too
    for step in range(3):  # the timed steps see the first batches from unprimed weights, as eager's do
        plan = eager.schedule.at(step, 0.0)
        a, b = eager.train_step(plan).item(), trainer.train_step(plan).item()
        # compiled kernels round differently; Adam's first steps (~sign(g)) amplify that on
        # near-zero gradients, so losses are compared, not weights
        assert b == pytest.approx(a, abs=1e-4), step


def test_compile_priming_restores_weights_optimizer_and_data(debug_cfg, tmp_path):
    _priming_restores_everything(debug_cfg(**{"train.warmup_steps": "3"}), tmp_path, "aot_eager")


@pytest.mark.slow
@INDUCTOR
def test_inductor_priming_restores_weights_optimizer_and_data(debug_cfg, tmp_path):
    _priming_restores_everything(debug_cfg(**{"train.warmup_steps": "3"}), tmp_path, "inductor")


def test_compile_cpu_compiles_in_setup_warns_of_short_priming_and_needs_a_compiler(
    debug_cfg, tmp_path, monkeypatch
):
    """train.compile_cpu wraps the model and Newton-Schulz on a CPU (the default stays eager); priming
    that covers fewer phases than the run has is logged (those graphs would compile on the clock);
    validation scores with the eager module; a machine without a C++ compiler is refused at setup,
    not at the first step."""
    import io

    from pgolf.errors import ConfigError

    info = DistInfo(0, 1, 0, torch.device("cpu"))
    logs = io.StringIO(), io.StringIO()
    eager = Trainer(
        debug_cfg(**{"train.warmup_steps": "0"}), tmp_path / "e", info, RunLog(None, stream=logs[0]), False
    )
    eager.setup()
    assert eager.model is eager.base_model and eager.opt.muon.ns is newton_schulz5
    eager.prime()
    cfg = debug_cfg(**{"train.compile_cpu": "true", "train.warmup_steps": "0"})
    trainer = Trainer(cfg, tmp_path / "c", info, RunLog(None, stream=logs[1]), False)
    trainer.setup()
    assert trainer.model is not trainer.base_model and trainer.opt.muon.ns is not newton_schulz5
    trainer.prime()
    assert "warning" not in logs[0].getvalue() and "warmup_steps 0, 1 phases" in logs[1].getvalue()

    def no_compiled_calls(*args):
        raise AssertionError("validation called the compiled module")

    # validation runs eager: a static whole-graph compile would recompile for each window shape (and
    # fail at the recompile limit, as it did at the end of a compiled cpu-best run)
    trainer.model = no_compiled_calls
    assert trainer.validate().val_bpb == eager.validate().val_bpb
    monkeypatch.setenv("CXX", "/nonexistent/g++")  # what inductor would run
    with pytest.raises(ConfigError, match="no C\\+\\+ compiler '/nonexistent/g\\+\\+'"):
        Trainer(cfg, tmp_path / "n", info, RunLog(None, echo=False), False).setup()


@pytest.mark.parametrize("amx", [True, False])
def test_cpu_bf16_autocasts_training_only_where_the_cpu_has_amx(debug_cfg, tmp_path, monkeypatch, amx):
    """train.cpu_bf16 runs the training steps' matmuls in bf16 on a CPU with AMX and falls back to fp32,
    with a log line, on one without (where bf16 matmuls would be slower than fp32); validation stays
    fp32 either way."""
    import io

    from pgolf import dist

    assert isinstance(dist.cpu_has_amx(), bool)  # this machine's answer, whatever it is
    monkeypatch.setattr(dist, "cpu_has_amx", lambda: amx)
    log = io.StringIO()
    cfg = debug_cfg(**{"train.cpu_bf16": "true", "train.warmup_steps": "0"})
    trainer = Trainer(cfg, tmp_path, DistInfo(0, 1, 0, torch.device("cpu")), RunLog(None, stream=log), False)
    trainer.setup()
    seen = []
    trainer.base_model.blocks[0].attn.c_q.register_forward_hook(lambda m, i, o: seen.append(o.dtype))
    loss = trainer.train_step(trainer.schedule.at(0, 0.0))
    assert torch.isfinite(loss) and seen == [torch.bfloat16 if amx else torch.float32] * trainer.accum
    assert all(p.dtype == torch.float32 and p.grad is None for p in trainer.base_model.parameters())
    assert ("bf16 autocast" if amx else "no AMX on this CPU: fp32") in log.getvalue()
    trainer.validate()
    assert seen[-1] == torch.float32
