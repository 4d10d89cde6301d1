"""Every preset: published parameter counts, CPU twins within the 2 MB cap, and a short real run."""

import pytest

from pgolf.config.overrides import apply_overrides
from pgolf.eval.artifact import evaluate_artifact
from pgolf.model.gpt import GPT
from pgolf.model.params import count_parameters
from pgolf.pack.format import PackSpec, encode
from pgolf.pack.size import code_bytes
from pgolf.pipeline import run
from pgolf.presets import PRESETS, get_preset
from pgolf.quant.export import quantize_state_dict
from pgolf.tracks import get_track

PUBLISHED_PARAMS = {"baseline": 17_059_912, "pr162": 22_368_841}  # seed-techniques §5.5, §15.1
CPU_PRESETS = sorted(n for n in PRESETS if n.endswith("-cpu"))


@pytest.mark.parametrize("name", sorted(PUBLISHED_PARAMS))
def test_published_parameter_counts(name):
    assert count_parameters(GPT(get_preset(name).model)) == PUBLISHED_PARAMS[name]


def test_every_record_preset_has_a_cpu_twin():
    records = {n for n in PRESETS if not n.endswith("-cpu")} - {"debug"}
    assert {f"{n}-cpu" for n in records} == set(CPU_PRESETS)
    for name in CPU_PRESETS:
        assert get_preset(name).track == "cpu-5min-2mb"


@pytest.mark.parametrize("name", CPU_PRESETS)
def test_cpu_presets_fit_the_cap_even_uncompressed(name):
    """int8 codes stored with zlib level 0 (one byte each whatever their values) plus the code."""
    cfg = get_preset(name)
    entries, stats = quantize_state_dict(GPT(cfg.model).state_dict(), cfg.quant)
    assert stats.params["fp32"] + stats.params["fp16"] < 10_000  # only vectors stay float
    stored = len(encode(entries, {}, PackSpec("zlib", 0)))
    assert stored + code_bytes() <= get_track(cfg.track).artifact_cap_bytes


@pytest.mark.slow
@pytest.mark.parametrize("name", CPU_PRESETS)
def test_cpu_presets_learn(name, data_root, tmp_path):
    """12 real steps of each CPU preset (2 sequences per micro-batch to keep it fast) lower the loss."""
    cfg = get_preset(name)
    seq = cfg.train.seq_len
    cfg = apply_overrides(cfg, {
        "data.root": str(data_root), "train.iterations": "12", "train.max_wallclock_seconds": "0",
        "train.batch_tokens": str(4 * seq), "train.log_every": "1", "optim.muon_momentum_warmup_steps": "4",
    })  # fmt: skip
    r = run(cfg, out_dir=tmp_path, echo=False)
    losses = [h["train_loss"] for h in r.history]
    assert sum(losses[-3:]) / 3 < losses[0] - 0.5, losses
    # 12 steps of 2 sequences do not yet beat the uniform model on validation (the recipe's early LR
    # spike, dev/LOG.md); the round trip must load the techniques' weights and score them as an
    # independent reload does, close to the weights before quantisation
    again = evaluate_artifact(r.artifact_path)
    assert again.score.result == r.roundtrip and again.score.official
    assert r.roundtrip.tokens == (again.meta.val_tokens - 1) // seq * seq  # plain windows over the stream
    assert abs(r.roundtrip.val_bpb - r.pre_quant.val_bpb) < 0.02
