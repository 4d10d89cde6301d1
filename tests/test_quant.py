"""Rounding grids, the export policy, state dicts and QAT equivalence (seed-techniques §9)."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from pgolf.config import ModelConfig, QuantConfig
from pgolf.model.gpt import GPT
from pgolf.model.params import count_parameters, param_roles
from pgolf.quant.export import dequantize_state_dict, quantize_state_dict
from pgolf.quant.grid import SEARCH_QUANTILES, GridSpec, dequantize, fake_quant, quantize, quantize_rows
from pgolf.quant.policy import FORMATS, scheme_label, tensor_format

CONTEST_Q = 0.9999984


def contest_quantize_float_tensor(t: torch.Tensor):
    """The contest's ``quantize_float_tensor`` as seed-techniques §9.1 specifies it, written out here:
    clip at the row quantile, fp32 scale max(c/127, 1/127) for the rounding, fp16 scale stored."""
    t32 = t.float()
    if t32.ndim == 2:
        clip_abs = torch.quantile(t32.abs(), CONTEST_Q, dim=1)
        clipped = torch.maximum(torch.minimum(t32, clip_abs[:, None]), -clip_abs[:, None])
        scale = (clip_abs / 127.0).clamp_min(1.0 / 127.0)
        q = torch.clamp(torch.round(clipped / scale[:, None]), -127, 127).to(torch.int8)
        return q, scale.to(torch.float16)
    clip_abs = float(torch.quantile(t32.abs().flatten(), CONTEST_Q).item())
    scale = torch.tensor(clip_abs / 127.0 if clip_abs > 0 else 1.0, dtype=torch.float32)
    q = torch.clamp(torch.round(torch.clamp(t32, -clip_abs, clip_abs) / scale), -127, 127).to(torch.int8)
    return q, scale


def test_int8_contest_reproduces_the_contest_quantizer_on_a_state_dict():
    torch.manual_seed(0)
    model = GPT(ModelConfig(vocab_size=1024, num_layers=2, model_dim=256, num_heads=4, num_kv_heads=2))
    for p in model.parameters():
        p.data.normal_(0, 0.05)
    state = {**model.state_dict(), "extra.conv": torch.randn(4, 130, 130) * 0.02}  # a non-2-D tensor
    cfg = QuantConfig(keep_float_max_numel=16_384)
    entries, stats = quantize_state_dict(state, {**param_roles(model), "extra.conv": "matrix"}, cfg)
    quantised = 0
    for name, t in state.items():
        e = entries[name]
        if t.numel() <= cfg.keep_float_max_numel:
            assert e.kind == "raw"
            continue
        q, scale = contest_quantize_float_tensor(t)
        assert torch.equal(e.data, q) and torch.equal(e.scale, scale), name
        quantised += 1
    assert quantised >= 8 and stats.contest_rows > 0


def test_int_grids_by_hand():
    w = torch.tensor([[0.62, -0.31, 0.0, 0.1], [0.001, -0.002, 0.003, 0.0]])
    q, s = quantize_rows(w, GridSpec("int6", "max"))
    s0 = torch.tensor(0.62 / 31).half()
    # with the fp16 scale 0.0200043: 0.62/s = 30.99, -0.31/s = -15.50 (just above: -15), 0.1/s = 4.999
    assert s[0] == s0 and q[0].tolist() == [31, -15, 0, 5]
    assert q.abs().max() <= 31 and q[1].abs().max() == 31  # tiny rows use their own scale: no floor
    q4, _ = quantize_rows(w, GridSpec("int4", "max"))
    assert q4.abs().max() == 7 and q4.min() >= -7


@pytest.mark.parametrize("fmt", ["int8", "int7", "int6", "int5", "int4"])
@pytest.mark.parametrize("clip", ["max", "percentile", "sdclip", "search"])
def test_grid_codes_stay_in_range_and_reconstruct_within_half_a_step(fmt, clip):
    torch.manual_seed(1)
    w = torch.randn(32, 96) * torch.logspace(-2, 0, 32)[:, None]
    spec = GridSpec(fmt, clip, 0.999, 3.0)
    e = quantize(w, spec)
    assert e.kind == "row" and e.data.abs().max() <= spec.qmax and e.scale.dtype == torch.float16
    deq = dequantize(e)
    inside = w.abs() <= e.scale.float()[:, None] * spec.qmax  # values the grid covers (not clipped)
    assert ((deq - w).abs()[inside] <= e.scale.float()[:, None].expand_as(w)[inside] / 2 + 1e-7).all()


def test_search_clip_is_never_worse_than_any_candidate():
    torch.manual_seed(2)
    w = torch.randn(16, 256) ** 3  # heavy tails: the best clip differs between rows
    err = ((dequantize(quantize(w, GridSpec("int6", "search"))) - w) ** 2).sum(1)
    for q in SEARCH_QUANTILES:
        other = ((dequantize(quantize(w, GridSpec("int6", "percentile", q))) - w) ** 2).sum(1)
        assert (err <= other + 1e-9).all()


def test_sdclip_clip_is_k_times_the_row_rms():
    torch.manual_seed(3)
    w = torch.randn(8, 512)
    w[0] = 0.25 + 1e-4 * torch.randn(512)  # a row far from zero-mean: its spread about the grid's 0
    _, s = quantize_rows(w, GridSpec("int6", "sdclip", k=2.0))
    assert torch.allclose(s.float(), (2.0 * w.pow(2).mean(1).sqrt() / 31).half().float())
    assert torch.allclose(dequantize(quantize(w, GridSpec("int6", "sdclip", k=2.0)))[0], w[0], atol=0.01)


@pytest.mark.parametrize("fmt", ["int8-contest", "int6", "int5"])
def test_fake_quant_forward_is_the_exported_weight_and_its_gradient_passes_through(fmt):
    torch.manual_seed(4)
    w = torch.randn(24, 64, requires_grad=True)
    spec = GridSpec(fmt, "percentile", 0.9999)
    out = fake_quant(w, spec)
    assert torch.equal(out, dequantize(quantize(w.detach(), spec)))
    (out * torch.arange(64.0)).sum().backward()
    assert torch.equal(w.grad, torch.arange(64.0).expand(24, 64))


def test_policy_routing():
    model = GPT(ModelConfig(vocab_size=1024, num_layers=2, model_dim=128, num_heads=4, num_kv_heads=2))
    state = model.state_dict()
    cfg = QuantConfig(keep_float_max_numel=20_000, matrix="int6", mlp="int5", embed="int7",
                      keep_fp16="blocks.1.attn.c_k")  # fmt: skip
    roles = param_roles(model)

    def fmt(name: str) -> str:
        return tensor_format(name, state[name], roles[name], cfg)

    assert fmt("tok_emb.weight") == "int7" and fmt("blocks.0.mlp.fc.weight") == "int5"
    assert fmt("blocks.0.attn.c_q.weight") == "fp16"  # small
    assert fmt("blocks.0.resid_mix") == "fp32"  # control
    assert fmt("blocks.1.attn.c_k.weight") == "fp16"
    assert tensor_format("x", torch.arange(3), "control", cfg) == "exact"
    assert {fmt(k) for k in state} <= set(FORMATS)
    entries, stats = quantize_state_dict(state, roles, cfg)
    assert (
        entries["blocks.0.mlp.fc.weight"].fmt == "int5"
        and entries["blocks.0.mlp.fc.weight"].data.abs().max() <= 15
    )
    assert sum(stats.params.values()) == count_parameters(model)
    assert (
        scheme_label(cfg, "zstd") == "int6-int5-int7_zstd"
        and scheme_label(QuantConfig(), "zlib") == "int8_zlib"
    )


@settings(max_examples=30, deadline=None)
@given(rows=st.integers(1, 20), cols=st.integers(1, 20), seed=st.integers(0, 10**6))
def test_dequantised_values_stay_within_half_a_step_of_the_clipped_input(rows, cols, seed):
    """pgolf's grids round with the scale they store, so every value is within half a step. (Not
    int8-contest, which rounds with the fp32 scale and reloads with the fp16 one, as the contest does.)"""
    g = torch.Generator().manual_seed(seed)
    state = {"w": torch.randn(rows, cols, generator=g) * 3, "v": torch.randn(cols, generator=g)}
    cfg = QuantConfig(keep_float_max_numel=10, clip_quantile=1.0, matrix="int8", clip="max")
    entries, _ = quantize_state_dict(state, {"w": "matrix", "v": "control"}, cfg)
    back = dequantize_state_dict(entries)
    for k, v in state.items():
        e = entries[k]
        if e.kind == "raw":
            assert torch.equal(back[k], v.to(e.data.dtype).float())
        else:
            step = e.scale.float()[:, None] if e.kind == "row" else e.scale.float()
            assert ((back[k] - v).abs() <= step / 2 + 1e-6).all()


def _correlated_layer(rows: int = 48, cols: int = 96, n: int = 4096):
    g = torch.Generator().manual_seed(7)
    mix = torch.randn(cols, cols, generator=g) / cols**0.5 + torch.eye(cols)
    x = torch.randn(n, cols, generator=g) @ mix * torch.linspace(0.2, 3.0, cols)  # correlated, uneven scales
    w = torch.randn(rows, cols, generator=g) * 0.05
    return x, w


@pytest.mark.parametrize("fmt", ["int4", "int6", "int8-contest"])
def test_gptq_lowers_the_layer_output_error_against_round_to_nearest(fmt):
    from pgolf.quant.gptq import gptq_quantize

    x, w = _correlated_layer()
    h = x.T @ x / x.shape[0]
    spec = GridSpec(fmt, "max") if fmt != "int8-contest" else GridSpec(fmt)
    rtn = dequantize(quantize(w, spec))
    gq = gptq_quantize(w, h, spec, block=32, damp=0.01)
    assert gq.kind == "row" and gq.fmt == fmt and gq.data.abs().max() <= spec.qmax
    assert torch.equal(gq.scale, quantize(w, spec).scale)  # same grid: only the codes move
    err = lambda what: float(((x @ (w - what).T) ** 2).mean())  # noqa: E731
    assert err(dequantize(gq)) < 0.8 * err(rtn)


def test_gptq_with_an_identity_hessian_is_round_to_nearest():
    from pgolf.quant.gptq import gptq_quantize

    _, w = _correlated_layer()
    spec = GridSpec("int5", "percentile", 0.999)
    gq = gptq_quantize(w, torch.eye(w.shape[1]), spec, block=16, damp=0.0)
    assert torch.equal(gq.data, quantize(w, spec).data)


def test_hessians_are_the_input_second_moments():
    from pgolf.model.layers import Linear
    from pgolf.quant.gptq import collect_hessians

    class Toy(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = Linear(8, 4)

        def forward(self, x):
            return self.fc(x)

    torch.manual_seed(8)
    batches = [torch.randn(3, 5, 8) for _ in range(4)]
    hs = collect_hessians(Toy(), {"fc.weight"}, batches)
    x = torch.cat([b.reshape(-1, 8) for b in batches])
    assert torch.allclose(hs["fc.weight"], x.T @ x / x.shape[0], atol=1e-5)


@pytest.mark.arith
def test_hessians_under_bf16_autocast_are_fp32_statistics():
    """Calibration runs inside the training autocast (bf16 on CUDA; its CPU twin here): the forward may
    be bf16, but each x^T x must be an fp32 GEMM into an fp32 sum. A bf16 GEMM into a bf16 sum is off
    by ~1 % per entry, as much as GPTQ's damping."""
    from pgolf.quant.gptq import collect_hessians

    torch.manual_seed(8)
    model = GPT(ModelConfig(vocab_size=256, num_layers=2, model_dim=128, num_heads=4, num_kv_heads=2))
    for p in model.parameters():
        p.data.normal_(0, 0.05)
    names = {"blocks.1.mlp.fc.weight", "blocks.0.attn.c_q.weight"}
    batches = [torch.randint(0, 256, (4, 64)) for _ in range(8)]
    inputs: dict[str, list] = {n: [] for n in names}
    hooks = [
        model.get_submodule(n.removesuffix(".weight")).register_forward_hook(
            lambda m, i, o, n=n: inputs[n].append(i[0].detach().float().reshape(-1, i[0].shape[-1]))
        )
        for n in names
    ]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        hs = collect_hessians(model, names, batches)
    for h in hooks:
        h.remove()
    for n in names:
        x = torch.cat(inputs[n]).double()
        want = x.T @ x / x.shape[0]
        assert hs[n].dtype == torch.float32
        assert float((hs[n].double() - want).norm() / want.norm()) < 1e-5, n


def test_gptq_escalates_damping_and_never_loses_the_weights():
    """A singular H (fewer samples than columns, a repeated column) with no damping: GPTQ retries with
    more (recorded); a non-finite H falls back to round-to-nearest (recorded as -1); neither raises."""
    from pgolf.quant.gptq import gptq_quantize

    x, w = _correlated_layer()
    x = x[:8].clone()
    x[:, 1] = x[:, 0]
    spec = GridSpec("int6", "max")
    damped: dict[str, float] = {}
    gq = gptq_quantize(w, x.T @ x / 8, spec, damp=0.0, damped=damped, name="w")
    assert 0 < damped["w"] <= 1.0 and gq.data.abs().max() <= spec.qmax
    assert float((dequantize(gq) - w).abs().max()) < 0.5  # a real rounding, not noise
    nan = torch.full((w.shape[1], w.shape[1]), float("nan"))
    gq = gptq_quantize(w, nan, spec, damped=damped, name="v")
    assert damped["v"] == -1.0 and torch.equal(gq.data, quantize(w, spec).data)
    cfg = QuantConfig(matrix="int6", gptq=True, keep_float_max_numel=0)
    _, stats = quantize_state_dict(
        {"blocks.0.mlp.fc.weight": w},
        {"blocks.0.mlp.fc.weight": "matrix"},
        cfg,
        hessians={"blocks.0.mlp.fc.weight": nan},
    )
    assert stats.gptq_damped == {"blocks.0.mlp.fc.weight": -1.0}
    assert "gptq_more_damping:blocks.0.mlp.fc.weight=-1" in stats.summary()


def test_qat_forward_weights_are_the_exported_dequantised_weights():
    from pgolf.model.layers import Linear
    from pgolf.quant.qat import enable_qat

    torch.manual_seed(9)
    cfg = QuantConfig(keep_float_max_numel=2_000, matrix="int6", mlp="int5", clip="sdclip")
    model = GPT(ModelConfig(vocab_size=256, num_layers=2, model_dim=64, num_heads=4, num_kv_heads=2))
    for p in model.parameters():
        p.data.normal_(0, 0.05)
    ids = torch.randint(0, 256, (2, 16))
    before = model(ids)
    assert enable_qat(model, cfg) == 2 * 6  # q, k, v, o, fc, proj in each block
    entries, _ = quantize_state_dict(model.state_dict(), param_roles(model), cfg)
    for name, module in model.named_modules():
        if isinstance(module, Linear) and module.weight_fn is not None:
            assert torch.equal(module.weight_fn(module.weight), dequantize(entries[f"{name}.weight"])), name
    model.train()
    assert not torch.allclose(model(ids), before)  # QAT changes the training forward
    model.eval()
    assert torch.equal(model(ids), before)  # and never the eval forward


def test_noisy_qat_adds_at_most_half_a_grid_step_per_row_to_the_shared_blocks_only():
    """Noisy QAT (§7.11): the training forward's weight is W + (U - 0.5) * step_row, step_row the
    export's row scale (so |noise| <= step/2 and the noise spans the grid cell); the gradient is the
    identity's; with qat_scope=shared only the recurrent (or looped) blocks' Linears get it."""
    from pgolf.config.run import RunConfig
    from pgolf.errors import ConfigError
    from pgolf.model.layers import Linear
    from pgolf.quant.grid import noisy_quant, row_grid
    from pgolf.quant.qat import enable_qat

    torch.manual_seed(3)
    w = torch.randn(32, 48, requires_grad=True)
    spec = GridSpec("int6", "sdclip", 1.0, 12.85)
    step = row_grid(w.detach(), spec)[2]
    noisy = noisy_quant(w, spec)
    delta = (noisy - w).detach()
    assert (delta.abs() <= step[:, None] / 2 + 1e-7).all()
    assert (delta.amax(1) - delta.amin(1) > 0.8 * step).all()  # spread over most of the cell
    noisy.sum().backward()
    assert torch.equal(w.grad, torch.ones_like(w))
    cfg = QuantConfig(keep_float_max_numel=2_000, matrix="int8", qat=True, qat_noise=True, qat_scope="shared")
    looped = GPT(ModelConfig(vocab_size=256, num_layers=4, model_dim=64, num_heads=4, num_kv_heads=2,
                             loop_start=1, loop_end=3, loop_repeats=1))  # fmt: skip
    assert looped.shared_blocks() == [1, 2] and enable_qat(looped, cfg) == 2 * 6
    hooked = {n.split(".")[1] for n, m in looped.named_modules() if isinstance(m, Linear) and m.weight_fn}
    assert hooked == {"1", "2"}
    recurrent = GPT(ModelConfig(vocab_size=256, num_layers=6, recurrent_blocks=2, model_dim=64, num_heads=4,
                                num_kv_heads=2))  # fmt: skip
    assert recurrent.shared_blocks() == [0, 1] and enable_qat(recurrent, cfg) == 2 * 6
    ids = torch.randint(0, 256, (2, 16))
    recurrent.eval()
    before = recurrent(ids)
    recurrent.train()
    assert not torch.allclose(recurrent(ids), before)  # noise in the training forward
    recurrent.eval()
    assert torch.equal(recurrent(ids), before)  # never in the eval forward
    flat = ModelConfig(vocab_size=256, num_layers=2, model_dim=64, num_heads=4, num_kv_heads=2)
    with pytest.raises(ConfigError, match="qat_scope=shared: this model has no block that runs twice"):
        RunConfig(model=flat, quant=cfg)
    with pytest.raises(ConfigError, match=r"qat_scope='some'"):
        QuantConfig(qat_scope="some")
