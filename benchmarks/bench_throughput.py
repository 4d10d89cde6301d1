"""Training and evaluation throughput of a preset, measured side by side in one process.

    python benchmarks/bench_throughput.py --preset baseline-cpu --steps 12 [--data-root data]

Builds the demo dataset if needed, then times, after 2 untimed warm-up steps: the loader, the
forward+backward of every micro-batch, the optimizer step (Muon + Adam), and a no-grad evaluation
forward over the validation stream. Prints tokens/s for training and evaluation, each phase's share
of a training step, and eval/train speed as a ratio (the figure that is robust to machine noise).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import time
from pathlib import Path

import torch

from pgolf.data.stdlib_corpus import build_demo_dataset
from pgolf.dist import DistInfo
from pgolf.presets import get_preset
from pgolf.runlog import RunLog
from pgolf.train.trainer import Trainer


def bench(preset: str, steps: int, data_root: Path) -> dict:
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
    s = time.perf_counter()
    r = t.validate()
    eval_s = time.perf_counter() - s
    train_tps = steps * tc.batch_tokens / train_s
    eval_tps = r.tokens / eval_s
    return {
        "preset": preset,
        "machine": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads",
        "torch": torch.__version__,
        "steps": steps,
        "train_tokens_per_s": round(train_tps),
        "eval_tokens_per_s": round(eval_tps),
        "eval_over_train_speed": round(eval_tps / train_tps, 2),
        "step_ms": round(1000 * train_s / steps, 1),
        "share": {k: round(v / train_s, 3) for k, v in phases.items()},
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="baseline-cpu")
    p.add_argument("--steps", type=int, default=12)
    p.add_argument("--data-root", type=Path, default=Path("data"))
    args = p.parse_args()
    print(json.dumps(bench(args.preset, args.steps, args.data_root), indent=2))


if __name__ == "__main__":
    main()
