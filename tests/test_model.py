import copy
import dataclasses
import io

import pytest
import torch
from torch import nn

from pgolf.config import ModelConfig
from pgolf.model.gpt import GPT
from pgolf.model.layers import apply_rotary, rotary_tables
from pgolf.model.params import declare, param_roles
from pgolf.optim import split_parameters
from pgolf.tools.packtool import model_roles

TINY = ModelConfig(vocab_size=64, num_layers=3, model_dim=32, num_heads=4, num_kv_heads=2)


def _randomised(cfg: ModelConfig) -> GPT:
    torch.manual_seed(0)
    model = GPT(cfg)
    for p in model.parameters():  # the zero-init projections would hide most of the network
        p.data.normal_(0, 0.3)
    return model


@pytest.mark.parametrize(
    "cfg",
    [
        TINY,
        ModelConfig(
            vocab_size=64, num_layers=2, model_dim=32, num_heads=4, num_kv_heads=4, tie_embeddings=False
        ),
    ],
)
def test_causality(cfg):
    """Changing token t+1 never changes the logits at positions <= t."""
    model = _randomised(cfg).eval()
    ids = torch.randint(0, 64, (2, 16))
    base = model.logits(ids)
    for t in (0, 7, 14):
        changed = ids.clone()
        changed[:, t + 1] = (changed[:, t + 1] + 1) % 64
        out = model.logits(changed)
        assert torch.equal(out[:, : t + 1], base[:, : t + 1])
        assert not torch.allclose(out[:, t + 1 :], base[:, t + 1 :])


def test_init_matches_the_contest():
    model = GPT(ModelConfig())
    for block in model.blocks:
        assert not block.attn.proj.weight.any() and not block.mlp.proj.weight.any()
        assert torch.equal(block.resid_mix[0], torch.ones(512)) and not block.resid_mix[1].any()
        assert torch.equal(block.attn.q_gain, torch.full((8,), 1.5))
    assert model.skip_weights.shape == (4, 512) and bool((model.skip_weights == 1).all())
    assert model.tok_emb.weight.std().item() == pytest.approx(0.005, rel=0.02)
    assert model.lm_head is None  # tied


def test_zero_projections_make_init_logits_depend_only_on_the_current_token():
    model = GPT(TINY).eval()
    ids = torch.randint(0, 64, (1, 12))
    other = ids.clone()
    other[0, :5] = (other[0, :5] + 3) % 64
    # blocks add zero at init, so position t sees only rms_norm(emb[ids[t]])
    assert torch.allclose(model.logits(ids)[0, 5:], model.logits(other)[0, 5:])


def test_rotary_half_split_convention():
    x = torch.randn(1, 1, 5, 8)
    cos, sin = rotary_tables(5, 8, 10_000.0, torch.device("cpu"))
    out = apply_rotary(x, cos, sin)
    for t in range(5):
        for j in range(4):
            theta = t * 10_000.0 ** (-2 * j / 8)
            x1, x2 = x[0, 0, t, j], x[0, 0, t, j + 4]
            c, s = torch.cos(torch.tensor(theta)), torch.sin(torch.tensor(theta))
            assert out[0, 0, t, j] == pytest.approx(float(x1 * c + x2 * s), abs=1e-5)
            assert out[0, 0, t, j + 4] == pytest.approx(float(-x1 * s + x2 * c), abs=1e-5)


def test_loss_is_softcapped_fp32_cross_entropy():
    model = _randomised(TINY)
    ids, tgt = torch.randint(0, 64, (2, 10)), torch.randint(0, 64, (2, 10))
    logits = model.logits(ids)
    assert logits.abs().max() <= TINY.logit_softcap
    assert torch.equal(model(ids), logits)  # without targets the module returns the logits
    z = logits.double()  # mean of -(z_y - log sum_v exp z_v), written out in float64
    manual = -(z.gather(-1, tgt[..., None])[..., 0] - z.exp().sum(-1).log()).mean()
    assert model(ids, tgt).item() == pytest.approx(manual.item(), rel=1e-6)


def test_a_parameter_without_a_declared_role_is_an_error_not_a_guess():
    """The attention gate is a 2-D ``weight`` in a block, the shape and place of a Muon matrix: were
    roles guessed from names, a gate losing its rule would silently turn into a quantised matrix."""
    model = GPT(TINY)
    model.blocks[0].attn.extra = nn.Parameter(torch.zeros(4, 4))
    with pytest.raises(ValueError, match=r"parameter blocks\.0\.attn\.extra has no declared role"):
        param_roles(model)
    with pytest.raises(ValueError, match="has no declared role"):
        split_parameters(model)
    declare(model.blocks[0].attn, extra="control")
    assert param_roles(model)["blocks.0.attn.extra"] == "control"
    with pytest.raises(ValueError, match="each must be one of"):
        declare(model, skip_weights="gate")


def test_roles_survive_copies_moves_reloads_and_compile():
    """Roles live on the owning modules, so every way the code copies or rebuilds a model keeps them,
    including deepcopy and device moves that replace the Parameter objects."""
    cfg = dataclasses.replace(TINY, attn_gate="output", tie_embeddings=False)
    model = GPT(cfg)
    want = param_roles(model)
    assert want == model_roles(cfg)  # the meta-device build that weight-file readers use
    assert want["blocks.0.attn.gate.weight"] == "control" and want["lm_head.weight"] == "head"
    buf = io.BytesIO()
    torch.save(model, buf)
    buf.seek(0)
    reloaded = GPT(cfg)
    reloaded.load_state_dict(copy.deepcopy(model.state_dict()))
    for other in (
        copy.deepcopy(model), torch.load(buf, weights_only=False), reloaded, copy.deepcopy(model).to("meta"),
        copy.deepcopy(model).to(torch.bfloat16), copy.deepcopy(model).to("meta").to_empty(device="cpu"),
    ):  # fmt: skip
        assert param_roles(other) == want
    assert param_roles(torch.compile(model)) == {f"_orig_mod.{n}": r for n, r in want.items()}
