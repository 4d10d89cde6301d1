"""Seed 003's four proposed techniques (issue 34): MicroNorm, CPMR, the dichotomous attention
temperature and NEKP. Their causality is in tests/test_techniques.py's variant list."""

import pytest
import torch

from pgolf.config import ModelConfig, OptimConfig, QuantConfig
from pgolf.errors import ConfigError
from pgolf.model.gpt import GPT
from pgolf.model.layers import document_starts, micro_norm, positional_channels, prefix_mean, rms_norm
from pgolf.optim import Optimizers
from pgolf.quant.qat import grid_linears, kurtosis_penalty, row_kurtosis
from pgolf.vocab import BOS_ID

SMALL = {"vocab_size": 64, "num_layers": 4, "model_dim": 64, "num_heads": 4, "num_kv_heads": 2}


def _pair(**kw) -> tuple[GPT, GPT]:
    """A baseline model and one with ``kw`` on, loaded with the baseline's weights (the option's own
    parameters keep their init)."""
    torch.manual_seed(0)
    base = GPT(ModelConfig(**SMALL))
    for p in base.parameters():
        p.data.normal_(0, 0.2)
    other = GPT(ModelConfig(**SMALL, **kw))
    _, unexpected = other.load_state_dict(base.state_dict(), strict=False)
    assert not unexpected
    return base.eval(), other.eval()


def test_micronorm_normalises_each_channel_block_on_its_own():
    x = torch.randn(2, 5, 12) * torch.linspace(0.1, 10, 12)
    y = micro_norm(x, 4)
    rms = y.unflatten(-1, (3, 4)).square().mean(-1).sqrt()
    assert torch.allclose(rms, torch.ones_like(rms), atol=1e-4)
    assert torch.allclose(micro_norm(x, 12), rms_norm(x))  # one block is the plain RMSNorm
    assert ModelConfig(**SMALL, micronorm=True).micronorm_channels == 16  # head_dim by default
    base, micro = _pair(micronorm=True, micronorm_block=16)
    ids = torch.randint(2, 64, (2, 16))
    assert not torch.allclose(base.logits(ids), micro.logits(ids))
    with pytest.raises(ConfigError, match=r"micronorm_block=24 must divide model\.model_dim=64"):
        ModelConfig(**SMALL, micronorm=True, micronorm_block=24)
    with pytest.raises(ConfigError, match=r"micronorm_block needs model\.micronorm = true"):
        ModelConfig(**SMALL, micronorm_block=16)


def test_prefix_mean_is_the_mean_of_the_earlier_positions_of_the_document():
    ids = torch.tensor([[7, 3, BOS_ID, 4, 4, 9, BOS_ID, 5]])
    assert document_starts(ids).tolist() == [[0, 0, 2, 2, 2, 2, 6, 6]]
    x = torch.randn(1, 8, 3)
    pm = prefix_mean(x, document_starts(ids))
    starts = [0, 0, 2, 2, 2, 2, 6, 6]
    for t, s in enumerate(starts):  # by hand: mean of x[s:t], zero at a document's first position
        want = x[0, s:t].mean(0) if t > s else torch.zeros(3)
        assert torch.allclose(pm[0, t], want, atol=1e-6), t
    x2 = x.clone()
    x2[0, :2] += 5.0  # the previous document
    # never across a BOS
    assert torch.allclose(prefix_mean(x2, document_starts(ids))[0, 2:], pm[0, 2:], atol=1e-6)
    # a long earlier document of large values does not reach a later one's mean through rounding
    long = torch.randn(1, 2010, 3)
    long[0, :2000] += 100.0
    ids = torch.full((1, 2010), 7)
    ids[0, 2000] = BOS_ID
    got = prefix_mean(long, document_starts(ids))[0, 2001:]
    want = torch.stack([long[0, 2000:t].mean(0) for t in range(2001, 2010)])
    assert torch.allclose(got, want, atol=1e-5)


def test_cpmr_starts_as_the_identity_and_its_gain_learns():
    base, cpmr = _pair(cpmr=True)
    ids = torch.randint(2, 64, (2, 16))
    ids[:, 6] = BOS_ID
    assert torch.allclose(base.logits(ids), cpmr.logits(ids), atol=1e-6)  # zero-initialised gains
    cpmr.train()
    cpmr(ids, torch.randint(0, 64, (2, 16))).backward()
    assert all(b.cpmr_gain.grad.abs().sum() > 0 for b in cpmr.blocks)
    with pytest.raises(ConfigError, match=r"cpmr cannot be combined with model\.parallel_from"):
        ModelConfig(**{**SMALL, "num_layers": 6}, cpmr=True, parallel_from=4)


def test_dichotomous_temperature_channels_and_how_it_differs_from_q_gain():
    # partial RoPE: the rotated channels; full RoPE: the faster half of the pairs (j, j + D/2)
    assert positional_channels(8, 4).tolist() == [True] * 4 + [False] * 4
    assert positional_channels(8, 8).tolist() == [True, True, False, False, True, True, False, False]
    base, split = _pair(qk_temp_split=True)
    ids = torch.randint(2, 64, (2, 16))
    assert torch.allclose(base.logits(ids), split.logits(ids))  # temperatures start at 1
    with torch.no_grad():  # equal temperatures c are q_gain x c: one temperature per head
        for b, s in zip(base.blocks, split.blocks, strict=True):
            s.attn.q_temp.fill_(1.7)
            b.attn.q_gain.mul_(1.7)
    assert torch.allclose(base.logits(ids), split.logits(ids), atol=1e-5)
    with torch.no_grad():  # unequal ones sharpen position and content differently: no q_gain does that
        for s in split.blocks:
            s.attn.q_temp[0].fill_(3.0)
    assert not torch.allclose(base.logits(ids), split.logits(ids), atol=1e-3)
    assert "q_temp_pos" not in split.state_dict()  # the channel mask is derived, never stored


def test_row_kurtosis_and_the_nekp_penalty():
    torch.manual_seed(1)
    normal, uniform = torch.randn(64, 4096), torch.rand(64, 4096) * 2 - 1
    assert abs(row_kurtosis(normal).mean().item() - 3.0) < 0.1
    assert abs(row_kurtosis(uniform).mean().item() - 1.8) < 0.05
    assert kurtosis_penalty([uniform], 3.0).item() == 0.0  # lighter tails than a normal: free
    spiky = uniform.clone().requires_grad_(True)
    with torch.no_grad():
        spiky[:, 0] = 40.0  # one outlier per row sets the row's clip
    penalty = kurtosis_penalty([spiky], 3.0)
    assert penalty.item() > 10
    penalty.backward()
    assert (spiky.grad[:, 0] > 0).all()  # descent pulls the outlier in
    with torch.no_grad():
        assert kurtosis_penalty([spiky - 0.5 * spiky.grad / spiky.grad.abs().max()], 3.0) < penalty


def test_nekp_reads_the_grid_quantised_linears_and_lowers_their_kurtosis_in_training():
    cfg = QuantConfig(keep_float_max_numel=2_000, matrix="int6", clip="sdclip", nekp=1.0)
    weights = {}
    for nekp in (0.0, 1.0):
        torch.manual_seed(4)
        model = GPT(ModelConfig(**SMALL))
        linears = grid_linears(model, cfg)
        assert len(linears) == 4 * 6  # q, k, v, o, fc, proj in each block
        opt = Optimizers(model, OptimConfig(), True, torch.device("cpu"))
        ws = [m.weight for m, _ in linears]
        for _ in range(30):
            ids = torch.randint(2, 64, (4, 32))
            loss = model(ids, torch.roll(ids, -1, 1))
            if nekp:
                loss = loss + nekp * kurtosis_penalty(ws, 3.0)
            loss.backward()
            opt.step(1.0, 0.95, 1.0)
            opt.zero_grad()
        weights[nekp] = kurtosis_penalty(ws, 3.0).item()
    assert weights[1.0] < weights[0.0]
    with pytest.raises(ConfigError, match=r"quant\.nekp"):
        QuantConfig(nekp=-1.0)


def test_the_trainer_adds_the_penalty_and_refuses_one_that_reads_nothing(debug_cfg, tmp_path):
    from pgolf.dist import DistInfo
    from pgolf.runlog import RunLog
    from pgolf.train.trainer import Trainer

    info = DistInfo(0, 1, 0, torch.device("cpu"))
    weights = []
    for nekp in ("0", "10"):  # target 1: the init's uniform rows (kurtosis 1.8) are penalised at once
        cfg = debug_cfg(**{"quant.matrix": "int6", "quant.keep_float_max_numel": "1000", "quant.nekp": nekp,
                           "quant.nekp_target": "1"})  # fmt: skip
        t = Trainer(cfg, tmp_path / nekp, info, RunLog(None, echo=False), False)
        t.setup()
        t.train_step(t.schedule.at(0, 0.0))
        weights.append(t.base_model.blocks[0].attn.c_q.weight.detach().clone())
    assert len(t.nekp.weights) == 12 and not torch.allclose(weights[0], weights[1])  # the penalty moved them
    cfg = debug_cfg(**{"quant.nekp": "0.1", "quant.keep_float_max_numel": "100000000"})
    with pytest.raises(ConfigError, match=r"quant\.nekp=0\.1: no Linear of this model is grid-quantised"):
        Trainer(cfg, tmp_path / "none", info, RunLog(None, echo=False), False).setup()
    with pytest.raises(ConfigError, match=r"qat_scope=shared: this model has no block that runs twice"):
        debug_cfg(**{"quant.nekp": "0.1", "quant.qat_scope": "shared"})
