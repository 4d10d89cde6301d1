"""Every evaluation method on one artifact, one after another in one process: bpb, the gain
against the artifact's own method, seconds per phase and the ledger's count of checked updates.

    python benchmarks/eval_methods.py ARTIFACT [--data.root R --data.dataset D --data.tokenizer T]
        [--only NAME ...] [--set NAME=KEY:VAL;KEY:VAL ...] [--json OUT] [--split dev|val]

Run it alone on the machine (timings). The methods are override sets of ``eval.*`` on top of the
artifact's recorded settings; each is scored from the artifact alone, as ``pgolf eval`` does.

Choosing among methods is a search, so it scores the dataset's dev split by default (issue 34; the
artifact's dataset needs one, ``pgolf data build --dev-docs``: its dev documents never trained it);
``--split val`` scores validation instead. The split is printed first and kept in every row.
``--set`` adds methods as ``eval.*`` overrides (``own=`` is the artifact's own settings), e.g.
``--only own lr0.02 --set own= lr0.02=ttt_lr:0.02``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys

from pgolf.config.run import all_fields, parse_value
from pgolf.errors import PgolfError
from pgolf.eval.artifact import evaluate_artifact
from pgolf.pack.format import read_artifact
from pgolf.pack.meta import ArtifactMeta
from pgolf.tools.data.splits import search_split

SLIDING = {"method": "sliding", "stride": 256}
LORA = {"method": "docs", "stride": 128, "ttt": "lora"}
PHASED3X40 = {**LORA, "lora_phase_docs": 40, "lora_phases": 3}
PHASED1X25 = {**LORA, "lora_phase_docs": 25, "lora_phase_lr": 0.1}
PHASED1X25_QKVO = {**PHASED1X25, "lora_targets": "q,k,v,o,head", "ttt_lr": 0.02}
METHODS = {
    "plain": {},
    "sliding256": SLIDING,
    "docs256": {"method": "docs", "stride": 256},
    "sliding256+sgd": {**SLIDING, "ttt": "sgd"},
    "sliding256+sgd-lr0.0005": {**SLIDING, "ttt": "sgd", "ttt_lr": 0.0005},
    "docs128+lora": {"method": "docs", "stride": 128, "ttt": "lora"},
    "docs128+lora-lr0.003": {"method": "docs", "stride": 128, "ttt": "lora", "ttt_lr": 0.003},
    "docs128+lora+phased1x25": {**LORA, "lora_phase_docs": 25},
    "docs128+lora+phased3x25": {**LORA, "lora_phase_docs": 25, "lora_phases": 3},
    "docs128+lora+phased1x25-lr0.003": {**LORA, "lora_phase_docs": 25, "lora_phase_lr": 0.003},
    "docs128+lora+phased1x25-lr0.01": {**LORA, "lora_phase_docs": 25, "lora_phase_lr": 0.01},
    "docs128+lora+phased1x25-lr0.03": {**LORA, "lora_phase_docs": 25, "lora_phase_lr": 0.03},
    "docs128+lora+phased3x40-lr0.01": {**PHASED3X40, "lora_phase_lr": 0.01},
    "docs128+lora+phased1x25-lr0.1": PHASED1X25,
    "docs128+lora+phased1x25-lr0.3": {**LORA, "lora_phase_docs": 25, "lora_phase_lr": 0.3},
    "docs128+lora+phased3x40-lr0.03": {**PHASED3X40, "lora_phase_lr": 0.03},
    "docs128+lora+phased1x25-lr0.1-ttt0.02": {**PHASED1X25, "ttt_lr": 0.02},
    "docs128+lora+phased1x25-lr0.1-ttt0.005": {**PHASED1X25, "ttt_lr": 0.005},
    "docs128+lora+phased1x25-lr0.1-rank16": {**PHASED1X25, "lora_rank": 16},
    "docs128+lora+phased1x25-lr0.1-qkvo": {**PHASED1X25, "lora_targets": "q,k,v,o,head"},
    "docs64+lora+phased1x25-lr0.1": {**PHASED1X25, "stride": 64},
    "docs128+lora+phased1x40-lr0.1": {**PHASED1X25, "lora_phase_docs": 40},
    "docs128+lora+phased2x40-lr0.1": {**PHASED1X25, "lora_phase_docs": 40, "lora_phases": 2},
    "docs128+lora+phased1x25-lr0.1-qkvo-ttt0.02": PHASED1X25_QKVO,
    "docs64+lora+phased1x25-lr0.1-qkvo-ttt0.02": {**PHASED1X25_QKVO, "stride": 64},
    "docs64+lora+phased1x25-lr0.1-qkvo-ttt0.02-rank16": {**PHASED1X25_QKVO, "stride": 64, "lora_rank": 16},
    "sliding256+experts-linear": {**SLIDING, "experts": "ngram,match,bigram"},
    "sliding256+experts-log": {**SLIDING, "experts": "ngram,match,bigram", "mix": "log"},
    "sliding256+tilt": {**SLIDING, "tilt": True},
    "sliding256+experts+tilt": {**SLIDING, "experts": "ngram,match,bigram", "tilt": True},
    "docs128+lora+experts+tilt": {
        "method": "docs",
        "stride": 128,
        "ttt": "lora",
        "experts": "ngram,match,bigram",
        "tilt": True,
    },
    "docs128+lora+experts": {"method": "docs", "stride": 128, "ttt": "lora", "experts": "ngram,match,bigram"},
    "len1024-sliding256": {**SLIDING, "seq_len": 1024},
    "len1024-sliding256+ntk": {**SLIDING, "seq_len": 1024, "ntk_seq_len": 512},
}


def method_of(spec: str) -> tuple[str, dict]:
    """``NAME=KEY:VAL;KEY:VAL`` as a method: each value parsed as its ``eval`` field's type
    (``config.run.parse_value``, as every ``--eval.*`` flag is)."""
    name, _, body = spec.partition("=")
    overrides = {}
    for kv in filter(None, body.split(";")):
        key, _, value = kv.partition(":")
        if f"eval.{key}" not in all_fields():
            raise SystemExit(f"eval_methods: --set {name}: eval has no field {key!r}")
        try:
            overrides[key] = parse_value(f"eval.{key}", value, source=f"--set {name}")
        except PgolfError as e:
            raise SystemExit(f"eval_methods: {e}") from None
    return name, overrides


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("artifact")
    ap.add_argument("--data.root", dest="root")
    ap.add_argument("--data.dataset", dest="dataset")
    ap.add_argument("--data.tokenizer", dest="tokenizer")
    ap.add_argument("--only", nargs="*", default=None, help=f"subset of {list(METHODS)}")
    ap.add_argument("--set", nargs="+", default=[], metavar="NAME=KEY:VAL;KEY:VAL", help="extra methods")
    ap.add_argument("--json", default=None, help="write the rows here")
    ap.add_argument("--split", choices=("dev", "val"), default="dev",
                    help="what each method scores: dev split (default) or validation")  # fmt: skip
    args = ap.parse_args(argv)
    meta = ArtifactMeta.from_dict(read_artifact(args.artifact)[1], args.artifact)
    data = meta.data
    for field in ("root", "dataset", "tokenizer"):
        if getattr(args, field):
            data = dataclasses.replace(data, **{field: getattr(args, field)})
    try:
        split, line = search_split(data, args.split, "--split val")
    except PgolfError as e:
        raise SystemExit(f"eval_methods: {e}") from None
    print(line, flush=True)
    data = dataclasses.replace(data, score_split=split)
    methods = dict(METHODS, **dict(method_of(spec) for spec in args.set))
    rows, base = [], None
    for name in args.only or methods:
        cfg = dataclasses.replace(meta.eval, **methods[name])
        r = evaluate_artifact(args.artifact, data=data, eval_cfg=cfg, device="cpu")
        bpb = r.score.result.val_bpb
        base = bpb if base is None else base
        phases = {k: round(v, 1) for k, v in r.score.phases.items()}
        row = {"method": name, "tag": cfg.tag or "plain", "split": split, "val_bpb": round(bpb, 5),
               "delta": round(bpb - base, 5), "seconds": round(r.score.seconds, 1), "phases": phases,
               "tokens": r.score.result.tokens, "updates": r.score.ledger.get("updates", 0),
               **r.score.details}  # fmt: skip
        rows.append(row)
        print(json.dumps(row), flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"artifact": args.artifact, "split": split, "rows": rows}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
