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
from pgolf.config import all_fields, apply_overrides, field_docs, format_config


def _known_errors() -> tuple[type[BaseException], ...]:
    from pgolf.artifact import ArtifactError
    from pgolf.config import ConfigError
    from pgolf.data.build import DataBuildError
    from pgolf.data.fineweb import FetchError
    from pgolf.data.shards import ShardError

    return (ConfigError, ShardError, ArtifactError, DataBuildError, FetchError, FileNotFoundError)


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
    return _cap_status(result.size, result.config.track)


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
        from pgolf.data.demo import build_demo_dataset

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
    from pgolf.presets import get_preset
    from pgolf.train import train

    cfg = apply_overrides(get_preset(args.preset), collect_overrides(args))
    try:
        result = train(cfg, out_dir=args.out or Path("runs") / args.preset, resume=args.resume)
    finally:
        dist.teardown()
    if int(os.environ.get("RANK", "0")) == 0:  # the group is gone: ask the launcher
        print("\n" + summary(result))
    return _cap_status(result.size, result.config.track)


def _cap_status(size, track: str) -> int:
    """Exit status 1, with the reason on stderr, when an artifact does not fit its track's cap."""
    if size.fits:
        return 0
    print(
        f"pgolf: artifact is over the {track} cap by {-size.headroom:,} bytes "
        f"(model {size.model_bytes:,} + code {size.code_bytes:,} > {size.cap_bytes:,})",
        file=sys.stderr,
    )
    return 1


def cmd_eval(args: argparse.Namespace) -> int:
    from pgolf.artifact import SizeReport
    from pgolf.evaluate import evaluate_artifact

    r = evaluate_artifact(args.artifact, collect_overrides(args))
    if args.json:
        print(json.dumps(r, indent=2))
    else:
        print(
            f"final_int8_zlib_roundtrip_exact val_loss:{r['val_loss']:.8f} val_bpb:{r['val_bpb']:.8f}\n"
            f"val_tokens:{r['val_tokens']} val_bytes:{r['val_bytes']} eval_time:{r['eval_seconds']:.2f}s\n"
            f"bytes_model:{r['bytes_model']} bytes_code:{r['bytes_code']} bytes_total:{r['bytes_total']} "
            f"cap:{r['bytes_cap']} {'fits' if r['fits_cap'] else 'OVER THE CAP'}"
        )
    return _cap_status(SizeReport(r["bytes_model"], r["bytes_code"], r["bytes_cap"]), r["track"])


def cmd_config(args: argparse.Namespace) -> int:
    from pgolf.presets import PRESETS, get_preset

    if args.config_command == "list":
        for name, fn in PRESETS.items():
            print(f"{name:14s} {' '.join((fn.__doc__ or '').split())}")
        return 0
    cfg = apply_overrides(get_preset(args.preset), collect_overrides(args))
    print(json.dumps(cfg.to_dict(), indent=2) if args.json else format_config(cfg))
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handler = {"demo": cmd_demo, "data": cmd_data, "train": cmd_train, "eval": cmd_eval, "config": cmd_config}
    try:
        return handler[args.command](args)
    except _known_errors() as e:
        print(f"pgolf: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
