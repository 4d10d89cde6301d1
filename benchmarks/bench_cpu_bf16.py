"""bf16 against fp32 on this CPU: matmul throughput at a preset's shapes, then training steps of the
preset with ``train.cpu_bf16`` off and on, interleaved in one process (ratios, robust to VM noise).

    python benchmarks/bench_cpu_bf16.py [--preset cpu-best] [--steps 4] [--rounds 4] [--compile]
        [--set model.model_dim=256 ...] [--data-root data]

bf16 matmuls are fast only where oneDNN finds AMX tiles (Intel Sapphire Rapids and later); elsewhere
they can be much slower than fp32, which is why ``train.cpu_bf16`` falls back to fp32 without AMX.
The step rows time full optimizer steps (loader, forward and backward of every micro-batch, Muon and
Adam) after 2 untimed ones; ``--compile`` compiles both models first (minutes on 2 cores).
"""

from __future__ import annotations

import argparse
import dataclasses
import platform
import statistics
import time
from pathlib import Path

import torch

from pgolf import dist
from pgolf.config.run import apply_overrides
from pgolf.errors import PgolfError
from pgolf.runlog import RunLog
from pgolf.tools.data.stdlib_corpus import build_demo_dataset
from pgolf.tools.overrides import pairs_to_overrides
from pgolf.tools.presets import get_preset
from pgolf.train.trainer import Trainer


def matmul_gflops(m: int, k: int, n: int, dtype: torch.dtype, reps: int = 20) -> float:
    a, b = torch.randn(m, k, dtype=dtype), torch.randn(k, n, dtype=dtype)
    for _ in range(3):
        a @ b
    start = time.perf_counter()
    for _ in range(reps):
        a @ b
    return 2 * m * k * n * reps / (time.perf_counter() - start) / 1e9


def trainer(cfg, bf16: bool, compile_: bool) -> Trainer:
    train = dataclasses.replace(cfg.train, cpu_bf16=bf16, compile_cpu=compile_, warmup_steps=0)
    t = Trainer(dataclasses.replace(cfg, train=train), Path("/tmp/pgolf-bench-bf16"),
                dist.DistInfo(0, 1, 0, torch.device("cpu")), RunLog(None, enabled=False), False)  # fmt: skip
    t.setup()
    return t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="cpu-best")
    ap.add_argument("--steps", type=int, default=4, help="steps per timed block")
    ap.add_argument("--rounds", type=int, default=4, help="interleaved blocks per precision (median kept)")
    ap.add_argument("--compile", action="store_true", help="torch.compile both models (train.compile_cpu)")
    ap.add_argument("--progress", type=float, default=0.5, help="run fraction (picks the context length)")
    ap.add_argument("--set", nargs="*", default=[], help="config overrides KEY=VALUE")
    ap.add_argument("--data-root", type=Path, default=Path("data"))
    args = ap.parse_args()
    print(f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, "
          f"torch {torch.__version__}, AMX: {dist.cpu_has_amx()}")  # fmt: skip
    try:
        cfg = apply_overrides(get_preset(args.preset), pairs_to_overrides(args.set))
    except PgolfError as e:
        ap.error(str(e))
    tokens = cfg.train.batch_tokens // cfg.train.microbatches
    d, hidden, v = cfg.model.model_dim, cfg.model.mlp_hidden, cfg.model.vocab_size
    print("\nmatmul GFLOP/s at the preset's shapes (fp32 | bf16 | ratio)")
    shapes = ((tokens, d, hidden, "MLP up"), (tokens, hidden, d, "MLP down"), (tokens, d, v, "head"))
    for m, k, n, what in shapes:
        f32, b16 = matmul_gflops(m, k, n, torch.float32), matmul_gflops(m, k, n, torch.bfloat16)
        print(f"  {what:9s} {m}x{k}x{n}: {f32:7.1f} | {b16:7.1f} | {b16 / f32:5.2f}x")
    build_demo_dataset(args.data_root)
    if cfg.data.root == "data":
        cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, root=str(args.data_root)))
    if not dist.cpu_has_amx():
        print("\nno AMX: train.cpu_bf16 would train in fp32 here; timing bf16 autocast anyway")
    runs = {"fp32": trainer(cfg, False, args.compile), "bf16": trainer(cfg, True, args.compile)}
    if not runs["bf16"].cpu_bf16:
        runs["bf16"].cpu_bf16 = True  # time it even without AMX, to show the cost
    plan = runs["fp32"].schedule.rehearse(args.progress)  # the context length at --progress
    for t in runs.values():
        for _ in range(2):
            t.train_step(plan)
    times: dict[str, list[float]] = {k: [] for k in runs}
    for _ in range(args.rounds):
        for name, t in runs.items():
            start = time.perf_counter()
            for _ in range(args.steps):
                t.train_step(plan)
            times[name].append((time.perf_counter() - start) / args.steps)
    med = {k: statistics.median(v) for k, v in times.items()}
    kind = "compiled" if args.compile else "eager"
    what = f"{kind}, context {plan.seq_len}, median of {args.rounds}"
    print(f"\n{args.preset} {' '.join(args.set)} training steps ({what})")
    for name, s in med.items():
        print(f"  {name}: {1000 * s:6.0f} ms/step  {cfg.train.batch_tokens / s:8.0f} tokens/s")
    print(f"  bf16 / fp32 steps per second: {med['fp32'] / med['bf16']:.2f}x")


if __name__ == "__main__":
    main()
