"""The final frontier's model and optimizer additions (sota-stack §2.2, §2.3): identities at init,
equivalences, causality, document boundaries, parameter counts, schedules."""

import pytest
import torch

from pgolf.config import ModelConfig, OptimConfig, RunConfig, TrainConfig
from pgolf.errors import ConfigError, Interrupted
from pgolf.eval.sgd import trainable
from pgolf.model.gpt import GPT, loop_passes
from pgolf.model.inputs import WindowSmearGate
from pgolf.model.layers import AttentionGate, document_mask
from pgolf.optim import Muon, Optimizers, newton_schulz5, row_normalise, split_parameters
from pgolf.train.schedule import Schedule, lr_multiplier, weight_decay_multiplier
from pgolf.vocab import BOS_ID

SMALL = {"vocab_size": 64, "num_layers": 6, "model_dim": 64, "num_heads": 4, "num_kv_heads": 2}


def _model(randomise: bool = True, **kw) -> GPT:
    torch.manual_seed(0)
    model = GPT(ModelConfig(**{**SMALL, **kw}))
    model.looping = True
    if randomise:
        for p in model.parameters():  # non-zero everywhere, so every path carries signal
            p.data.normal_(0, 0.2)
    return model.eval()


def _copy(dst: GPT, src: GPT) -> None:
    """src's weights into dst wherever the names match (dst's own extra tensors keep their values)."""
    theirs = src.state_dict()
    dst.load_state_dict({k: theirs.get(k, v) for k, v in dst.state_dict().items()})


def _same_logits(a: GPT, b: GPT, ids: torch.Tensor, exact: bool = False) -> None:
    za, zb = a.logits(ids), b.logits(ids)
    if exact:
        assert torch.equal(za, zb)
    else:
        torch.testing.assert_close(za, zb, rtol=1e-5, atol=1e-5)


def test_two_lane_routing_reads_and_writes():
    """PR #1529's final form: attention reads only lane 0 (and x0), the MLP only lane 1, both from the
    block's input; lane j = resid[j] lane_j + post[attn, j] a + post[mlp, j] m."""
    block = _model(parallel_from=5).blocks[5]
    lane0, lane1, x0, d = (torch.randn(1, 5, 64) for _ in range(4))
    cos, sin = torch.ones(5, 8), torch.zeros(5, 8)
    out = lambda l0, l1: block.forward_lanes((l0, l1), x0, cos, sin)  # noqa: E731
    with torch.no_grad():
        block.lane_post[0].zero_()  # attention writes nowhere: lane 0 reaches the output only as itself
        got, base = out(lane0 + d, lane1), out(lane0, lane1)
        torch.testing.assert_close(got[0] - base[0], block.lane_resid[0] * d)
        torch.testing.assert_close(got[1], base[1])  # the MLP does not read lane 0
        block.lane_post[0].fill_(1.0)
        block.lane_post[1].zero_()  # the MLP writes nowhere
        got, base = out(lane0, lane1 + d), out(lane0, lane1)
        torch.testing.assert_close(got[1] - base[1], block.lane_resid[1] * d)
        torch.testing.assert_close(got[0], base[0])  # attention does not read lane 1
        block.lane_post[1].fill_(1.0)
        a, b = out(lane0, lane1)
        a2, b2 = out(lane0, lane1 + d)  # with the MLP writing both lanes, lane 1 now reaches lane 0
        assert not torch.allclose(a, a2) and not torch.allclose(b, b2)


def test_lanes_split_before_the_skip_which_reaches_lane_0_only():
    """6 layers, two lanes from block 3 (the first decoder, which pops block 2's output as its skip):
    lane 1 starts as the stream before the skip, lane 0 as the stream after it."""
    model = _model(parallel_from=3, skip_gates=True)
    lanes_in, skipped = [], []
    model.blocks[2].register_forward_hook(lambda m, a, o: skipped.append(o))
    forward = model.blocks[3].forward_lanes
    model.blocks[3].forward_lanes = lambda lanes, *a: lanes_in.append(lanes) or forward(lanes, *a)
    model.logits(torch.randint(0, 64, (1, 8)))
    ((lane0, lane1),) = lanes_in
    torch.testing.assert_close(lane0, model._skip(0, lane1, skipped[0]))
    assert not torch.allclose(lane0, lane1)
    assert ModelConfig(**SMALL, parallel_from=4).parallel_resid_init == 1.1


def test_skip_gates_lerp_and_zero_logit_halves():
    m = _model(skip_gates=True)
    x, skip = torch.randn(1, 3, 64), torch.randn(1, 3, 64)
    with torch.no_grad():
        m.skip_gates.zero_()
    torch.testing.assert_close(m._skip(0, x, skip), 0.5 * x + 0.5 * m.skip_weights[0] * skip)
    with torch.no_grad():
        m.skip_gates.fill_(30.0)  # sigmoid -> 1: the stream alone
    torch.testing.assert_close(m._skip(1, x, skip), x, rtol=1e-6, atol=1e-6)
    assert m.skip_gates.shape == m.skip_weights.shape
    assert GPT(ModelConfig(**SMALL, skip_gates=True)).skip_gates.abs().sum() == 0


def test_attention_gates_at_init_and_their_inputs():
    cfg = ModelConfig(**SMALL, attn_gate="output")
    x, y = torch.randn(2, 5, 64), torch.randn(2, 4, 5, 16)
    assert torch.equal(AttentionGate(cfg)(x, y), y)  # 2 sigmoid(0) = 1
    sparse = AttentionGate(ModelConfig(**SMALL, attn_gate="sparse"))
    assert torch.equal(sparse(x, y), 0.5 * y)
    with torch.no_grad():
        sparse.weight.normal_()
    x2 = x.clone()
    x2[..., 12:] += 5.0  # beyond the 12 dims the gate reads
    assert torch.equal(sparse(x2, y), sparse(x, y))
    assert sparse.weight.numel() == 4 * 12  # 96 per layer at 8 heads
    dense = AttentionGate(ModelConfig(**SMALL, attn_gate="dense"))
    assert dense.weight.shape == (4, 64) and 0.002 < dense.weight.std() < 0.008
    # with the output gate a fresh model is exactly the ungated one
    plain, gated = _model(randomise=False), _model(randomise=False, attn_gate="output")
    _copy(gated, plain)
    _same_logits(plain, gated, torch.randint(0, 64, (2, 12)), exact=True)


def test_value_embeddings_shape_count_and_zero_gain_identity():
    plain, ve = _model(), _model(value_embed_dim=16, value_embed_layers=2)
    kv = 2 * 16
    extra = 64 * 16 + 16 * kv + 1 + 2  # table, projection, scale, one gain per target layer
    assert sum(p.numel() for p in ve.parameters()) - sum(p.numel() for p in plain.parameters()) == extra
    assert [b.attn.ve_gain is not None for b in ve.blocks] == [False] * 4 + [True] * 2
    _copy(ve, plain)
    with torch.no_grad():
        for b in ve.blocks[4:]:
            b.attn.ve_gain.zero_()
    ids = torch.randint(0, 64, (2, 12))
    _same_logits(plain, ve, ids, exact=True)
    with torch.no_grad():
        ve.blocks[5].attn.ve_gain.fill_(1.0)
    assert not torch.allclose(plain.logits(ids), ve.logits(ids))
    roles = {n: r for r, ps in split_parameters(ve).items() for n, _ in ps}
    assert roles["value_embed.embed.weight"] == "embed" and roles["value_embed.proj.weight"] == "matrix"
    assert roles["value_embed.scale"] == "control" and roles["blocks.5.attn.ve_gain"] == "control"


def test_window_smeargate_identity_at_init_and_bos():
    smear = WindowSmearGate(16, 12)
    x, ids = torch.randn(1, 6, 16), torch.tensor([[5, 7, BOS_ID, 9, 4, 3]])
    assert torch.equal(smear(x, ids), x)
    with torch.no_grad():
        smear.lam.fill_(0.7)
        smear.weight.normal_()
    y = smear(x, ids)
    assert torch.equal(y[0, 2], x[0, 2]) and torch.equal(y[0, 0], x[0, 0])  # BOS, and t = 0
    g = torch.sigmoid(x[0, 4, :12] @ smear.weight[0])
    torch.testing.assert_close(y[0, 4], x[0, 4] + 0.7 * g * x[0, 3])
    x2 = x.clone()
    x2[0, 1] += 1.0  # the previous document's last token
    assert torch.equal(smear(x2, ids)[0, 2:], y[0, 2:])
    x3 = x.clone()
    x3[0, 4, 12:] += 3.0  # the gate reads only the first 12 dims of the current token
    assert torch.equal(torch.sigmoid(x3[0, 4, :12] @ smear.weight[0]), g)


def test_asymmetric_caps_start_symmetric_are_frozen_in_training_and_trained_by_ttt():
    plain, asym = _model(), _model(logit_cap_asym=True)
    _copy(asym, plain)
    with torch.no_grad():
        asym.logit_cap_pos.fill_(30.0)
        asym.logit_cap_neg.fill_(30.0)
    ids = torch.randint(0, 64, (2, 12))
    _same_logits(plain, asym, ids)
    with torch.no_grad():
        asym.logit_cap_neg.fill_(1.0)
    z = asym.logits(ids)
    assert z.min() >= -1.0 and z.max() > 1.0
    fresh = _model(randomise=False, logit_cap_asym=True).train()
    assert not fresh.logit_cap_pos.requires_grad and not fresh.logit_cap_neg.requires_grad
    opt = Optimizers(fresh, OptimConfig(), tied=True, device=torch.device("cpu"))
    owned = {id(p) for o in (opt.adam, opt.muon) for g in o.param_groups for p in g["params"]}
    assert id(fresh.logit_cap_pos) not in owned and all(id(p) in owned for p in opt.params)
    before = [p.detach().clone() for p in fresh.parameters()]
    ids = torch.randint(0, 64, (2, 12))
    fresh(ids, ids).backward()
    opt.step(1.0, 0.95)
    assert fresh.logit_cap_pos.grad is None and fresh.logit_cap_pos.item() == 30.0
    assert sum(not torch.equal(a, b) for a, b in zip(before, fresh.parameters(), strict=True)) > 10
    assert any(p is fresh.logit_cap_neg for p in trainable(fresh, 0))  # test-time SGD turns them on


def test_polar_express_is_closer_to_orthogonal_than_the_fixed_quintic():
    """At 5 steps on rectangular matrices (every singular value well away from 0) Polar Express keeps
    all of them within 0.15 of 1 where the quintic leaves them in [0.68, 1.13]; on square ones (tiny
    singular values neither reaches) its mean distance to 1 is still lower."""
    torch.manual_seed(0)
    for shape in ((64, 128), (128, 64), (256, 64), (96, 96)):
        for spread in (False, True):
            g = torch.randn(*shape)
            if spread:
                g = g @ torch.diag(torch.logspace(-2, 0, shape[1]))
            dist = {}
            for polar in (False, True):
                s = torch.linalg.svdvals(newton_schulz5(g, 5, polar=polar).double())
                dist[polar] = (s - 1).abs()
            assert dist[True].mean() < 0.7 * dist[False].mean()
            if shape[0] != shape[1]:
                assert dist[True].max() < 0.15 < 0.3 < dist[False].max()


def test_row_normalisation_is_invisible_when_rows_share_a_norm():
    torch.manual_seed(1)
    u = torch.randn(32, 48)
    assert torch.allclose(row_normalise(u).norm(dim=1), torch.ones(32), atol=1e-6)
    equal_rows = u / u.norm(dim=1, keepdim=True) * 3.0
    torch.testing.assert_close(newton_schulz5(row_normalise(equal_rows), 5), newton_schulz5(equal_rows, 5))
    p = torch.nn.Parameter(torch.zeros(32, 48))
    p.grad = u.clone()
    muon = Muon([p], lr=0.1, momentum=0.0, backend_steps=5, ns_dtype=torch.float32, row_norm=True)
    muon.step()
    torch.testing.assert_close(p.data, -0.1 * newton_schulz5(row_normalise(u), 5))


def test_min_lr_floor_and_weight_decay_taper():
    cfg = OptimConfig(warmdown_frac=0.75, min_lr=0.1)
    cap = 600_000.0
    for frac in (0.1, 0.3, 0.6, 0.9, 0.99, 1.0):
        got = lr_multiplier(10, frac * cap, iterations=10**6, max_wallclock_ms=cap, cfg=cfg)
        assert got == pytest.approx(max(min((1 - frac) / 0.75, 1.0), 0.1))  # PR #1787's formula
    plain = OptimConfig(warmdown_frac=0.75)
    assert lr_multiplier(10, cap, iterations=10**6, max_wallclock_ms=cap, cfg=plain) == 0.0
    taper = OptimConfig(wd_taper_from=0.7, wd_taper_mult=0.5)
    assert [weight_decay_multiplier(p, taper) for p in (0.0, 0.69, 0.7, 1.0)] == [1, 1, 0.5, 0.5]
    assert weight_decay_multiplier(0.99, OptimConfig()) == 1.0
    p = torch.nn.Parameter(torch.ones(8, 8))
    p.grad = torch.zeros(8, 8)
    muon = Muon([p], lr=0.1, momentum=0.0, backend_steps=1, ns_dtype=torch.float32, weight_decay=0.5)
    muon.wd_mul = 0.5
    muon.step()  # NS5 of a zero gradient is zero: only the decay acts
    torch.testing.assert_close(p.data, torch.full((8, 8), 1 - 0.1 * 0.5 * 0.5))


def test_adam_beta2_per_group():
    model = _model(randomise=False, tie_embeddings=False)
    cfg = OptimConfig(beta2=0.95, embed_beta2=0.99, head_beta2=0.999)
    opt = Optimizers(model, cfg, tied=False, device=torch.device("cpu"))
    betas = sorted(g["betas"][1] for g in opt.adam.param_groups)
    assert betas == [0.95, 0.99, 0.999]


def test_progressive_schedules_parse_and_refuse_bad_input():
    tc = TrainConfig(seq_len=64, batch_tokens=512, microbatches=2, seq_len_schedule="16:0.1, 32:0.7")
    assert tc.seq_schedule == ((16, 0.1), (32, 0.7), (64, 1.0))
    at = Schedule(RunConfig(train=tc)).seq_len_at
    assert [at(p) for p in (0.0, 0.09, 0.1, 0.69, 0.7, 0.999, 1.0)] == [16, 16, 32, 32, 64, 64, 64]
    assert TrainConfig(loop_pass_fracs="0.5, 0.65").pass_fracs == (0.5, 0.65)
    bad = [
        ({"seq_len_schedule": "1024"}, "LEN:UNTIL"),
        ({"seq_len_schedule": "x:0.1"}, "LEN:UNTIL"),
        ({"seq_len_schedule": "16:2"}, r"\[0, 1\]"),
        ({"seq_len_schedule": "16:0.5,32:0.2"}, "must increase"),
        ({"seq_len_schedule": "16:0.5,32:0.5"}, "must increase"),
        ({"seq_len_schedule": "16:1.0"}, "below 1"),
        ({"seq_len_schedule": "48:0.5", "batch_tokens": 512, "microbatches": 2, "seq_len": 64}, "multiple"),
        ({"loop_pass_fracs": "0.7,0.5"}, "non-decreasing"),
        ({"loop_pass_fracs": "half"}, "not a number"),
    ]
    for kw, message in bad:
        with pytest.raises(ConfigError, match=message):
            TrainConfig(**kw)


def test_loop_passes_from_records_old_and_new():
    assert loop_passes(True, 2) == 2 and loop_passes(False, 2) == 0 and loop_passes(1, 2) == 1
    m = GPT(ModelConfig(**SMALL, loop_start=1, loop_end=3, loop_repeats=2))
    m.loop_passes = 1
    assert m.layer_order() == [0, 1, 2, 1, 2, 3, 4, 5] and m.looping
    m.looping = True
    assert len(m.layer_order()) == 10


@pytest.mark.parametrize(
    "kw, message",
    [
        ({"parallel_from": 6}, "parallel_from"),
        ({"parallel_from": 3, "loop_start": 1, "loop_end": 4, "loop_repeats": 1}, "loop_end"),
        ({"parallel_from": 3, "recurrent_blocks": 3}, "recurrent_blocks"),
        ({"attn_gate": "sigmoid"}, "attn_gate"),
        ({"value_embed_dim": 8, "value_embed_layers": 7}, "value_embed_layers"),
        ({"value_embed_dim": 8, "recurrent_blocks": 3}, "recurrent_blocks"),
        ({"parallel_from": 2}, "decoder layer"),
        ({"smear_gate_window": 12}, "smear_gate = true"),
    ],
)
def test_frontier_settings_refused_at_config_time(kw, message):
    with pytest.raises(ConfigError, match=message):
        ModelConfig(**{**SMALL, **kw})


def test_progressive_passes_and_context_follow_the_schedule_and_survive_a_resume(debug_cfg, tmp_path):
    from pgolf.pipeline import run
    from pgolf.train.checkpoint import CHECKPOINT_NAME
    from pgolf.train.trainer import Trainer

    cfg = debug_cfg(**{
        "train.iterations": "10", "model.loop_start": "0", "model.loop_end": "1", "model.loop_repeats": "2",
        "train.loop_pass_fracs": "0.3,0.6", "train.seq_len_schedule": "32:0.5", "train.checkpoint_every": "4",
        "train.loader": "coprime",  # its position (a sequence counter) must survive the resume too
    })  # fmt: skip
    seen = []
    original = Trainer.train_step

    def spy(self, plan):
        seen.append((plan.step, plan.seq_len, self.base_model.loop_passes))
        return original(self, plan)

    Trainer.train_step = spy
    try:
        full = run(cfg, out_dir=tmp_path / "full", echo=False)
    finally:
        Trainer.train_step = original
    assert [s for _, s, _ in seen] == [32] * 5 + [64] * 5
    assert [p for _, _, p in seen] == [0, 0, 0, 1, 1, 1, 2, 2, 2, 2]
    log = (tmp_path / "full" / "train.log").read_text()
    assert "looping:on passes:2 step:6 virtual_layers:4" in log and "seq_len:64 step:5" in log

    def crash(self, plan):  # dies after the checkpoint at step 4
        if plan.step == 5:
            raise KeyboardInterrupt
        return original(self, plan)

    Trainer.train_step = crash
    try:
        with pytest.raises(Interrupted, match=r"interrupted while training at step 5.*holds step 4"):
            run(cfg, out_dir=tmp_path / "cut", echo=False)
    finally:
        Trainer.train_step = original
    assert torch.load(tmp_path / "cut" / CHECKPOINT_NAME, weights_only=True)["looping"] == 1
    resumed = run(cfg, out_dir=tmp_path / "cut", resume=True, echo=False)
    assert resumed.roundtrip.val_bpb == full.roundtrip.val_bpb


def test_document_mask_rule():
    ids = torch.tensor([[5, BOS_ID, 6, 7, BOS_ID, 8], [BOS_ID, 2, 3, 4, 5, 6]])
    got = document_mask(ids)[:, 0]
    for b in range(2):
        doc = [int((ids[b, : i + 1] == BOS_ID).sum()) for i in range(6)]
        want = torch.tensor([[j <= i and doc[j] == doc[i] for j in range(6)] for i in range(6)])
        assert torch.equal(got[b], want)


@pytest.mark.parametrize(
    "extra",
    [
        {},
        {"parallel_from": 4, "value_embed_dim": 16, "attn_gate": "sparse"},
        {"cpmr": True, "micronorm": True, "qk_temp_split": True},  # seed 003's proposals
    ],
)
def test_document_masked_attention_never_crosses_a_bos(extra):
    """With doc_mask, nothing of document 1 reaches document 2 (from its BOS on), and a document's
    logits do not depend on where in the window it starts (RoPE is relative): the same document
    after a different prefix scores the same, up to float rounding."""
    kw = {"doc_mask": True, "smear_gate": True, "smear_gate_window": 12, "bigram_buckets": 97,
          "bigram_dim": 16, **extra}  # fmt: skip
    model = _model(**kw)
    doc2 = torch.cat([torch.tensor([BOS_ID]), torch.randint(2, 64, (9,))])
    a = torch.cat([torch.randint(2, 64, (6,)), doc2])[None]
    b = torch.cat([torch.randint(2, 64, (11,)), doc2])[None]
    za, zb = model.logits(a), model.logits(b)
    torch.testing.assert_close(za[0, 6:], zb[0, 11:], rtol=1e-4, atol=1e-4)
    unmasked = _model(**{**kw, "doc_mask": False})
    assert not torch.allclose(unmasked.logits(a)[0, 6:], unmasked.logits(b)[0, 11:], atol=1e-3)


def test_optimizer_and_run_combinations_refused():
    with pytest.raises(ConfigError, match="backend_steps >= 5"):
        OptimConfig(muon_polar_express=True, muon_backend_steps=4)
    with pytest.raises(ConfigError, match="SWA would never collect"):
        RunConfig(train=TrainConfig(averaging="swa", swa_start_lr_mul=0.1), optim=OptimConfig(min_lr=0.1))


def test_priming_visits_every_phase_the_schedules_will():
    def plan(**train):
        cfg = RunConfig(model=ModelConfig(**SMALL, loop_start=1, loop_end=3, loop_repeats=2),
                        train=TrainConfig(seq_len=3072, batch_tokens=786_432, **train))  # fmt: skip
        return [(p.progress, p.loop_passes) for p in Schedule(cfg).phase_starts()]

    # the frontier's: 1024 to 10%, 2048 to 70%, 3072 after; both passes from 35%
    assert plan(seq_len_schedule="1024:0.1,2048:0.7", loop_from_frac=0.35) == [
        (0.0, 0), (0.1, 0), (0.35, 2), (0.7, 2)
    ]  # fmt: skip
    assert plan(loop_pass_fracs="0.5,0.65") == [(0.0, 0), (0.5, 1), (0.65, 2)]
    assert plan(seq_len_schedule="1024:0.5", loop_pass_fracs="0.5,0.5") == [(0.0, 0), (0.5, 2)]


def test_artifact_meta_refuses_a_pass_count_beyond_the_loop():
    import dataclasses

    from pgolf.config.run import apply_overrides
    from pgolf.errors import ArtifactError
    from pgolf.pack.meta import ArtifactMeta
    from pgolf.tools.presets import get_preset

    cfg = apply_overrides(get_preset("debug"), {"model.loop_start": 0, "model.loop_end": 1,
                                                "model.loop_repeats": 2})  # fmt: skip
    good = ArtifactMeta(
        pgolf_version="0", preset="debug", track="debug", steps=1, looping=1, model=cfg.model, data=cfg.data,
        eval=dataclasses.replace(cfg.eval, seq_len=64), quant=cfg.quant, pack=cfg.pack, tokenizer_sha256="",
        tokenizer_vocab_size=1024, val_tokens=10, val_sha256="", code_form="readable", code_bytes=1,
        code_sha256="", sources_sha256="", train_seconds=1.0, train_cap_seconds=0.0,
    ).to_dict()  # fmt: skip
    assert ArtifactMeta.from_dict(good).looping == 1
    assert ArtifactMeta.from_dict({**good, "looping": True}).looping is True  # written before passes
    for bad in (3, -1, "2", 1.0):
        with pytest.raises(ArtifactError, match="looping"):
            ArtifactMeta.from_dict({**good, "looping": bad})
