"""The contest's own configurations: its naive baseline, the baseline sized for the CPU track, the
reference that CPU-track results are measured against, and the tiny ``debug`` preset the tests run."""

from __future__ import annotations

from dataclasses import replace

from pgolf.config import EvalConfig, ModelConfig, OptimConfig, QuantConfig, RunConfig, TrainConfig
from pgolf.tools.presets.registry import DEMO_DATA, preset


@preset("baseline")
def baseline() -> RunConfig:
    """The contest's naive baseline: 9x512, 8 heads / 4 KV, MLP 2x, vocab 1024, tied, int8+zlib;
    17,059,912 parameters; 1.2244 val_bpb on 8xH100 (records/track_10min_16mb/2026-03-17_NaiveBaseline)."""
    return RunConfig(preset="baseline", track="10min-16mb")


@preset("baseline-cpu")
def baseline_cpu() -> RunConfig:
    """The baseline recipe sized for the cpu-5min-2mb track: 3 layers x 256 (4 heads / 2 KV, head_dim
    64 as in the contest), about 1.64M parameters so int8+zlib plus code fits 2,000,000 bytes, and
    ~7k tokens/s on 2 cores. Schedules keep the contest's shares of the run: warmdown 1200/13780
    steps = 8.7% of the budget, momentum warm-up 500/13780 = 3.6% of the ~400 steps. The fp16
    passthrough threshold scales with the matrices, 65,536 x (256/512)^2 = 16,384, so that, as in
    the contest baseline, every matrix is int8 and only vectors stay float."""
    return RunConfig(
        preset="baseline-cpu",
        track="cpu-5min-2mb",
        model=ModelConfig(num_layers=3, model_dim=256, num_heads=4, num_kv_heads=2),
        data=DEMO_DATA,
        train=TrainConfig(
            seq_len=512,
            batch_tokens=8192,
            microbatches=2,
            max_wallclock_seconds=300.0,
            warmup_steps=0,
            val_every=0,
            log_every=25,
        ),
        optim=OptimConfig(warmdown_frac=0.087, muon_momentum_warmup_steps=15),
        # per-document LoRA TTT in chunks of 128 (score first): the only eval method that won on both
        # corpora on trained -cpu artifacts (benchmarks/RESULTS.md): -0.041 (demo) and -0.031 (prose)
        # against sliding windows every 256 tokens, in 37 s and 99 s of the 300 s eval cap. Forwards of
        # 4,096 tokens (validation during training, the windows-only diagnostic; LoRA batches by
        # documents): 1.5x the scoring speed of 32,768 on 2 cores (bench_throughput.py, RESULTS.md)
        # + one phase of global SGD on the first 25 documents at lr 0.1: -0.0011 to -0.0022 against
        # LoRA alone on 2 seeds x 2 corpora, for 9-21 s (RESULTS.md, phased global SGD)
        eval=EvalConfig(
            batch_tokens=4096, method="docs", stride=128, ttt="lora", lora_phase_docs=25, lora_phase_lr=0.1
        ),
        quant=QuantConfig(keep_float_max_numel=16_384),
    )


@preset("reference-cpu")
def reference_cpu() -> RunConfig:
    """The reference of CPU-track ratios (issue 10): the contest's baseline recipe as its own code runs
    it, sized 4 x 224 at seq 256, one microbatch, warmdown 20%, momentum warm-up 500 steps, matrices
    above 65,536 values kept in float, scored on plain windows (issue 10: 2.1679 on Brown against
    2.1681 for the contest's own code). Its artifact may pass 2,000,000 bytes by a few KB: pgolf's
    counted code is larger than the contest file."""
    cfg = baseline_cpu()
    return replace(
        cfg,
        preset="reference-cpu",
        model=replace(cfg.model, num_layers=4, model_dim=224),
        train=replace(cfg.train, seq_len=256, microbatches=1),
        optim=replace(cfg.optim, warmdown_frac=0.2, muon_momentum_warmup_steps=500),
        eval=replace(cfg.eval, method="plain", ttt="none", lora_phase_docs=0),
        quant=replace(cfg.quant, keep_float_max_numel=65_536),
    )


@preset("debug")
def debug() -> RunConfig:
    """Tiny and fast, for tests: 2 layers x 64, seq 64, 30 steps, no wall-clock cap, on the ``debug``
    track (no caps, nothing judged, nothing official)."""
    cfg = baseline_cpu()
    return replace(
        cfg,
        preset="debug",
        track="debug",
        model=ModelConfig(num_layers=2, model_dim=64, num_heads=4, num_kv_heads=2),
        train=replace(
            cfg.train, seq_len=64, batch_tokens=1024, iterations=30, max_wallclock_seconds=0.0, log_every=10
        ),
        optim=OptimConfig(warmdown_iters=10, muon_momentum_warmup_steps=10),
        eval=EvalConfig(batch_tokens=4096),
    )
