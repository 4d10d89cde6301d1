import dataclasses

import pytest

from pgolf.config import ModelConfig, RunConfig, TrainConfig, all_fields, config_from_dict
from pgolf.config.run import apply_overrides
from pgolf.errors import ConfigError
from pgolf.model.gpt import GPT
from pgolf.model.params import count_parameters
from pgolf.tools.overrides import field_docs, pairs_to_overrides
from pgolf.tools.presets import PRESETS, get_preset
from pgolf.tracks import get_track

# Freezes the set of config fields: adding or renaming one must update this list, the docs/ pages that
# describe it and, where it matters, checkpoint/artifact compatibility.
FROZEN_FIELDS = [
    "preset", "track",
    "model.vocab_size", "model.num_layers", "model.model_dim", "model.num_heads", "model.num_kv_heads",
    "model.mlp_mult", "model.tie_embeddings", "model.rope_base", "model.logit_softcap", "model.qk_gain_init",
    "model.tied_embed_init_std", "model.mlp_activation", "model.smear_gate", "model.smear_gate_init",
    "model.bigram_buckets", "model.bigram_dim", "model.ortho_init", "model.xsa_last_n", "model.rope_dims",
    "model.ln_scale", "model.rope_ntk_seq_len", "model.recurrent_blocks", "model.loop_start",
    "model.loop_end", "model.loop_repeats", "model.skip_gates", "model.parallel_from",
    "model.parallel_resid_init", "model.attn_gate", "model.attn_gate_dims", "model.attn_gate_scale",
    "model.value_embed_dim", "model.value_embed_layers", "model.smear_gate_window", "model.doc_mask",
    "model.logit_cap_asym", "model.micronorm", "model.micronorm_block", "model.cpmr", "model.qk_temp_split",
    "data.root", "data.dataset", "data.tokenizer", "data.train_pattern", "data.val_pattern",
    "data.score_split",
    "train.seq_len", "train.batch_tokens", "train.microbatches", "train.iterations",
    "train.max_wallclock_seconds", "train.warmup_steps", "train.val_every", "train.windows_diagnostic",
    "train.log_every", "train.seed",
    "train.checkpoint_every", "train.compile", "train.compile_cpu", "train.cpu_bf16", "train.device",
    "train.attention", "train.loop_from_frac",
    "train.loop_pass_fracs", "train.seq_len_schedule", "train.loader", "train.averaging",
    "train.ema_decay", "train.swa_every", "train.swa_start_lr_mul",
    "optim.matrix_lr", "optim.scalar_lr", "optim.tied_embed_lr", "optim.embed_lr", "optim.head_lr",
    "optim.beta1", "optim.beta2", "optim.adam_eps", "optim.muon_momentum", "optim.muon_momentum_warmup_start",
    "optim.muon_momentum_warmup_steps", "optim.muon_backend_steps", "optim.grad_clip_norm",
    "optim.muon_weight_decay", "optim.adam_weight_decay",
    "optim.warmdown_iters", "optim.warmdown_frac", "optim.min_lr", "optim.muon_polar_express",
    "optim.muon_row_norm", "optim.wd_taper_from", "optim.wd_taper_mult", "optim.embed_beta2",
    "optim.scalar_beta2", "optim.head_beta2",
    "eval.batch_tokens", "eval.val_docs", "eval.ttt", "eval.ttt_lr",
    "eval.seq_len", "eval.method", "eval.stride", "eval.ntk_seq_len", "eval.sgd_chunk_tokens",
    "eval.sgd_epochs",
    "eval.sgd_momentum", "eval.sgd_batch_seqs",
    "eval.sgd_freeze_blocks", "eval.sgd_clip", "eval.lora_rank", "eval.lora_targets", "eval.lora_alpha",
    "eval.lora_batch_docs", "eval.lora_beta1", "eval.lora_beta2", "eval.lora_wd", "eval.lora_warm_a",
    "eval.lora_phase_docs", "eval.lora_phases", "eval.lora_phase_lr",
    "eval.experts", "eval.mix", "eval.mix_rule", "eval.mix_eta", "eval.mix_lr", "eval.mix_floor",
    "eval.mix_fixed_share", "eval.ngram_order", "eval.ngram_alpha",
    "eval.tilt", "eval.tilt_order", "eval.tilt_threshold", "eval.tilt_beta", "eval.val_leak",
    "eval.correction_bytes", "eval.correction_boost",
    "quant.matrix", "quant.mlp", "quant.embed", "quant.clip", "quant.clip_quantile", "quant.clip_k",
    "quant.embed_clip_k", "quant.alloc", "quant.fisher_step", "quant.fisher_max_rms", "quant.fisher_batches",
    "quant.fisher_count_batches",
    "quant.keep_float_max_numel", "quant.keep_fp16", "quant.gptq", "quant.gptq_batches",
    "quant.gptq_damp", "quant.gptq_block", "quant.gptq_reserve_seconds", "quant.qat", "quant.qat_from_frac",
    "quant.qat_noise", "quant.qat_scope", "quant.nekp", "quant.nekp_target",
    "pack.compressor", "pack.level", "pack.transform", "pack.code_form",
]  # fmt: skip


def test_field_list_is_frozen():
    assert all_fields() == FROZEN_FIELDS


def test_every_field_has_a_docstring():
    docs = field_docs()
    sections = {"model", "data", "train", "optim", "eval", "quant", "pack"}
    missing = [k for k, v in docs.items() if not v and k not in sections]
    assert missing == []


def test_overrides_are_typed():
    cfg = apply_overrides(
        RunConfig(),
        {
            "model.num_layers": "11",
            "model.mlp_mult": "3",
            "model.tie_embeddings": "false",
            "track": "cpu-5min-2mb",
        },
    )
    assert cfg.model.num_layers == 11 and isinstance(cfg.model.num_layers, int)
    assert cfg.model.mlp_mult == 3.0 and isinstance(cfg.model.mlp_mult, float)
    assert cfg.model.tie_embeddings is False
    assert cfg.track == "cpu-5min-2mb"
    assert RunConfig().model.num_layers == 9  # frozen: the original is untouched


def test_unknown_override_names_the_key_and_suggests():
    with pytest.raises(ConfigError, match=r"model\.num_layer'.*did you mean model\.num_layers"):
        apply_overrides(RunConfig(), {"model.num_layer": "3"})


def test_a_benchmarks_set_pairs_become_overrides_and_a_malformed_one_is_named():
    """The benchmarks' ``--set KEY=VALUE`` lists (bench_throughput, bench_cpu_bf16, fingerprint)."""
    got = pairs_to_overrides(["train.microbatches=1", "eval.experts=ngram,match", "data.root=a=b"])
    assert got == {"train.microbatches": "1", "eval.experts": "ngram,match", "data.root": "a=b"}
    assert apply_overrides(RunConfig(), got).train.microbatches == 1
    for bad in ("train.microbatches", "=1"):
        with pytest.raises(ConfigError, match=rf"--set '{bad}': expected KEY=VALUE"):
            pairs_to_overrides(["eval.val_docs=8", bad])


def test_bad_value_names_the_key_and_type():
    with pytest.raises(ConfigError, match=r"--train\.seq_len: expected int, got 'abc'"):
        apply_overrides(RunConfig(), {"train.seq_len": "abc"})
    with pytest.raises(ConfigError, match="expected bool"):
        apply_overrides(RunConfig(), {"train.compile": "maybe"})


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"model_dim": 500, "num_heads": 8}, "model.num_heads=8 must divide model.model_dim=500"),
        ({"num_heads": 8, "num_kv_heads": 3}, "model.num_kv_heads=3 must divide model.num_heads=8"),
        ({"model_dim": 24, "num_heads": 8, "num_kv_heads": 4}, "head_dim .* must be even"),
        ({"num_layers": 0}, "model.num_layers must be > 0"),
        ({"vocab_size": 70_000}, "model.vocab_size=70000 exceeds"),
    ],
)
def test_model_cross_field_errors(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        ModelConfig(**kwargs)


def test_gptq_reserve_must_leave_training_time_and_levels_must_suit_the_codec():
    from pgolf.config import PackConfig, QuantConfig

    train = TrainConfig(max_wallclock_seconds=5.0)
    with pytest.raises(
        ConfigError, match=r"quant\.gptq_reserve_seconds=8 must be below train\.max_wallclock"
    ):
        RunConfig(train=train, quant=QuantConfig(gptq=True, gptq_reserve_seconds=8.0))
    RunConfig(train=train, quant=QuantConfig(gptq=False, gptq_reserve_seconds=8.0))  # no GPTQ: no reserve
    for codec, level in (("zlib", 22), ("brotli", 12), ("lzma", 10), ("zstd", 0)):
        with pytest.raises(ConfigError, match=f"pack.level={level} is not a {codec} level"):
            PackConfig(compressor=codec, level=level)
    PackConfig(compressor="auto", level=99)  # auto uses each codec's strongest level


def test_train_batch_must_split_into_sequences():
    with pytest.raises(ConfigError, match=r"train\.batch_tokens=1000 must be a multiple"):
        TrainConfig(batch_tokens=1000, microbatches=8, seq_len=64)


def test_unknown_track():
    with pytest.raises(ConfigError, match="unknown track 'nope'"):
        RunConfig(track="nope")


def test_unknown_preset_lists_available():
    with pytest.raises(ConfigError, match=r"unknown preset 'nope'; available: .*baseline-cpu"):
        get_preset("nope")


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_preset_round_trips_through_dict(name):
    cfg = get_preset(name)
    assert cfg.preset == name
    assert config_from_dict(cfg.to_dict()) == cfg
    get_track(cfg.track)
    assert PRESETS[name].__doc__, "every preset cites its source in its docstring"


def test_config_from_dict_rejects_unknown_keys():
    d = RunConfig().to_dict()
    d["model"]["num_layerz"] = 3
    with pytest.raises(ConfigError, match="num_layerz"):
        config_from_dict(d)


def test_baseline_has_the_contest_parameter_count():
    cfg = get_preset("baseline")
    assert count_parameters(GPT(cfg.model)) == 17_059_912
    m = cfg.model
    assert (m.num_layers, m.model_dim, m.num_heads, m.num_kv_heads, m.mlp_mult, m.vocab_size) == (
        9, 512, 8, 4, 2.0, 1024,
    )  # fmt: skip
    assert (cfg.train.seq_len, cfg.train.batch_tokens, m.logit_softcap, m.qk_gain_init) == (
        1024,
        524_288,
        30.0,
        1.5,
    )
    assert cfg.track == "10min-16mb" and get_track(cfg.track).artifact_cap_bytes == 16_000_000


def test_cpu_presets_use_the_cpu_track():
    assert get_preset("baseline-cpu").track == "cpu-5min-2mb"
    assert get_preset("debug").track == "debug" and not get_track("debug").official
    assert dataclasses.asdict(get_track("cpu-5min-2mb"))["artifact_cap_bytes"] == 2_000_000
