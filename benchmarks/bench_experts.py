"""Eval-time experts at scale: seconds for each whole-stream table and for the mixer's per-target
loop, at several stream lengths, and a projection to the contest's validation set.

    python benchmarks/bench_experts.py SHARD [--sizes 250000,500000,1000000,2000000] [--target 62000000]

SHARD is any token shard (a training shard: this times the computation, it scores nothing). Each
table is built once per size, one core (numpy); the mixer (linear pool, the model and three experts)
runs its update over every target of the stream, by each rule (``eval.mix_rule``). The projection
fits seconds = a * N * log2(N) (the tables sort once per order) and seconds = a * N (the mixer) to
the largest size and applies it to ``--target`` tokens: under torchrun every rank builds the whole
tables (they read the whole stream), so the table time does not shrink with ranks; the mixer runs
over each rank's share.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from dataclasses import replace

import numpy as np

from pgolf.config.eval import EvalConfig
from pgolf.data.shards import read_shard
from pgolf.eval import experts as ex
from pgolf.eval.mixture import MixtureHead


def timed(fn) -> float:
    s = time.perf_counter()
    fn()
    return time.perf_counter() - s


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("shard")
    p.add_argument("--sizes", default="250000,500000,1000000,2000000")
    p.add_argument("--target", type=int, default=62_000_000)
    p.add_argument("--vocab", type=int, default=1024)
    args = p.parse_args()
    stream = np.asarray(read_shard(args.shard)).astype(np.int64)
    cfg = EvalConfig(experts="ngram,match,bigram")
    rows = []
    for n in (int(s) for s in args.sizes.split(",")):
        t = stream[:n]
        row = {
            "tokens": len(t),
            "ngram_s": timed(lambda t=t: ex.ngram_probs(t, args.vocab, cfg.ngram_order, None)),
            "match_s": timed(lambda t=t: ex.match_probs(t, args.vocab)),
            "bigram_s": timed(lambda t=t: ex.bigram_probs(t, args.vocab)),
            "tilt_hints_s": timed(lambda t=t: ex.tilt_hints(t, cfg.tilt_order, cfg.tilt_threshold)),
        }
        probs = np.random.default_rng(0).random((4, len(t) - 1))
        for rule, key in (("bayes", "mixer_s"), ("eg", "mixer_eg_s")):
            head = MixtureHead.__new__(MixtureHead)  # only the weights' update loop
            head.cfg, head.w = replace(cfg, mix_rule=rule), np.full(4, 0.25)
            row[key] = timed(lambda head=head, probs=probs: head._update(probs))
        rows.append({k: round(v, 3) if isinstance(v, float) else v for k, v in row.items()})
        print(json.dumps(rows[-1]), flush=True)
    last, target = rows[-1], args.target
    nlog = lambda n: n * math.log2(n)  # noqa: E731
    tables = sum(last[k] for k in ("ngram_s", "match_s", "bigram_s", "tilt_hints_s"))
    projection = {
        "target_tokens": target,
        "tables_s_every_rank": round(tables * nlog(target) / nlog(last["tokens"]), 1),
        "mixer_s_one_rank": round(last["mixer_s"] * target / last["tokens"], 1),
        "mixer_s_per_rank_of_8": round(last["mixer_s"] * target / last["tokens"] / 8, 1),
        "mixer_eg_s_one_rank": round(last["mixer_eg_s"] * target / last["tokens"], 1),
    }
    print(json.dumps(projection))


if __name__ == "__main__":
    main()
