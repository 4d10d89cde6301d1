"""The seed records' techniques (seed-techniques §6-8): shapes, causality, init properties, arithmetic."""

import math

import pytest
import torch

from pgolf.config import ModelConfig, OptimConfig, TrainConfig
from pgolf.errors import ConfigError
from pgolf.model.gpt import GPT
from pgolf.model.inputs import BigramHash, SmearGate
from pgolf.model.layers import MLP, apply_rotary, exclusive_self_attention, ntk_base, rotary_tables
from pgolf.optim import Muon, Optimizers, split_parameters
from pgolf.train.averaging import WeightAverage
from pgolf.vocab import BOS_ID

SMALL = {"vocab_size": 64, "num_layers": 4, "model_dim": 64, "num_heads": 4, "num_kv_heads": 2}
VARIANTS = {
    "relu2": {},
    "leaky_relu2": {"mlp_activation": "leaky_relu2"},
    "swiglu": {"mlp_activation": "swiglu", "mlp_mult": 3.0},
    "xsa": {"xsa_last_n": 2},
    "partial_rope_ln_scale_ntk": {"rope_dims": 8, "ln_scale": True, "rope_ntk_seq_len": 8},
    "smear_bigram": {"smear_gate": True, "bigram_buckets": 97, "bigram_dim": 16},
    "ortho_bigram": {"ortho_init": True, "bigram_buckets": 97, "bigram_dim": 64},
    "recurrent": {"num_layers": 6, "recurrent_blocks": 3},
    "middle_loop": {"loop_start": 1, "loop_end": 3, "loop_repeats": 2},
    # the final frontier's additions (sota-stack §2.2; tests/test_frontier.py)
    "skip_gates": {"skip_gates": True},
    "two_lane": {"num_layers": 6, "parallel_from": 4},
    "gate_output": {"attn_gate": "output"},
    "gate_dense": {"attn_gate": "dense"},
    "gate_sparse": {"attn_gate": "sparse"},
    "value_embed": {"value_embed_dim": 16, "value_embed_layers": 2},
    "window_smear": {"smear_gate": True, "smear_gate_window": 12},
    "asym_caps": {"logit_cap_asym": True},
    "doc_mask": {"doc_mask": True, "smear_gate": True, "bigram_buckets": 97, "bigram_dim": 16},
    # seed 003's proposals (tests/test_seed_proposals.py)
    "micronorm": {"micronorm": True, "micronorm_block": 8},
    "cpmr": {"cpmr": True},
    "cpmr_recurrent": {"num_layers": 6, "recurrent_blocks": 3, "cpmr": True, "micronorm": True},
    "qk_temp_split": {"qk_temp_split": True},
    "qk_temp_split_partial": {"qk_temp_split": True, "rope_dims": 8},
    "frontier_all": {
        "num_layers": 6, "skip_gates": True, "parallel_from": 4, "attn_gate": "sparse", "value_embed_dim": 16,
        "smear_gate": True, "smear_gate_window": 12, "logit_cap_asym": True, "xsa_last_n": 6,
        "loop_start": 1, "loop_end": 3, "loop_repeats": 2, "rope_dims": 8, "ln_scale": True, "doc_mask": True,
    },
}  # fmt: skip


def _model(**kw) -> GPT:
    torch.manual_seed(0)
    model = GPT(ModelConfig(**{**SMALL, **kw}))
    model.looping = True
    for p in model.parameters():  # non-zero everywhere, so every path carries signal
        p.data.normal_(0, 0.2)
    return model.eval()


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_causality_of_every_variant(name):
    model = _model(**VARIANTS[name])
    ids = torch.randint(2, 64, (2, 16))
    ids[:, 6] = BOS_ID
    base = model.logits(ids)
    for t in (0, 5, 6, 12):
        changed = ids.clone()
        changed[:, t + 1] = (changed[:, t + 1] + 1) % 64
        out = model.logits(changed)
        assert torch.equal(out[:, : t + 1], base[:, : t + 1]), f"position <= {t} saw token {t + 1}"
        assert not torch.allclose(out[:, t + 1 :], base[:, t + 1 :])


def test_smeargate_and_bigram_do_not_cross_documents():
    smear = SmearGate(8, init=0.0)
    x = torch.randn(1, 6, 8)
    ids = torch.tensor([[5, 7, BOS_ID, 9, 4, 3]])
    y = smear(x, ids)
    assert torch.equal(y[0, 2], x[0, 2])  # at BOS: the current token only
    assert torch.allclose(y[0, 3], 0.5 * x[0, 3] + 0.5 * x[0, 2])  # inside a document: the 50/50 blend
    assert torch.equal(y[0, 0], 0.5 * x[0, 0])  # no previous token at t = 0
    x2 = x.clone()
    x2[0, 1] += 1.0  # the last token of the previous document
    assert torch.equal(smear(x2, ids)[0, 2:], y[0, 2:])
    bigram = BigramHash(101, 4, 8, ortho=False, num_layers=2)
    h = bigram.bucket_ids(ids)
    assert h[0, 0] == 100 and h[0, 2] == 100
    other = ids.clone()
    other[0, 1] = 11
    assert torch.equal(bigram.bucket_ids(other)[0, 2:], h[0, 2:])
    assert h[0, 3] == (36313 * 9 ^ 27191 * BOS_ID) % 100  # PR162's hash


def test_bigram_branch_is_alive_at_init():
    for ortho in (True, False):
        model = GPT(ModelConfig(**{**SMALL, "bigram_buckets": 97, "bigram_dim": 64, "ortho_init": ortho}))
        ids = torch.randint(2, 64, (2, 16))
        model(ids, torch.randint(0, 64, (2, 16))).backward()
        table, proj = model.bigram.embed.weight.grad.norm(), model.bigram.proj.weight.grad.norm()
        assert (table > 0) if ortho else (proj > 0)  # the zero half always gets gradient
        assert not model.bigram(ids).any()  # zero contribution at init: the baseline function


def test_ortho_init_rule():
    cfg = ModelConfig(
        **{**SMALL, "model_dim": 128, "ortho_init": True, "bigram_buckets": 97, "bigram_dim": 64}
    )
    model = GPT(cfg)
    w = model.blocks[0].attn.c_q.weight
    assert torch.allclose(w @ w.T, torch.eye(128), atol=1e-5)
    assert not model.blocks[0].attn.proj.weight.any() and not model.blocks[0].mlp.proj.weight.any()
    p = model.bigram.proj.weight  # (128, 64): orthonormal columns scaled by 1/sqrt(2L)
    assert torch.allclose(p.T @ p, torch.eye(64) / (2 * cfg.num_layers), atol=1e-5)
    small = GPT(ModelConfig(**{**SMALL, "model_dim": 32, "ortho_init": True}))
    wq = small.blocks[0].attn.c_q.weight  # 32 < 64: default kaiming-uniform kept
    assert not torch.allclose(wq @ wq.T, torch.eye(32), atol=0.1)


def test_xsa_output_is_orthogonal_to_the_own_value():
    y, v = torch.randn(2, 4, 5, 8), torch.randn(2, 2, 5, 8)
    out = exclusive_self_attention(y, v)
    vg = torch.nn.functional.normalize(v, dim=-1).repeat_interleave(2, dim=1)
    assert (out * vg).sum(-1).abs().max() < 1e-5
    resid = y - out  # what was removed lies along v
    assert torch.allclose(resid, (y * vg).sum(-1, keepdim=True) * vg, atol=1e-6)


def test_partial_rope_and_ntk():
    x = torch.randn(1, 2, 6, 16)
    cos, sin = rotary_tables(6, 8, 10_000.0, torch.device("cpu"))
    out = apply_rotary(x, cos, sin)
    assert torch.equal(out[..., 8:], x[..., 8:])  # beyond rope_dims: position-free
    # within them: the pair (x_j, x_{j+4}) as a complex number, turned by -t * base^(-2j/8)
    t = torch.arange(6, dtype=torch.float64)[:, None]
    theta = t * 10_000.0 ** (-2 * torch.arange(4, dtype=torch.float64) / 8)
    z = torch.complex(x[..., :4].double(), x[..., 4:8].double()) * torch.exp(-1j * theta)
    assert torch.allclose(out[..., :4].double(), z.real, atol=1e-5)
    assert torch.allclose(out[..., 4:8].double(), z.imag, atol=1e-5)
    # seed-techniques §7.9 (derived): base at 2x the trained length is 20,452 (d=64), 22,082 (d=16)
    assert ntk_base(10_000.0, 64, 2048, 1024) == pytest.approx(20_452, abs=1)
    assert ntk_base(10_000.0, 16, 2048, 1024) == pytest.approx(22_082, abs=1)
    assert ntk_base(10_000.0, 64, 1024, 1024) == 10_000.0


def test_mlp_widths_and_activations():
    assert ModelConfig(mlp_mult=3.0, mlp_activation="swiglu").mlp_hidden == 1024  # §7.2, swapp1990
    assert ModelConfig(mlp_mult=2.6).mlp_hidden == 1331  # int(2.6 * 512), float multiplier
    x = torch.tensor([[-2.0, 3.0, 0.0, 1.0]])
    expected = {"relu2": [0.0, 9.0, 0.0, 1.0], "leaky_relu2": [1.0, 9.0, 0.0, 1.0]}  # 0.25 u^2 below 0
    for kind, want in expected.items():
        mlp = MLP(ModelConfig(model_dim=4, num_heads=2, num_kv_heads=1, mlp_mult=1.0, mlp_activation=kind))
        with torch.no_grad():
            mlp.fc.weight.copy_(torch.eye(4))
            mlp.proj.weight.copy_(torch.eye(4))
        assert mlp(x).tolist() == [want]
    swiglu = MLP(ModelConfig(model_dim=4, num_heads=2, num_kv_heads=1, mlp_mult=1.5, mlp_activation="swiglu"))
    with torch.no_grad():
        for lin in (swiglu.gate, swiglu.up):
            lin.weight.zero_()
            lin.weight[:4].copy_(torch.eye(4))
        swiglu.proj.weight.zero_()
        swiglu.proj.weight[:, :4].copy_(torch.eye(4))
    assert torch.allclose(swiglu(x), torch.nn.functional.silu(x) * x)


def test_ln_scale_multiplies_block_inputs():
    model = GPT(ModelConfig(**{**SMALL, "ln_scale": True}))
    assert [b.ln_mult for b in model.blocks] == pytest.approx([1 / math.sqrt(i + 1) for i in range(4)])


def test_recurrence_shares_blocks_and_starts_as_identity_adaln():
    three = GPT(ModelConfig(**{**SMALL, "num_layers": 9, "recurrent_blocks": 3}))
    five = GPT(ModelConfig(**{**SMALL, "num_layers": 15, "recurrent_blocks": 3}))
    assert len(three.blocks) == len(five.blocks) == 3
    per_loop = 2 * 64 + 64 + 1 * 64  # adaln (2d) + cycle gate (d) + one skip weight row (d)
    n3, n5 = (sum(p.numel() for p in m.parameters()) for m in (three, five))
    assert n5 - n3 == 2 * per_loop
    assert not three.adaln_params.any() and not three.cycle_gates.any()  # zero-init: gamma = beta = 0
    ids = torch.randint(2, 64, (1, 8))
    three(ids, torch.randint(0, 64, (1, 8))).backward()
    assert three.blocks[0].attn.c_q.weight.grad is not None  # one tensor, gradients from all loops


def test_middle_loop_order_and_switch():
    model = GPT(ModelConfig(**{**SMALL, "num_layers": 11, "loop_start": 3, "loop_end": 6, "loop_repeats": 2}))
    assert model.layer_order(looping=False) == list(range(11))
    assert model.layer_order(looping=True) == [0, 1, 2, 3, 4, 5, 3, 4, 5, 3, 4, 5, 6, 7, 8, 9, 10]
    assert model.skip_weights.shape == (8, 64)  # sized for the 17 virtual layers
    model = _model(loop_start=1, loop_end=3, loop_repeats=2)
    ids = torch.randint(2, 64, (1, 8))
    on = model.logits(ids)
    model.looping = False
    assert not torch.allclose(model.logits(ids), on)


def test_ema_and_swa_arithmetic():
    model = torch.nn.Linear(2, 1, bias=False)
    values = [1.0, 3.0, 5.0, 7.0]
    with torch.no_grad():
        model.weight.fill_(values[0])
    ema = WeightAverage(model, TrainConfig(averaging="ema", ema_decay=0.5))
    swa = WeightAverage(model, TrainConfig(averaging="swa", swa_every=2, swa_start_lr_mul=0.5))
    lr_muls = [1.0, 0.4, 0.3, 0.2]
    for step, (v, mul) in enumerate(zip(values, lr_muls, strict=True), 1):
        with torch.no_grad():
            model.weight.fill_(v)
        ema.update(model, step, mul)
        swa.update(model, step, mul)
    # ema: 1 -> .5*1+.5*1=1 -> .5*1+.5*3=2 -> .5*2+.5*5=3.5 -> .5*3.5+.5*7=5.25
    assert ema.apply(model) == "ema: decay 0.5" and model.weight[0, 0].item() == 5.25
    # swa collects at steps 2 and 4 (lr_mul < 0.5): (3 + 7) / 2
    assert swa.apply(model) == "swa: mean of 2 snapshots" and model.weight[0, 0].item() == 5.0
    few = WeightAverage(model, TrainConfig(averaging="swa", swa_every=100))
    few.update(model, 100, 0.1)
    assert "not applied" in few.apply(model)


def test_decoupled_weight_decay():
    torch.manual_seed(0)
    w = torch.nn.Parameter(torch.randn(8, 8))
    w0 = w.detach().clone()
    muon = Muon([w], lr=0.1, momentum=0.9, backend_steps=5, ns_dtype=torch.float32, weight_decay=0.5)
    w.grad = torch.zeros_like(w)  # zero update: only the decay acts
    muon.step()
    assert torch.allclose(w.detach(), w0 * (1 - 0.1 * 0.5))
    model = GPT(ModelConfig(**SMALL))
    opt = Optimizers(model, OptimConfig(adam_weight_decay=0.2), tied=True, device=torch.device("cpu"))
    emb0 = model.tok_emb.weight.detach().clone()
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    opt.step(lr_mul=0.5, momentum=0.9)  # AdamW: W <- W (1 - lr * wd), lr = 0.05 * 0.5
    assert torch.allclose(model.tok_emb.weight.detach(), emb0 * (1 - 0.025 * 0.2))


def test_bigram_parameters_follow_pr162_groups():
    model = GPT(ModelConfig(**{**SMALL, "bigram_buckets": 97, "smear_gate": True}))
    groups = {k: [n for n, _ in v] for k, v in split_parameters(model).items()}
    assert "bigram.embed.weight" in groups["embed"] and "bigram.proj.weight" in groups["matrix"]
    assert {"bigram.scale", "smear.gate"} <= set(groups["control"])


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"xsa_last_n": 5}, r"model\.xsa_last_n=5 exceeds model\.num_layers=4"),
        ({"recurrent_blocks": 3}, r"model\.recurrent_blocks=3 must divide model\.num_layers=4"),
        ({"loop_repeats": 1, "loop_start": 2, "loop_end": 9}, r"loop_start=2 / model\.loop_end=9"),
        ({"loop_repeats": 1, "loop_end": 2, "recurrent_blocks": 2}, "cannot be combined"),
        ({"rope_dims": 7}, r"model\.rope_dims=7 must be even"),
        ({"rope_dims": 32}, r"<= head_dim=16"),
        ({"rope_dims": 2, "rope_ntk_seq_len": 8}, r"more than 2 rotary dims"),
        ({"mlp_activation": "gelu"}, r"model\.mlp_activation='gelu'"),
        ({"bigram_buckets": 1}, "bigram_buckets must be 0 or >= 2"),
    ],
)
def test_incompatible_settings_fail_at_config_time(kw, message):
    with pytest.raises(ConfigError, match=message):
        ModelConfig(**{**SMALL, **kw})


def test_train_config_checks():
    with pytest.raises(ConfigError, match=r"train\.averaging='avg'"):
        TrainConfig(averaging="avg")
    with pytest.raises(ConfigError, match=r"train\.ema_decay in \(0, 1\)"):
        TrainConfig(ema_decay=1.0)
    with pytest.raises(ConfigError, match=r"train\.swa_every must be > 0"):
        TrainConfig(swa_every=0)
