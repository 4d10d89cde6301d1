import math

import pytest
import torch

from pgolf.config import ModelConfig, OptimConfig
from pgolf.model.gpt import GPT
from pgolf.optim import Muon, Optimizers, newton_schulz5, split_parameters
from pgolf.train.schedule import lr_multiplier, muon_momentum


@pytest.mark.parametrize("shape", [(64, 64), (48, 128), (192, 64)])
def test_newton_schulz_is_near_orthogonal(shape):
    torch.manual_seed(0)
    out = newton_schulz5(torch.randn(shape), steps=5)
    s = torch.linalg.svdvals(out)
    # NS5's quintic is tuned for speed, not exactness: singular values land in roughly [0.7, 1.2],
    # except the few tiny ones of a square Gaussian matrix (about 1/n), which 5 steps cannot lift
    assert s.max() < 1.25
    assert (s > 0.6).float().mean() >= 0.95
    assert out.shape == shape


def _ns5_by_svd(g: torch.Tensor, steps: int = 5) -> torch.Tensor:
    """NS5 acts on singular values alone: X = P diag(s) Q^T gives aX + (bA + cA^2)X = P diag(p(s)) Q^T
    with p(s) = a s + b s^3 + c s^5, from s = svd(g) / ||g||_F. Computed in float64 from an SVD."""
    a, b, c = 3.4445, -4.7750, 2.0315
    p_, s, qh = torch.linalg.svd(g.double(), full_matrices=False)
    s = s / (g.double().norm() + 1e-7)
    for _ in range(steps):
        s = a * s + b * s**3 + c * s**5
    return (p_ * s) @ qh


def test_newton_schulz_matches_its_singular_value_polynomial():
    torch.manual_seed(0)
    for shape in ((64, 64), (48, 128), (192, 64)):
        g = torch.randn(shape)
        assert torch.allclose(newton_schulz5(g, 5).double(), _ns5_by_svd(g), atol=2e-5)


def test_muon_step_matches_the_formula():
    """Two steps against a reference written independently: Nesterov momentum, the SVD form of NS5,
    the shape scale sqrt(max(1, rows/cols)) and decoupled weight decay."""
    torch.manual_seed(0)
    w = torch.nn.Parameter(torch.randn(96, 32))
    w0 = w.detach().clone().double()
    g1, g2 = torch.randn(96, 32), torch.randn(96, 32)
    opt = Muon([w], lr=0.1, momentum=0.9, backend_steps=5, ns_dtype=torch.float32, weight_decay=0.5)
    buf = torch.zeros_like(w0)
    expected = w0.clone()
    for g in (g1, g2):
        w.grad = g.clone()
        opt.step()
        buf = 0.9 * buf + g.double()
        expected = expected * (1 - 0.1 * 0.5) - 0.1 * _ns5_by_svd(g.double() + 0.9 * buf) * math.sqrt(96 / 32)
    assert torch.allclose(w.detach().double(), expected, atol=1e-4)


def test_parameter_groups():
    model = GPT(ModelConfig(num_layers=2, model_dim=64, num_heads=4, num_kv_heads=2, tie_embeddings=False))
    groups = {k: [n for n, _ in v] for k, v in split_parameters(model).items()}
    assert groups["embed"] == ["tok_emb.weight"] and groups["head"] == ["lm_head.weight"]
    assert "blocks.0.attn.c_q.weight" in groups["matrix"] and "blocks.1.mlp.proj.weight" in groups["matrix"]
    assert all(".resid_mix" not in n and "q_gain" not in n for n in groups["matrix"])
    assert {"skip_weights", "blocks.0.attn.q_gain", "blocks.0.resid_mix"} <= set(groups["control"])
    assert sum(len(v) for v in groups.values()) == len(list(model.parameters()))


def test_optimizers_apply_scheduled_lr():
    model = GPT(ModelConfig(num_layers=2, model_dim=64, num_heads=4, num_kv_heads=2))
    opt = Optimizers(model, OptimConfig(), tied=True, device=torch.device("cpu"))
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    opt.step(lr_mul=0.5, momentum=0.9)
    assert {g["lr"] for g in opt.adam.param_groups} == {0.025, 0.02}
    assert opt.muon.param_groups[0]["lr"] == 0.02 and opt.muon.param_groups[0]["momentum"] == 0.9


def _iter_mode(step, **kw):
    return lr_multiplier(step, 0.0, iterations=100, max_wallclock_ms=0.0, cfg=OptimConfig(**kw))


def test_iteration_warmdown():
    assert _iter_mode(0, warmdown_iters=20) == 1.0
    assert _iter_mode(79, warmdown_iters=20) == 1.0
    assert _iter_mode(80, warmdown_iters=20) == 1.0
    assert _iter_mode(90, warmdown_iters=20) == pytest.approx(0.5)
    assert _iter_mode(100, warmdown_iters=20) == 0.0
    assert _iter_mode(75, warmdown_frac=0.5) == pytest.approx(0.5)


def test_warmdown_longer_than_the_run_is_clamped():
    """The contest script would start at 100/1200; the clamped schedule starts at 1, ends at 0."""
    assert _iter_mode(0, warmdown_iters=1200) == 1.0
    assert _iter_mode(50, warmdown_iters=1200) == pytest.approx(0.5)
    cfg = OptimConfig(warmdown_iters=1200)
    # wall clock: 1200 steps x 100 ms = 120 s of warmdown in a 60 s budget -> the whole budget
    first = lr_multiplier(1, 100.0, iterations=10_000, max_wallclock_ms=60_000.0, cfg=cfg)
    mid = lr_multiplier(300, 30_000.0, iterations=10_000, max_wallclock_ms=60_000.0, cfg=cfg)
    assert first == pytest.approx(59_900 / 60_000) and mid == pytest.approx(0.5)


def test_wallclock_warmdown_follows_remaining_time():
    cfg = OptimConfig(warmdown_iters=100)  # 100 steps x 10 ms = 1 s of warmdown
    assert lr_multiplier(500, 5_000.0, iterations=10**6, max_wallclock_ms=10_000.0, cfg=cfg) == 1.0
    assert lr_multiplier(950, 9_500.0, iterations=10**6, max_wallclock_ms=10_000.0, cfg=cfg) == pytest.approx(
        0.5
    )
    frac = OptimConfig(warmdown_frac=0.25)
    assert lr_multiplier(1, 8_750.0, iterations=10**6, max_wallclock_ms=10_000.0, cfg=frac) == pytest.approx(
        0.5
    )
    assert lr_multiplier(1, 11_000.0, iterations=10**6, max_wallclock_ms=10_000.0, cfg=frac) == 0.0


def test_momentum_warmup():
    cfg = OptimConfig(muon_momentum=0.95, muon_momentum_warmup_start=0.85, muon_momentum_warmup_steps=500)
    assert muon_momentum(0, cfg) == pytest.approx(0.85)
    assert muon_momentum(250, cfg) == pytest.approx(0.90)
    assert muon_momentum(5000, cfg) == pytest.approx(0.95)
