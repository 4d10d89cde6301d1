"""The submission commands of the CLI: ``record``, ``compare``, ``check``, ``runs``, ``plot``."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from pgolf.errors import PgolfError
from pgolf.tools.overrides import DEST, add_overrides


def add_parsers(sub: argparse._SubParsersAction) -> None:
    r = sub.add_parser("record", help="run seeds of a preset through its bundled file into a records folder")
    r.add_argument("--preset", default=None, help="preset name or config file")
    r.add_argument(
        "--seeds", default=None, help="comma-separated, e.g. 1337,42,2025 (declared before the runs)"
    )
    r.add_argument("--name", default=None, help="folder name: records/<track>/<date>_<name>/")
    r.add_argument("--finalize", type=Path, default=None, metavar="FOLDER",
                   help="refresh submission.json and README.md of a record whose seeds have run")
    r.add_argument("--root", type=Path, default=Path("records"), help="where record folders go")
    r.add_argument("--nproc", type=int, default=1, help="processes per run (torchrun) ")
    r.add_argument("--storage", default=None, metavar="URL",
                   help="a study database shared by several machines (postgresql://USER@HOST/DB): the seeds "
                        "become work items that `pgolf record --join NAME` takes on any machine; this one "
                        "takes seeds too and assembles the folder when all are in")
    r.add_argument("--join", default=None, metavar="NAME",
                   help="take seeds of the record NAME declared at --storage until none is left (where "
                        "--root holds its declared folder: wait for every seed and assemble it)")
    r.add_argument("--author", default="", help="submission.json's author")
    r.add_argument("--github-id", default="", help="submission.json's github_id")
    r.add_argument(
        "--blurb", default="", help="one paragraph: what the record is (README and submission.json)"
    )
    r.add_argument(
        "--against", type=Path, default=None, help="record/runs/logs to compare with in the README"
    )
    add_overrides(r)

    c = sub.add_parser("compare", help="one-sided Welch t-tests of B against A (nats and bpb)")
    c.add_argument("a", type=Path, help="the reference: record folder, run folder(s) parent, or log file")
    c.add_argument("b", type=Path, help="the challenger")
    c.add_argument("--rule", choices=("readme", "practice"), default="readme",
                   help="readme: 0.005 nats at p<0.01; practice: no margin at p<0.25")
    c.add_argument("--margin", type=float, default=None, help="nats (overrides the rule's)")
    c.add_argument("--alpha", type=float, default=None, help="significance level (overrides the rule's)")
    c.add_argument("--mixed-configs", action="store_true",
                   help="pool runs of different configurations on a side (refused otherwise)")
    c.add_argument("--json", action="store_true", help="print sides and tests as JSON")

    k = sub.add_parser("check", help="compliance report of a record folder or a run folder")
    k.add_argument("path", type=Path, help="a record folder or a run folder")
    k.add_argument("--json", action="store_true", help="print the rules as JSON")
    k.add_argument("--sweep", type=Path, default=None, metavar="OUT",
                   help="the pgolf sweep folder that chose the settings: report the split it scored")

    u = sub.add_parser("runs", help="list run folders as a table")
    u.add_argument(
        "roots",
        type=Path,
        nargs="*",
        default=[Path("runs")],
        help="folders searched for result.json (default runs)",
    )

    p = sub.add_parser("plot", help="loss curves and val_bpb of several runs in one PNG, with seed spread")
    p.add_argument(
        "runs", type=Path, nargs="+",
        help="run folders and record folders (grouped by configuration: the seeds of one share a colour)",
    )
    p.add_argument(
        "--x", choices=("steps", "seconds"), default="steps",
        help="x axis: optimizer steps, or seconds of training (read from each run's log)",
    )
    p.add_argument("--out", type=Path, default=Path("runs.png"), help="the PNG to write")


def _comparison(against: Path | None):
    if against is None:
        return None
    return lambda scores: _against(against, scores, "readme")


def cmd_record(args: argparse.Namespace, cfg) -> int:
    from pgolf.tools.records.folder import RecordInfo, finalize_record, make_record

    if args.finalize is not None:
        sub = args.finalize / "submission.json"
        old = json.loads(sub.read_text()) if sub.is_file() else {}
        info = RecordInfo(
            *(getattr(args, k) or old.get(k, "") for k in ("name", "author", "github_id", "blurb"))
        )
        rules = finalize_record(args.finalize, info, _comparison(args.against))
        _print_rules(rules)
        return 1 if any(r.status == "fail" for r in rules) else 0
    if args.join is not None:
        return _join(args)
    if not (args.preset and args.seeds and args.name):
        raise PgolfError(
            "pgolf record needs --preset, --seeds and --name (or --finalize FOLDER, or --join NAME)"
        )
    try:
        seeds = [int(s) for s in args.seeds.split(",")]
    except ValueError:
        raise PgolfError(f"--seeds: expected comma-separated integers, got {args.seeds!r}") from None
    info = RecordInfo(args.name, args.author, args.github_id, args.blurb)
    comparison = _comparison(args.against)
    if args.storage:
        from pgolf.tools.records.spread import record_here

        folder, rules = record_here(cfg, seeds, info, root=args.root, storage=args.storage, nproc=args.nproc,
                                    comparison=comparison)
    else:
        folder, rules = make_record(cfg, seeds, info, root=args.root, nproc=args.nproc, comparison=comparison)
    _print_rules(rules)
    print(f"record folder: {folder}")
    return 1 if any(r.status == "fail" for r in rules) else 0


def _join(args: argparse.Namespace) -> int:
    """``--join NAME``: this machine's data root is ``--data.root``, else $PGOLF_DATA_ROOT, else ./data."""
    from pgolf.config.data import DataConfig
    from pgolf.data.paths import data_root
    from pgolf.tools.records.spread import join

    if not args.storage:
        raise PgolfError("--join NAME needs --storage URL, the database where the record was declared")
    data = str(Path(vars(args).get(f"{DEST}data.root") or data_root(DataConfig())).resolve())
    folder, rules = join(args.join, storage=args.storage, root=args.root, nproc=args.nproc, data_root=data,
                         comparison=_comparison(args.against))
    if rules is None:
        return 0
    _print_rules(rules)
    print(f"record folder: {folder}")
    return 1 if any(r.status == "fail" for r in rules) else 0


def _against(a: Path, new_scores, rule: str) -> dict:
    """The record against a reference measured in the same job: Welch's lines for its README and,
    for the results table, the reference's mean and the ratio of the means in bits per byte."""
    from pgolf.tools.records.logs import load_scores
    from pgolf.tools.records.stats import RULES, admissible

    old, notes = admissible(load_scores(a), "A", reference=True)
    margin, alpha = RULES[rule]
    result = _compare(old, new_scores, margin, alpha)
    lines = [
        f"rule {rule}: margin {margin} nats, alpha {alpha}",
        *notes,
        *result.lines(str(a), "this record"),
    ]
    bpb = result.bpb
    return {"reference": str(a), "val_bpb": bpb.mean_old, "val_bpb_std": bpb.std_old, "seeds": bpb.n_old,
            "ratio": bpb.mean_new / bpb.mean_old, "welch_p": bpb.p, "lines": lines,
            "sources": [s.source for s in old]}


def _compare(old, new, margin: float, alpha: float):
    """Welch in nats and bpb; the verdict is bpb's when the sides tokenize differently."""
    from pgolf.tools.records.stats import compare, same_tokenizer

    pairs = [[(s.val_loss, s.val_bpb) for s in side] for side in (old, new)]
    return compare(*pairs, margin_nats=margin, alpha=alpha, same_tokens=same_tokenizer(*pairs))


def cmd_compare(args: argparse.Namespace) -> int:
    """Screened sides (``stats.admissible``: off-track runs left out and said so; repeated seeds or
    artifacts, and mixed configurations without --mixed-configs, refused), then Welch."""
    from pgolf.tools.records.logs import load_scores
    from pgolf.tools.records.stats import RULES, admissible, check_sides

    old, old_notes = admissible(load_scores(args.a), "A", mixed_configs=args.mixed_configs)
    new, new_notes = admissible(load_scores(args.b), "B", mixed_configs=args.mixed_configs)
    check_sides(old, new)
    notes = old_notes + new_notes
    margin, alpha = RULES[args.rule]
    margin = args.margin if args.margin is not None else margin
    alpha = args.alpha if args.alpha is not None else alpha
    result = _compare(old, new, margin, alpha)
    if args.json:
        sides = {"a": [s.to_dict() for s in old], "b": [s.to_dict() for s in new], "notes": notes}
        print(json.dumps({**sides, **result.to_dict()}))
    else:
        for line in notes:
            print(line)
        for name, scores in (("A", old), ("B", new)):
            for s in scores:
                print(f"{name} seed {s.seed}: val_loss {s.val_loss:.8f} val_bpb {s.val_bpb:.8f} "
                      f"({s.score_label or 'result.json'}; bytes {s.bytes_total}; {s.source})")
        print("\n".join(result.lines(str(args.a), str(args.b))))
    return 0 if result.verdict.passes else 1


def _print_rules(rules) -> None:
    for r in rules:
        print(f"{r.status.upper():5s} {r.name}: {r.detail}")


def cmd_check(args: argparse.Namespace) -> int:
    from pgolf.tools.records.check import check

    rules = check(args.path, args.sweep)
    if args.json:
        print(json.dumps([r.__dict__ for r in rules], indent=2))
    else:
        _print_rules(rules)
        failed = [r.name for r in rules if r.status == "fail"]
        unverified = [r.name for r in rules if r.status == "unverified"]
        note = (
            f" ({len(unverified)} unverified: the files that would prove them are absent)"
            if unverified
            else ""
        )
        print(f"\n{len(failed)} rule(s) failed: {', '.join(failed)}" if failed else f"\nno rule failed{note}")
    return 1 if any(r.status == "fail" for r in rules) else 0


def cmd_runs(args: argparse.Namespace) -> int:
    """One row per run folder; the path is printed whole (the column is as wide as the longest). The
    score column is each run's round trip on the split it scored (its status says when that is dev)."""
    found = sorted({p.parent for root in args.roots for p in root.glob("**/result.json")})
    if not found:
        print(f"no run folders (with result.json) under {', '.join(map(str, args.roots))}")
        return 0
    w = max(3, *(len(str(run)) for run in found))
    print(f"{'run':{w}s} {'preset':22s} {'track':13s} {'seed':>5s} {'steps':>6s} {'bpb':>9s} "
          f"{'bytes':>11s}  status")
    for run in found:
        try:
            r = json.loads((run / "result.json").read_text())
            status = ("on track" if r["on_track"] else "OFF TRACK") + (", dev split" if r.get("split") == "dev" else "")
            seed = r["config"]["train"]["seed"]
            print(f"{run!s:{w}s} {r['preset']:22s} {r['track']:13s} {seed:>5d} "
                  f"{r['steps']:>6d} {r['val_bpb']:>9.4f} {r['bytes_total']:>11,}  {status}")
        except (ValueError, KeyError, TypeError) as e:
            print(f"{run!s:{w}s} unreadable result.json ({type(e).__name__}: {e})")
    return 0


def cmd_plot(args: argparse.Namespace) -> int:
    from pgolf.tools.plot import plot_runs

    print(plot_runs(args.runs, args.out, axis=args.x))
    return 0
