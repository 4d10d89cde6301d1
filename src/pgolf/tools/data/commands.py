"""``pgolf data``: build a dataset from text or JSONL, download the contest's FineWeb export, or build
the embedded demo corpus. Tooling: nothing here is counted code."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(sub: argparse._SubParsersAction) -> None:
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
    b.add_argument(
        "--dev-docs",
        type=int,
        default=0,
        help="documents carved from the training ones as a dev split for tuning (never trained on); the "
        "dataset folder gets the suffix _dev<N>",
    )
    b.add_argument(
        "--selection",
        choices=("hash", "first"),
        default="hash",
        help="validation split: first --val-docs by text hash (default) or in input order (the contest's "
        "rule for docs_selected.jsonl)",
    )
    b.add_argument(
        "--caseops",
        action="store_true",
        help="lossless case factoring before tokenisation; validation scored from a per-token byte sidecar",
    )
    f = data.add_parser("fineweb", help="download the contest's FineWeb export, or a community one")
    f.add_argument("--variant", default="sp1024", help="sp<VOCAB> or byte260, optionally _SUFFIX")
    f.add_argument("--repo", default="willdepueoai/parameter-golf", help="Hugging Face dataset repository")
    f.add_argument("--prefix", default="datasets", help="folder of the export inside the repository")
    f.add_argument("--with-docs", action="store_true", help="also fetch docs_selected.jsonl (the documents)")
    f.add_argument("--replace", action="store_true", help="clear a dataset folder another source filled")
    f.add_argument("--train-shards", type=int, default=80, help="training shards to fetch (1e8 tokens each)")
    f.add_argument("--out", type=Path, default=Path("data"), help="data root")
    m = data.add_parser("demo", help="build the embedded demo dataset (stdlib docstrings and comments)")
    m.add_argument("--out", type=Path, default=Path("data"), help="data root")
    m.add_argument(
        "--vocab", type=int, default=1024, help="SentencePiece BPE vocabulary size (cpu-best: 2048)"
    )
    m.add_argument(
        "--dev-docs",
        type=int,
        default=0,
        help="documents carved from the training ones as a dev split for tuning (60 suggested; default "
        "none, so existing figures stay comparable), into pgolf_demo_sp<vocab>_dev<N>",
    )
    m.add_argument("--force", action="store_true", help="rebuild even if a matching build exists")


def cmd_data(args: argparse.Namespace) -> int:
    if args.data_command == "build":
        from pgolf.tools.data.build import build_dataset, iter_input_documents

        built = build_dataset(
            iter_input_documents(args.input),
            out_root=args.out,
            name=args.name,
            vocab_size=args.vocab,
            val_docs=args.val_docs,
            source={"inputs": [str(p) for p in args.input]},
            caseops=args.caseops,
            selection=args.selection,
            dev_docs=args.dev_docs,
        )
    elif args.data_command == "demo":
        from pgolf.tools.data.stdlib_corpus import build_demo_dataset

        built = build_demo_dataset(args.out, vocab_size=args.vocab, force=args.force, dev_docs=args.dev_docs)
    else:
        from pgolf.tools.data.fineweb import Source, fetch_fineweb

        r = fetch_fineweb(
            args.variant,
            args.train_shards,
            args.out,
            source=Source(args.repo, args.prefix),
            with_docs=args.with_docs,
            replace=args.replace,
        )
        print(
            f"{len(r.downloaded)} downloaded, {len(r.skipped)} already present\n"
            f"dataset   {r.dataset_dir}\ntokenizer {r.tokenizer_path}"
        )
        return 0
    print(f"dataset   {built.dataset_dir}\ntokenizer {built.tokenizer_path}")
    splits = built.manifest["splits"]
    for name, s in ((k, splits[k]) for k in ("train", "val", "dev") if k in splits):
        side = f", byte sidecar {v['bytes']:,} bytes" if (v := s.get("byte_sidecar")) else ""
        print(f"{name:9s} {s['docs']} docs, {s['tokens']:,} tokens{side}")
    if "dev" in splits:
        print("tune on dev: --data.score_split dev (pgolf sweep and benchmarks/ablate.py do by default)")
    return 0


def require_data(data) -> None:
    """Raise a ``DataError`` naming the command that builds a config's data when its dataset or its
    tokenizer is not here (``pgolf train`` and ``pgolf record`` ask before they start anything)."""
    import re

    from pgolf.data.paths import data_root, resolve_data
    from pgolf.errors import DataError

    paths = resolve_data(data)
    missing = [p for p in (paths.dataset_dir, paths.tokenizer) if not p.exists()]
    if not missing:
        return
    demo = re.fullmatch(r"pgolf_demo_sp(\d+)(?:_dev(\d+))?", paths.dataset_dir.name)
    if demo:
        dev = f" --dev-docs {demo[2]}" if demo[2] else ""
        how = f"build it with `pgolf data demo --vocab {demo[1]}{dev} --out {data_root(data)}`"
    else:
        how = "build it (pgolf data build or fineweb: docs/data.md), or set data.root and data.dataset"
    raise DataError(f"{missing[0]} is not here: {how}")
