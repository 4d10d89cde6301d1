"""Training and evaluation throughput of a preset, measured side by side in one process.

    python benchmarks/bench_throughput.py --preset baseline-cpu --steps 12 [--data-root data]
        [--eval-batches 4096,32768]

Builds the demo dataset if needed, then times, after 2 untimed warm-up steps: the loader, the
forward+backward of every micro-batch, the optimizer step (Muon + Adam); then no-grad scoring of the
validation stream with the contest's plain windows at each ``--eval-batches`` size (tokens per
forward; the preset's own ``eval.batch_tokens`` when not given), the sizes interleaved over
``--reps`` rounds (median kept), and once with the preset's own window plan. Prints tokens/s for
training and evaluation, each phase's share of a training step, and eval/train speed as a ratio
(the figure that is robust to machine noise).
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

from pgolf.dist import DistInfo
from pgolf.eval.predict import ModelPredictor
from pgolf.eval.score import score
from pgolf.methods.windows import plan_windows
from pgolf.runlog import RunLog
from pgolf.tools.data.stdlib_corpus import build_demo_dataset
from pgolf.tools.presets import get_preset
from pgolf.train.trainer import Trainer


def bench(preset: str, steps: int, data_root: Path, eval_batches: list[int], reps: int) -> dict:
    build_demo_dataset(data_root)
    cfg = get_preset(preset)
    cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, root=str(data_root)))
    t = Trainer(cfg, Path("/tmp/pgolf-bench"), DistInfo(0, 1, 0, torch.device("cpu")), RunLog(None), False)
    t.setup()
    tc = cfg.train
    phases = {"loader": 0.0, "forward_backward": 0.0, "optimizer": 0.0}
    for i in range(steps + 2):
        timed = i >= 2
        for _ in range(t.accum):
            s = time.perf_counter()
            x, y = t.loader.next_batch(t.local_tokens, tc.seq_len)
            m = time.perf_counter()
            t.model(x, y).div(t.accum).backward()
            e = time.perf_counter()
            if timed:
                phases["loader"] += m - s
                phases["forward_backward"] += e - m
        s = time.perf_counter()
        t.opt.step(1.0, cfg.optim.muon_momentum)
        t.opt.zero_grad()
        if timed:
            phases["optimizer"] += time.perf_counter() - s
    train_s = sum(phases.values())
    train_tps = steps * tc.batch_tokens / train_s
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
        "preset": preset,
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
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="baseline-cpu")
    p.add_argument("--steps", type=int, default=12)
    p.add_argument("--data-root", type=Path, default=Path("data"))
    p.add_argument("--eval-batches", default="", help="comma list of eval batch sizes (tokens) to compare")
    p.add_argument("--reps", type=int, default=3)
    args = p.parse_args()
    batches = [int(b) for b in args.eval_batches.split(",") if b]
    print(json.dumps(bench(args.preset, args.steps, args.data_root, batches, args.reps), indent=2))


if __name__ == "__main__":
    main()
