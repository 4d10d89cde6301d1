"""Training and evaluation throughput of a preset, measured side by side in one process.

    python benchmarks/bench_throughput.py --preset baseline-cpu --steps 12 [--data-root data]
        [--eval-batches 4096,32768] [--set train.microbatches=1 ...] [--profile 15]

Builds the demo dataset if needed, then times, after 2 untimed warm-up steps: the loader, the
forward+backward of every micro-batch, the optimizer step (Muon + Adam); then no-grad scoring of the
validation stream with the contest's plain windows at each ``--eval-batches`` size (tokens per
forward; the preset's own ``eval.batch_tokens`` when not given), the sizes interleaved over
``--reps`` rounds (median kept), and once with the preset's own window plan. Prints tokens/s for
training and evaluation, each phase's share of a training step, and eval/train speed as a ratio
(the figure that is robust to machine noise).

MFU (issue 34): the model FLOPs per training token (``plan.flops.count_flops``: 3 x the forward's
matmuls and causal attention at the training length, the usual convention) times the measured
training tokens/s, over this machine's fp32 matmul peak measured in the same process (the median of
max(``--reps``, 5) timed square matmuls of ``--peak-n``, on the threads torch uses for training; bf16 on
a CPU with AMX, where training runs bf16). ``--profile N`` adds the N operators with the most self
CPU time over three more steps after the timed ones (torch.profiler), to show where a step goes.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import statistics
import time
from pathlib import Path

import torch

from pgolf.config.run import RunConfig, apply_overrides
from pgolf.dist import DistInfo, autocast_for
from pgolf.errors import PgolfError
from pgolf.eval.predict import ModelPredictor
from pgolf.eval.score import score
from pgolf.methods.windows import plan_windows
from pgolf.runlog import RunLog
from pgolf.tools.data.stdlib_corpus import build_demo_dataset
from pgolf.tools.overrides import pairs_to_overrides
from pgolf.tools.plan.flops import count_flops
from pgolf.tools.presets import get_preset
from pgolf.train.trainer import Trainer


def matmul_peak(n: int, reps: int, dtype: torch.dtype) -> float:
    """FLOP/s of an n x n x n matmul in ``dtype`` on this CPU: the median of ``reps`` timings."""
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    a @ b  # warm the BLAS
    times = []
    for _ in range(reps):
        s = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - s)
    return 2 * n**3 / statistics.median(times)


def bench(
    preset: str | RunConfig,
    steps: int,
    data_root: Path,
    eval_batches: list[int],
    reps: int,
    peak_n: int = 2048,
    profile: int = 0,
) -> dict:
    build_demo_dataset(data_root)
    cfg = get_preset(preset) if isinstance(preset, str) else preset
    cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, root=str(data_root)))
    t = Trainer(cfg, Path("/tmp/pgolf-bench"), DistInfo(0, 1, 0, torch.device("cpu")), RunLog(None), False)
    t.setup()
    tc = cfg.train
    phases = {"loader": 0.0, "forward_backward": 0.0, "optimizer": 0.0}

    def step() -> tuple[float, float, float]:
        """One training step as the trainer runs it; the seconds of its loader, forward+backward and
        optimizer phases."""
        loader = fb = 0.0
        for _ in range(t.accum):
            s = time.perf_counter()
            x, y = t.loader.next_batch(t.local_tokens, tc.seq_len)
            m = time.perf_counter()
            with autocast_for(t.device, t.cpu_bf16):
                loss = t.model(x, y)
            loss.div(t.accum).backward()
            loader, fb = loader + m - s, fb + time.perf_counter() - m
        s = time.perf_counter()
        t.opt.step(1.0, cfg.optim.muon_momentum)
        t.opt.zero_grad()
        return loader, fb, time.perf_counter() - s

    for i in range(steps + 2):
        times = step()
        if i >= 2:
            for k, v in zip(phases, times, strict=True):
                phases[k] += v
    hot = []
    if profile:  # three more steps under the profiler, after the timed ones (its overhead untimed)
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
            for _ in range(3):
                step()
        table = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
        total = sum(e.self_cpu_time_total for e in table)
        hot = [
            {"op": e.key, "share": round(e.self_cpu_time_total / total, 3), "calls": e.count}
            for e in table[:profile]
        ]
    train_s = sum(phases.values())
    train_tps = steps * tc.batch_tokens / train_s
    flops = count_flops(t.base_model, tc.seq_len, looping=False)
    dtype = torch.bfloat16 if t.cpu_bf16 else torch.float32
    peak = matmul_peak(peak_n, max(reps, 5), dtype)
    t.model.eval()
    t.base_model.rope_len = tc.seq_len
    predictor = ModelPredictor(t.model, t.device)
    plain = plan_windows(t.valset.tokens, "plain", tc.seq_len, tc.seq_len)
    sizes = eval_batches or [cfg.eval.batch_tokens]
    rates: dict[int, list[float]] = {b: [] for b in sizes}
    for _ in range(reps):
        for b in sizes:
            s = time.perf_counter()
            v = t.valset
            r = score(predictor, v.tokens, v.target_bytes, plain, batch_tokens=b, device=t.device)
            rates[b].append(r.tokens / (time.perf_counter() - s))
    s = time.perf_counter()
    r = t.validate()
    method_tps = r.tokens / (time.perf_counter() - s)
    plain_tps = {b: statistics.median(v) for b, v in rates.items()}
    own = plain_tps.get(cfg.eval.batch_tokens)
    return {
        "preset": cfg.preset,
        "machine": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads",
        "torch": torch.__version__,
        "steps": steps,
        "train_tokens_per_s": round(train_tps),
        "eval_plain_tokens_per_s": {b: round(v) for b, v in plain_tps.items()},
        "eval_plain_over_train": {b: round(v / train_tps, 2) for b, v in plain_tps.items()},
        **(
            {"eval_batch_tokens": cfg.eval.batch_tokens, "eval_over_train_speed": round(own / train_tps, 2)}
            if own
            else {}
        ),
        "eval_method": cfg.eval.tag or "plain",
        "eval_method_tokens_per_s": round(method_tps),
        "step_ms": round(1000 * train_s / steps, 1),
        "share": {k: round(v / train_s, 3) for k, v in phases.items()},
        "train_flops_per_token": round(flops.train),
        "matmul_peak_gflops": round(peak / 1e9, 1),
        "peak_dtype": str(dtype).removeprefix("torch."),
        "achieved_gflops": round(train_tps * flops.train / 1e9, 1),
        "mfu": round(train_tps * flops.train / peak, 3),
        **({"profile": hot} if hot else {}),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="baseline-cpu")
    p.add_argument("--steps", type=int, default=12)
    p.add_argument("--data-root", type=Path, default=Path("data"))
    p.add_argument("--eval-batches", default="", help="comma list of eval batch sizes (tokens) to compare")
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--peak-n", type=int, default=2048, help="size of the matmul that measures the peak")
    p.add_argument("--profile", type=int, default=0, help="list the N operators with most self CPU time")
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="config overrides")
    args = p.parse_args()
    batches = [int(b) for b in args.eval_batches.split(",") if b]
    try:
        cfg = apply_overrides(get_preset(args.preset), pairs_to_overrides(args.set))
    except PgolfError as e:
        p.error(str(e))
    result = bench(cfg, args.steps, args.data_root, batches, args.reps, args.peak_n, args.profile)
    result["overrides"] = args.set
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
