"""``pgolf`` command line. Every run command takes typed dotted overrides (``--model.num_layers 11``)
generated from the config dataclasses, with their attribute docstrings as help."""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
from pathlib import Path

from pgolf import __version__
from pgolf.config.run import all_fields, apply_overrides, format_config
from pgolf.errors import ConfigError, Interrupted, PgolfError
from pgolf.tools import artifact_commands, docs
from pgolf.tools.artifact_commands import track_status
from pgolf.tools.config_files import resolve
from pgolf.tools.data import commands as data_commands
from pgolf.tools.overrides import add_overrides, collect_overrides
from pgolf.tools.sweep import commands as sweep_commands


def _add_plan(sub: argparse._SubParsersAction) -> None:
    pl = sub.add_parser(
        "plan", help="project a preset onto a machine: shapes, FLOPs, step time, memory, bytes, eval time"
    )
    pl.add_argument("preset", help="preset name or config file")
    pl.add_argument(
        "--hardware",
        choices=("8xH100", "1xH100", "cpu"),
        default=None,
        help="machine to project onto (default: the track's: 8xH100 or cpu)",
    )
    pl.add_argument(
        "--val-tokens",
        type=int,
        default=None,
        help="validation tokens to cost the evaluation (default: the config's data if present, "
        "else the contest's stream)",
    )
    pl.add_argument("--json", action="store_true", help="print the projection as JSON")
    add_overrides(pl)


def _add_preflight(sub: argparse._SubParsersAction) -> None:
    pf = sub.add_parser(
        "preflight",
        help="on the paid machine, before the run: measure every phase, "
        "memory, calibration, export and evaluation against the caps",
    )
    pf.add_argument("preset", help="preset name or config file")
    pf.add_argument("--steps", type=int, default=3, help="timed steps per phase of the schedule")
    pf.add_argument("--eval-share", type=float, default=0.02, help="share of validation documents scored")
    pf.add_argument(
        "--val-tokens",
        type=int,
        default=None,
        help="project the evaluation onto a stream this long (stand-in data)",
    )
    pf.add_argument(
        "--ranks",
        type=int,
        default=None,
        help="project the evaluation onto this many processes (default: these)",
    )
    pf.add_argument("--out", type=Path, default=None, help="keep its log, artifact and preflight.json here")
    pf.add_argument("--json", action="store_true", help="print the report as JSON")
    add_overrides(pf)


def _add_config(sub: argparse._SubParsersAction) -> None:
    c = sub.add_parser("config", help="inspect presets").add_subparsers(dest="config_command", required=True)
    s = c.add_parser("show", help="print a preset's or config file's resolved config")
    s.add_argument("preset", help="preset name or config file")
    s.add_argument("--json", action="store_true", help="print the resolved config as JSON")
    s.add_argument("--save", type=Path, default=None, help="write it as a config file: the base + overrides")
    add_overrides(s)
    c.add_parser("list", help="list presets with their sources")


def build_parser() -> argparse.ArgumentParser:
    p = Parser(prog="pgolf", description="Parameter golf: train, pack and evaluate tiny LMs.")
    p.add_argument("--version", action="version", version=f"pgolf {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    d = sub.add_parser("demo", help="build the embedded corpus, train cpu-best briefly, pack, evaluate")
    d.add_argument("--data-root", type=Path, default=Path("data"), help="where the demo dataset is built")
    d.add_argument(
        "--out", type=Path, default=Path("runs/demo"), help="run folder (log, artifact, PNG; replaced)"
    )
    d.add_argument("--seconds", type=float, default=None, help="training budget in seconds (default 120)")
    d.add_argument("--preset", default=None, help="the preset to train (default cpu-best)")
    add_overrides(d)

    data_commands.add_parser(sub)

    t = sub.add_parser("train", help="train a preset, export the artifact and score its round trip")
    t.add_argument(
        "--preset", default="baseline-cpu", help="preset name or config file (`pgolf config list`)"
    )
    t.add_argument(
        "--config", type=Path, default=None, help="a config file (TOML: a base preset + overrides)"
    )
    t.add_argument("--out", type=Path, default=None, help="run folder (default runs/<preset>)")
    t.add_argument("--resume", action="store_true", help="continue the run in --out from its checkpoint.pt")
    t.add_argument("--force", action="store_true", help="replace the run already in --out (default: refuse)")
    t.add_argument(
        "--off-track",
        action="store_true",
        help="run although the config cannot be on its track (logged at the top)",
    )
    add_overrides(t)

    artifact_commands.add_parsers(sub)
    _add_plan(sub)
    _add_preflight(sub)
    sweep_commands.add_parser(sub)
    _add_config(sub)
    docs.add_parser(sub)
    from pgolf.tools.records.commands import add_parsers

    add_parsers(sub)
    return p


def cmd_demo(args: argparse.Namespace) -> int:
    from pgolf.tools.demo import DEMO_PRESET, DEMO_SECONDS, run_demo

    result = run_demo(
        data_root=args.data_root,
        out_dir=args.out,
        seconds=args.seconds if args.seconds is not None else DEMO_SECONDS,
        overrides=collect_overrides(args),
        preset=args.preset or DEMO_PRESET,
    )
    return track_status(result.off_track)


def cmd_train(args: argparse.Namespace) -> int:
    from pgolf import dist
    from pgolf.pipeline import run
    from pgolf.tools.summary import run_summary

    name = str(args.config) if args.config else args.preset
    cfg = apply_overrides(resolve(name), collect_overrides(args))
    from pgolf.tools.plan.artifact import off_track_before

    data_commands.require_data(cfg.data)
    reasons = off_track_before(cfg)
    if reasons and not args.off_track:
        raise ConfigError(
            f"this run cannot be on its track ({'; '.join(reasons)}): fix it, or pass --off-track"
        )
    notes = tuple(f"OFF TRACK from the start (--off-track): {r}" for r in reasons)
    try:
        with dist.closing():
            result = run(
                cfg,
                out_dir=args.out or Path("runs") / Path(name).stem,
                resume=args.resume,
                force=args.force,
                notes=notes,
            )
    except Interrupted as e:
        hint = f"\nresume it: {resume_command(args)}" if e.resumable else ""
        raise Interrupted(f"{e}{hint}", e.resumable) from None
    if int(os.environ.get("RANK", "0")) != 0:  # the group is gone: ask the launcher
        return 0
    print("\n" + run_summary(result))
    return track_status(result.off_track)


def resume_command(args: argparse.Namespace) -> str:
    """The command that resumes an interrupted ``pgolf train``, under the launcher it ran in."""
    again = [
        a for a in (sys.argv[1:] if args.argv is None else args.argv) if a not in ("--resume", "--force")
    ]
    world = int(os.environ.get("WORLD_SIZE", "1"))
    launcher = f"torchrun --standalone --nproc_per_node={world} -m pgolf" if world > 1 else "pgolf"
    return f"{launcher} {shlex.join(again)} --resume"


def cmd_config(args: argparse.Namespace) -> int:
    from pgolf.tools.presets import PRESETS

    if args.config_command == "list":
        for name, fn in PRESETS.items():
            print(f"{name:14s} {' '.join((fn.__doc__ or '').split())}")
        return 0
    cfg = apply_overrides(resolve(args.preset), collect_overrides(args))
    if args.save:
        from pgolf.tools.config_files import write_config_file

        diff = write_config_file(cfg, args.save, args.preset)
        print(f"wrote {args.save}: {args.preset} + {len(diff)} override(s)")
        return 0
    if args.json:
        print(json.dumps(cfg.to_dict(), indent=2))
        return 0
    from pgolf.tools.estimate import estimate

    print(format_config(cfg))
    print(f"\n# estimate on track {cfg.track} (before training)")
    print("\n".join(estimate(cfg).lines()))
    return 0


def cmd_plan(args: argparse.Namespace) -> int:
    """Exit 0 when every projection is inside its cap, 1 when one is not."""
    from pgolf.errors import DataError
    from pgolf.tools.plan.report import make_plan

    cfg = apply_overrides(resolve(args.preset), collect_overrides(args))
    tokens = None
    if args.val_tokens is None:
        try:
            from pgolf.data.valset import load_validation

            tokens = load_validation(cfg.data, cfg.model.vocab_size).tokens
        except (DataError, OSError):
            pass  # no local data: the plan says so, or uses the contest's stream length
    plan = make_plan(cfg, args.hardware, args.val_tokens, tokens)
    print(json.dumps(plan.to_dict(), indent=2) if args.json else "\n".join(plan.lines()))
    return 1 if plan.problems else 0


def cmd_records(args: argparse.Namespace) -> int:
    from pgolf.tools.records import commands

    if args.command == "record":
        cfg = apply_overrides(resolve(args.preset), collect_overrides(args)) if args.preset else None
        return commands.cmd_record(args, cfg)
    return getattr(commands, f"cmd_{args.command}")(args)


def cmd_preflight(args: argparse.Namespace) -> int:
    """Exit 0 when every measured figure fits, 1 when one would miss."""
    import shutil

    from pgolf import dist
    from pgolf.fileio import write_json_atomic
    from pgolf.tools.preflight import run_preflight, scratch_dir

    cfg = apply_overrides(resolve(args.preset), collect_overrides(args))
    with dist.closing():
        dist.setup(cfg.train.device)
        out = args.out or scratch_dir()
        try:
            pf = run_preflight(
                cfg,
                out,
                steps=args.steps,
                eval_share=args.eval_share,
                val_tokens=args.val_tokens,
                ranks=args.ranks,
            )
            if dist.rank() == 0:
                write_json_atomic(out / "preflight.json", pf.to_dict())
                print(json.dumps(pf.to_dict(), indent=2) if args.json else "\n".join(pf.lines()))
            dist.barrier()  # every rank is done with the folder
        finally:
            if args.out is None and dist.rank() == 0:
                shutil.rmtree(out, ignore_errors=True)
    return 0 if pf.ok else 1


class Parser(argparse.ArgumentParser):
    """argparse without abbreviations (``--model.num_layer`` would silently mean ``num_layers``), with
    the nearest config key suggested for a misspelled override."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message: str):
        import difflib
        import re

        for flag in re.findall(r"--([\w.]+)", message) if "unrecognized arguments" in message else []:
            near = difflib.get_close_matches(flag, all_fields(), n=1, cutoff=0.6)
            if near:
                message += f" (did you mean --{near[0]}?)"
        super().error(message)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.argv = argv
    handler = {
        "demo": cmd_demo,
        "data": data_commands.cmd_data,
        "train": cmd_train,
        "eval": artifact_commands.cmd_eval,
        "pack": artifact_commands.cmd_pack,
        "inspect": artifact_commands.cmd_inspect,
        "bundle": artifact_commands.cmd_bundle,
        "config": cmd_config,
        "plan": cmd_plan,
        "preflight": cmd_preflight,
        "sweep": sweep_commands.cmd_sweep,
        "docs": lambda a: docs.cmd_docs(a, build_parser()),
        **dict.fromkeys(("record", "compare", "check", "runs", "plot"), cmd_records),
    }
    try:
        return handler[args.command](args)
    except PgolfError as e:
        rank = int(os.environ.get("RANK", "0"))
        if not isinstance(e, Interrupted):  # an error may be one rank's alone: each names itself
            print(f"pgolf: error{f' (rank {rank})' if rank else ''}: {e}", file=sys.stderr)
        elif rank == 0:  # every rank was interrupted: one speaks
            print(f"pgolf: {e}", file=sys.stderr)
        return getattr(e, "exit_status", 2)


if __name__ == "__main__":
    sys.exit(main())
