"""``pgolf`` command line. Every run command takes typed dotted overrides (``--model.num_layers 11``)
generated from the config dataclasses, with their attribute docstrings as help."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from pgolf import __version__
from pgolf.config.overrides import apply_overrides, field_docs
from pgolf.config.run import all_fields, format_config
from pgolf.errors import PgolfError


def add_overrides(p: argparse.ArgumentParser, prefixes: tuple[str, ...] | None = None) -> None:
    docs = field_docs()
    group = p.add_argument_group("config overrides (typed; see `pgolf config show`)")
    for key in all_fields():
        if key == "preset":  # informational; chosen with --preset
            continue
        if prefixes is None or key.startswith(prefixes):
            group.add_argument(f"--{key}", dest=f"ov:{key}", metavar="V", default=None, help=docs[key])


def collect_overrides(args: argparse.Namespace) -> dict[str, Any]:
    return {k[3:]: v for k, v in vars(args).items() if k.startswith("ov:") and v is not None}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="pgolf", description="Parameter golf: train, pack and evaluate tiny LMs."
    )
    p.add_argument("--version", action="version", version=f"pgolf {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    d = sub.add_parser("demo", help="build the embedded corpus, train baseline-cpu briefly, pack, evaluate")
    d.add_argument("--data-root", type=Path, default=Path("data"), help="where the demo dataset is built")
    d.add_argument("--out", type=Path, default=Path("runs/demo"), help="run folder (log, artifact, PNG)")
    d.add_argument("--seconds", type=float, default=None, help="training budget in seconds (default 120)")
    add_overrides(d)

    data = sub.add_parser("data", help="build or download datasets").add_subparsers(
        dest="data_command", required=True
    )
    b = data.add_parser("build", help="text/JSONL documents -> tokenizer + shards + manifest")
    b.add_argument(
        "--input",
        nargs="+",
        required=True,
        type=Path,
        help=".txt (one doc per file), .jsonl (one {'text': ...} per line) or folders of them",
    )
    b.add_argument("--vocab", type=int, required=True, help="SentencePiece BPE vocabulary size")
    b.add_argument("--out", type=Path, required=True, help="data root (gets tokenizers/ and datasets/)")
    b.add_argument("--name", default="corpus", help="dataset base name: datasets/<name>_sp<vocab>/")
    b.add_argument("--val-docs", type=int, required=True, help="documents in the validation split")
    f = data.add_parser("fineweb", help="download the contest's published FineWeb export")
    f.add_argument("--variant", default="sp1024", help="sp<VOCAB> or byte260")
    f.add_argument("--train-shards", type=int, default=80, help="training shards to fetch (1e8 tokens each)")
    f.add_argument("--out", type=Path, default=Path("data"), help="data root")
    m = data.add_parser("demo", help="build the embedded demo dataset (stdlib docstrings and comments)")
    m.add_argument("--out", type=Path, default=Path("data"), help="data root")
    m.add_argument("--vocab", type=int, default=1024)
    m.add_argument("--force", action="store_true", help="rebuild even if a matching build exists")

    t = sub.add_parser("train", help="train a preset, export the artifact and score its round trip")
    t.add_argument("--preset", default="baseline-cpu", help="preset name (see `pgolf config list`)")
    t.add_argument("--out", type=Path, default=None, help="run folder (default runs/<preset>)")
    t.add_argument("--resume", action="store_true", help="continue from <out>/checkpoint.pt if present")
    add_overrides(t)

    e = sub.add_parser("eval", help="score an artifact on the validation set (no training state needed)")
    e.add_argument("artifact", type=Path)
    e.add_argument("--json", action="store_true", help="print the result as JSON")
    add_overrides(e, ("data.", "eval.", "train.device"))

    c = sub.add_parser("config", help="inspect presets").add_subparsers(dest="config_command", required=True)
    s = c.add_parser("show", help="print a preset's resolved config")
    s.add_argument("preset")
    s.add_argument("--json", action="store_true")
    add_overrides(s)
    c.add_parser("list", help="list presets with their sources")
    return p


def cmd_demo(args: argparse.Namespace) -> int:
    from pgolf.demo import DEMO_SECONDS, run_demo

    result = run_demo(
        data_root=args.data_root,
        out_dir=args.out,
        seconds=args.seconds if args.seconds is not None else DEMO_SECONDS,
        overrides=collect_overrides(args),
    )
    return _track_status(result.off_track)


def cmd_data(args: argparse.Namespace) -> int:
    if args.data_command == "build":
        from pgolf.data.build import build_dataset, iter_input_documents

        built = build_dataset(
            iter_input_documents(args.input),
            out_root=args.out,
            name=args.name,
            vocab_size=args.vocab,
            val_docs=args.val_docs,
            source={"inputs": [str(p) for p in args.input]},
        )
    elif args.data_command == "demo":
        from pgolf.data.stdlib_corpus import build_demo_dataset

        built = build_demo_dataset(args.out, vocab_size=args.vocab, force=args.force)
    else:
        from pgolf.data.fineweb import fetch_fineweb

        r = fetch_fineweb(args.variant, args.train_shards, args.out)
        print(
            f"{len(r.downloaded)} downloaded, {len(r.skipped)} already present\n"
            f"dataset   {r.dataset_dir}\ntokenizer {r.tokenizer_path}"
        )
        return 0
    s = built.manifest["splits"]
    print(
        f"dataset   {built.dataset_dir}\ntokenizer {built.tokenizer_path}\n"
        f"train     {s['train']['docs']} docs, {s['train']['tokens']:,} tokens\n"
        f"val       {s['val']['docs']} docs, {s['val']['tokens']:,} tokens"
    )
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from pgolf import dist
    from pgolf.demo import summary
    from pgolf.pipeline import run
    from pgolf.presets import get_preset

    cfg = apply_overrides(get_preset(args.preset), collect_overrides(args))
    try:
        result = run(cfg, out_dir=args.out or Path("runs") / args.preset, resume=args.resume)
    finally:
        dist.teardown()
    if int(os.environ.get("RANK", "0")) != 0:  # the group is gone: ask the launcher
        return 0
    print("\n" + summary(result))
    return _track_status(result.off_track)


def _track_status(off_track: list[str]) -> int:
    """Exit status 1, with the reasons on stderr, when a run or an evaluation is off its track
    (over the byte cap, the training-time cap or the eval-time cap)."""
    for reason in off_track:
        print(f"pgolf: off track: {reason}", file=sys.stderr)
    return 1 if off_track else 0


def cmd_eval(args: argparse.Namespace) -> int:
    from pgolf.eval.artifact import evaluate_artifact

    overrides = collect_overrides(args)
    device = overrides.pop("train.device", "auto")
    data = eval_cfg = None
    if overrides:
        from pgolf.config.run import RunConfig
        from pgolf.pack.format import read_artifact
        from pgolf.pack.meta import ArtifactMeta

        meta = ArtifactMeta.from_dict(read_artifact(args.artifact)[1], str(args.artifact))
        cfg = apply_overrides(RunConfig(data=meta.data, eval=meta.eval), overrides)
        data, eval_cfg = cfg.data, cfg.eval
    r = evaluate_artifact(args.artifact, data=data, eval_cfg=eval_cfg, device=device)
    if args.json:
        print(json.dumps(r.to_dict(), indent=2))
    else:
        res, size = r.score.result, r.size
        print("\n".join(r.score.log_lines()))
        print(
            f"val_tokens:{res.tokens} val_bytes:{res.bytes} eval_time:{r.score.seconds:.2f}s "
            f"({', '.join(f'{k} {v:.2f}s' for k, v in r.score.phases.items())})\n"
            f"bytes_model:{size.model_bytes} bytes_code:{size.code_bytes} (recorded at training) "
            f"bytes_total:{size.total_bytes} {size.verdict()}"
        )
    if r.code_changed:
        print(
            "pgolf: warning: the installed counted code differs from the code this artifact was trained "
            f"with (sha256 {r.meta.code_sha256[:12]}...); bytes_code is the recorded one",
            file=sys.stderr,
        )
    return _track_status(r.off_track)


def cmd_config(args: argparse.Namespace) -> int:
    from pgolf.presets import PRESETS, get_preset

    if args.config_command == "list":
        for name, fn in PRESETS.items():
            print(f"{name:14s} {' '.join((fn.__doc__ or '').split())}")
        return 0
    cfg = apply_overrides(get_preset(args.preset), collect_overrides(args))
    if args.json:
        print(json.dumps(cfg.to_dict(), indent=2))
        return 0
    from pgolf.estimate import estimate

    print(format_config(cfg))
    print(f"\n# estimate on track {cfg.track} (before training)")
    print("\n".join(estimate(cfg).lines()))
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handler = {"demo": cmd_demo, "data": cmd_data, "train": cmd_train, "eval": cmd_eval, "config": cmd_config}
    try:
        return handler[args.command](args)
    except PgolfError as e:
        print(f"pgolf: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
