"""Every preset: published parameter counts, CPU twins within the 2 MB cap, and a short real run."""

from dataclasses import replace

import pytest
import torch

from pgolf.config.run import apply_overrides
from pgolf.data.valset import load_validation
from pgolf.eval.artifact import evaluate_artifact
from pgolf.model.gpt import GPT
from pgolf.model.layers import Linear
from pgolf.model.params import count_parameters, param_roles
from pgolf.pack.bundle import code_account
from pgolf.pack.format import PackSpec, encode
from pgolf.pipeline import run
from pgolf.quant.export import quantize_state_dict
from pgolf.tools.presets import PRESETS, get_preset
from pgolf.tracks import get_track

PUBLISHED_PARAMS = {"baseline": 17_059_912, "pr162": 22_368_841}  # seed-techniques §5.5, §15.1
REFERENCE = "reference-cpu"
"""The contest's baseline recipe as issue 10 sized it, the reference of CPU-track ratios: not a
technique's twin, and allowed a few KB over the cap (pgolf's counted code is larger than the contest's)."""
CPU_PRESETS = sorted(n for n, fn in PRESETS.items() if fn().track == "cpu-5min-2mb" and n != REFERENCE)


def cpu_twin(name: str) -> str:
    return "cpu-best" if name == "best" else f"{name}-cpu"


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_parameter_of_every_preset_has_a_declared_role(name):
    """``param_roles`` raises for a parameter declared nowhere; the declared roles follow the module
    kinds: Linear weights are Muon matrices (the untied head excepted), embedding tables are embed,
    and everything else (gains, mixes, the attention and smear gates, lane scalars, skips) is control."""
    import torch
    from torch import nn

    with torch.device("meta"):
        model = GPT(get_preset(name).model)
    roles = param_roles(model)
    assert list(roles) == [n for n, _ in model.named_parameters()]
    for owner, module in model.named_modules():
        for attr, _ in module.named_parameters(recurse=False):
            if isinstance(module, Linear):
                want = "head" if owner == "lm_head" else "matrix"
            else:
                want = "embed" if isinstance(module, nn.Embedding) else "control"
            assert roles[f"{owner}.{attr}" if owner else attr] == want


@pytest.mark.parametrize("name", sorted(PUBLISHED_PARAMS))
def test_published_parameter_counts(name):
    assert count_parameters(GPT(get_preset(name).model)) == PUBLISHED_PARAMS[name]


def test_every_record_preset_has_a_cpu_twin():
    records = set(PRESETS) - set(CPU_PRESETS) - {"debug", REFERENCE}
    assert {cpu_twin(n) for n in records} == set(CPU_PRESETS)
    for name in CPU_PRESETS:
        assert get_preset(name).track == "cpu-5min-2mb"


@pytest.mark.parametrize("name", CPU_PRESETS)
def test_cpu_presets_fit_the_cap_even_uncompressed(name):
    """int8 codes stored with zlib level 0 (one byte each whatever their values) plus the code."""
    cfg = get_preset(name)
    model = GPT(cfg.model)
    entries, stats = quantize_state_dict(model.state_dict(), param_roles(model), cfg.quant)
    floats = stats.params["fp32"] + stats.params["fp16"]  # vectors and small projections
    assert floats < 0.02 * sum(stats.params.values())
    stored = len(encode(entries, {}, PackSpec("zlib", 0)))
    assert stored + code_account(cfg).bytes <= get_track(cfg.track).artifact_cap_bytes


@pytest.mark.slow
@pytest.mark.parametrize("name", CPU_PRESETS)
def test_cpu_presets_learn(name, data_root, demo_at, tmp_path):
    """12 real steps of each CPU preset (2 sequences of 512 tokens or more per micro-batch, to keep it
    fast: at 1,024 tokens per step frontier-cpu's first steps are too noisy to judge) lower the loss.
    The presets share one evaluation (docs + LoRA TTT + phased SGD, asserted below; cpu-best's LoRA
    adapts every projection at a higher LR, Adam beta1 0, chunks of 64): it runs in full
    for kellyvv-cpu, which is also reloaded independently; the others are scored plain (the suite's
    time). At 2,048 pieces (cpu-best) the first Adam step's spike (7.6 -> 9.8 nats) takes longer to
    undo on this small corpus: 16 steps of the preset's own 4,096 tokens."""
    cfg = get_preset(name)
    seq = cfg.train.seq_len
    demo_at(cfg.model.vocab_size)  # the test corpus at the preset's own vocabulary
    steps, tokens = (12, 4 * max(seq, 512)) if cfg.model.vocab_size == 1024 else (16, cfg.train.batch_tokens)
    cfg = apply_overrides(cfg, {
        "data.root": str(data_root), "train.iterations": str(steps), "train.max_wallclock_seconds": "0",
        "train.batch_tokens": str(tokens), "train.log_every": "1", "optim.muon_momentum_warmup_steps": "4",
        "train.compile_cpu": "false",  # cpu-best compiles: minutes on 2 cores (see test_cuda_paths.py)
    })  # fmt: skip
    shared = get_preset("baseline-cpu").eval
    if name == "cpu-best":  # its LoRA adapts every projection, at a higher LR, with Adam beta1 0, in
        # chunks of 64 targets (tuned on its artifacts; the LR re-checked on dev splits), and the n-gram
        # and match experts mixed in after LoRA by exponentiated gradient
        shared = replace(shared, lora_targets="q,k,v,o,head", ttt_lr=0.01, lora_beta1=0.0, stride=64,
                         experts="ngram,match", ngram_order=4, ngram_alpha=1.0, mix_rule="eg")  # fmt: skip
    assert cfg.eval == shared
    if name != "kellyvv-cpu":
        plain = {"eval.method": "plain", "eval.ttt": "none", "eval.lora_phase_docs": "0"}
        r = run(apply_overrides(cfg, plain), out_dir=tmp_path, echo=False)
        losses = [h["train_loss"] for h in r.history]
        assert sum(losses[-3:]) / 3 < losses[0] - 0.5, losses
        assert abs(r.quant_gap_bpb) < 0.02
        return
    r = run(cfg, out_dir=tmp_path, echo=False)
    losses = [h["train_loss"] for h in r.history]
    assert sum(losses[-3:]) / 3 < losses[0] - 0.5, losses
    # 12 steps of 2 sequences do not yet beat the uniform model on validation (the recipe's early LR
    # spike, dev/LOG.md); the round trip scores every target, the tail included, close to the weights
    # before quantisation
    assert cfg.eval.method == "docs" and cfg.eval.ttt == "lora" and r.score.ledger["updates"] > 0
    assert r.roundtrip.tokens == load_validation(cfg.data, cfg.model.vocab_size).tokens.numel() - 1
    assert abs(r.quant_gap_bpb) < 0.02 and r.windows_roundtrip is not None
    again = evaluate_artifact(r.artifact_path)  # reloaded independently: the same score
    assert again.score.result == r.roundtrip and again.score.official
    assert r.roundtrip.tokens == again.meta.val_tokens - 1


SDCLIP_PRESETS = sorted(
    n for n, fn in PRESETS.items()
    if fn().quant.clip == "sdclip" and fn().track == "10min-16mb" and n not in ("frontier", "best")
)  # fmt: skip


@pytest.mark.parametrize("name", SDCLIP_PRESETS)
def test_full_size_sdclip_presets_fit_16mb(name):
    """SDClip sets each row's step relative to its own RMS, so the int6 matrices' byte rate is that of
    Gaussian rows at any scale (trained rows measure near-Gaussian, max/sigma 3-4.8). The int8-contest
    embedding's 1/127 floor is absolute, so its bytes depend on the scale drawn here (0.02; a small
    share of these models). The preset's policy, round-to-nearest, zstd-3 (weaker than its codec), plus
    the counted code,
    fits 16 MB (13.3-13.7 MB here, ~3.96 bits per parameter; trained weights measured 3.41 per
    matrix parameter with the best codec, benchmarks/RESULTS.md)."""
    import torch

    cfg = get_preset(name)
    torch.manual_seed(0)
    model = GPT(cfg.model)
    with torch.no_grad():
        for p in model.parameters():
            if p.ndim == 2:
                p.normal_(0, 0.02)
    entries, stats = quantize_state_dict(model.state_dict(), param_roles(model), cfg.quant)
    assert stats.params["int6"] > 0.9 * count_parameters(model)
    total = len(encode(entries, {}, PackSpec("zstd", 3))) + code_account(cfg).bytes
    assert total <= get_track(cfg.track).artifact_cap_bytes, total


def test_frontier_parameter_count_by_hand_and_its_projected_artifact():
    """11 blocks of q 512x512, k and v 256x512, o 512x512, MLP 2048x512 and 512x2048, with attn/mlp
    scales (2x512), resid mix (2x512), q gain (8) and the sparse gate (8x12); lanes on blocks 8-10
    (2x2 post + 2 resid); 8 skip weights and 8 skip gates of 512 (17 virtual layers: 8 encoders);
    the 8192x512 tied embedding; the SmearGate (12 + 1) and the two logit caps: 35,945,625, the
    record's ~35.95M (sota-stack §2.2). Projected with pgolf's measured trained bits (3.41 per int6
    parameter, benchmarks/RESULTS.md) it fits 16 MB; the cap is tight (the record's 15.87 MB blob
    uses per-group lrzip, which pgolf does not have)."""
    from pgolf.tools.plan.artifact import project_artifact

    cfg = get_preset("frontier")
    block = 512 * 512 * 2 + 256 * 512 * 2 + 2048 * 512 * 2 + 2 * 512 + 2 * 512 + 8 + 8 * 12
    want = 11 * block + 3 * 6 + 2 * 8 * 512 + 8192 * 512 + 13 + 2
    assert count_parameters(GPT(cfg.model)) == want == 35_945_625
    _, projected, formats = project_artifact(cfg)
    assert set(formats) == {"fp32", "int7", "int6"}
    assert projected <= get_track(cfg.track).artifact_cap_bytes, projected


def test_the_demo_trains_cpu_best_on_the_demo_corpus_at_its_vocabulary(tmp_path):
    from pgolf.tools.demo import DEMO_PRESET, demo_config

    cfg = demo_config(tmp_path, 60.0, {})
    assert DEMO_PRESET == cfg.preset == "cpu-best" and cfg.train.max_wallclock_seconds == 60.0
    assert cfg.data.root == str(tmp_path) and cfg.data.dataset == "datasets/pgolf_demo_sp2048"
    assert cfg.data.tokenizer == "tokenizers/pgolf_demo_2048_bpe.model"
    assert get_preset("cpu-best").train.compile_cpu and not cfg.train.compile_cpu  # the demo runs eager
    compiled = demo_config(tmp_path, 60.0, {"train.compile_cpu": "true"})
    assert compiled.train.compile_cpu and compiled.train.warmup_steps == cfg.train.warmup_steps == 2
    base = demo_config(tmp_path, 60.0, {"model.vocab_size": "1024"})  # data follows the vocabulary
    assert base.data.dataset == "datasets/pgolf_demo_sp1024" and base.model.vocab_size == 1024
    own = demo_config(tmp_path, 60.0, {"data.dataset": "datasets/x_sp2048"}, preset="baseline-cpu")
    assert own.preset == "baseline-cpu" and own.data.dataset == "datasets/x_sp2048"  # named data kept


def test_cpu_best_carries_the_dev_split_choices_of_issue_34():
    """MicroNorm won on both dev splits at the wall clock; SDPA's math kernel makes a compiled
    training step 1.1x as fast as the CPU flash kernel's at cpu-best's shape (benchmarks/RESULTS.md).
    Both are the preset's own: the CPU's auto kernel and the other presets keep flash and no MicroNorm."""
    from pgolf.model.kernels import resolve_attention

    cfg = get_preset("cpu-best")
    assert cfg.model.micronorm and cfg.model.micronorm_block == 0 and cfg.train.attention == "math"
    assert resolve_attention(cfg.train.attention, torch.device("cpu"), cfg.model.doc_mask) == "math"
    for other in ("frontier-cpu", "baseline-cpu", "reference-cpu"):
        assert not get_preset(other).model.micronorm and get_preset(other).train.attention == "auto"
