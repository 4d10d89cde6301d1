"""The ``pgolf sweep`` commands: ``run`` (a sweep on this machine, or on a shared study), ``worker``
(one of many machines on a shared study), ``show`` (every trial, whichever machine ran it)."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

STORAGE_HELP = (
    "the study's database: postgresql://USER@HOST/DB (pip install 'pgolf[postgres]'), "
    "mysql+pymysql://..., sqlite:///FILE; shared by every worker (password: ~/.pgpass or PGPASSWORD)"
)


def add_parser(sub: argparse._SubParsersAction) -> None:
    sw = sub.add_parser(
        "sweep", help="search a config space with Optuna (a SQLite study, or one shared by many machines)"
    )
    ssub = sw.add_subparsers(dest="sweep_command", required=True)
    r = ssub.add_parser("run", help="run (or resume) the trials of a sweep file, then its finalists")
    r.add_argument("spec", type=Path, help="sweep file (TOML: preset, [space], [fixed], trials, seeds, ...)")
    r.add_argument("--out", type=Path, required=True, help="sweep folder (study.db, trials/, best.toml)")
    r.add_argument("--trials", type=int, default=None, help="override the file's trial count")
    r.add_argument("--storage", default=None, help=f"default OUT/study.db; or {STORAGE_HELP}")
    r.add_argument("--study", default="pgolf", help="the study's name in the database (one per sweep)")
    w = ssub.add_parser(
        "worker", help="join a shared study: take trials and finalists' seeds until none is left"
    )
    w.add_argument("spec", type=Path, help="the sweep file every worker of the study uses")
    w.add_argument("--storage", required=True, help=STORAGE_HELP)
    w.add_argument(
        "--out",
        type=Path,
        required=True,
        help="this worker's folder (its runs under trials/ and final/, best.toml)",
    )
    w.add_argument("--study", default="pgolf", help="the study's name in the database (one per sweep)")
    s = ssub.add_parser("show", help="table of trials, finalists, run folders, history and importance plots")
    s.add_argument("out", type=Path, help="the sweep's folder (its study.db; the plots are written here)")
    s.add_argument("--storage", default=None, help=f"default OUT/study.db; or {STORAGE_HELP}")
    s.add_argument("--study", default="pgolf", help="the study's name in the database")


def cmd_sweep(args: argparse.Namespace) -> int:
    from pgolf.tools.sweep.show import show
    from pgolf.tools.sweep.spec import load_spec
    from pgolf.tools.sweep.study import work

    where = {"storage": args.storage, "name": args.study}
    if args.sweep_command == "show":
        print("\n".join(show(args.out, **where)))
        return 0
    spec = load_spec(args.spec)
    if getattr(args, "trials", None) is not None:
        spec = dataclasses.replace(spec, trials=args.trials)
    best = work(spec, args.out, **where)
    print("\n".join(show(args.out, **where)))
    if best is None:
        print("no trial completed")
        return 1
    print(
        f"best: trial {best['trial']}, mean {best['split']}_bpb {best['mean']:.4f} on the {best['split']} "
        f"split -> {args.out / 'best.toml'}"
    )
    return 0
