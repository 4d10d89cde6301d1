"""``pgolf`` command line. Every run command takes typed dotted overrides (``--model.num_layers 11``)
generated from the config dataclasses, with their attribute docstrings as help."""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
from pathlib import Path
from typing import Any

from pgolf import __version__
from pgolf.config.run import all_fields, apply_overrides, format_config
from pgolf.errors import ConfigError, Interrupted, PgolfError
from pgolf.tools import docs
from pgolf.tools.config_files import resolve
from pgolf.tools.data import commands as data_commands
from pgolf.tools.overrides import field_docs


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


def _add_bundle(sub: argparse._SubParsersAction) -> None:
    u = sub.add_parser("bundle", help="write the single counted train_gpt.py of a preset (config baked in)")
    u.add_argument("--preset", default="baseline-cpu", help="preset name (see `pgolf config list`)")
    u.add_argument("--out", type=Path, default=Path("train_gpt.py"), help="file to write")
    u.add_argument(
        "--form", choices=("readable", "minified", "compressed"), default=None,
        help="form to write (default: the config's pack.code_form, the one a run counts)",
    )  # fmt: skip
    add_overrides(u)


def _add_plan(sub: argparse._SubParsersAction) -> None:
    pl = sub.add_parser(
        "plan", help="project a preset onto a machine: shapes, FLOPs, step time, memory, bytes, eval time"
    )
    pl.add_argument("preset", help="preset name or config file")
    pl.add_argument("--hardware", choices=("8xH100", "1xH100", "cpu"), default=None,
                    help="machine to project onto (default: the track's: 8xH100 or cpu)")  # fmt: skip
    pl.add_argument("--val-tokens", type=int, default=None,
                    help="validation tokens to cost the evaluation (default: the config's data if present, "
                         "else the contest's stream)")  # fmt: skip
    pl.add_argument("--json", action="store_true", help="print the projection as JSON")
    add_overrides(pl)


def _add_preflight(sub: argparse._SubParsersAction) -> None:
    pf = sub.add_parser("preflight", help="on the paid machine, before the run: measure every phase, "
                        "memory, calibration, export and evaluation against the caps")  # fmt: skip
    pf.add_argument("preset", help="preset name or config file")
    pf.add_argument("--steps", type=int, default=3, help="timed steps per phase of the schedule")
    pf.add_argument("--eval-share", type=float, default=0.02, help="share of validation documents scored")
    pf.add_argument("--val-tokens", type=int, default=None,
                    help="project the evaluation onto a stream this long (stand-in data)")  # fmt: skip
    pf.add_argument("--ranks", type=int, default=None,
                    help="project the evaluation onto this many processes (default: these)")  # fmt: skip
    pf.add_argument("--out", type=Path, default=None, help="keep its log, artifact and preflight.json here")
    pf.add_argument("--json", action="store_true", help="print the report as JSON")
    add_overrides(pf)


def _add_sweep(sub: argparse._SubParsersAction) -> None:
    sw = sub.add_parser("sweep", help="search a config space with Optuna (SQLite study; resumes)")
    ssub = sw.add_subparsers(dest="sweep_command", required=True)
    r = ssub.add_parser("run", help="run (or resume) the trials of a sweep file, then its finalists")
    r.add_argument("spec", type=Path, help="sweep file (TOML: preset, [space], [fixed], trials, seeds, ...)")
    r.add_argument("--out", type=Path, required=True, help="sweep folder (study.db, trials/, best.toml)")
    r.add_argument("--trials", type=int, default=None, help="override the file's trial count")
    s = ssub.add_parser("show", help="table of trials, finalists, history and importance plots")
    s.add_argument("out", type=Path, help="the sweep's output folder (its study and trials)")


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
    t.add_argument("--off-track", action="store_true",
                   help="run although the config cannot be on its track (logged at the top)")  # fmt: skip
    add_overrides(t)

    e = sub.add_parser("eval", help="score an artifact on the validation set (no training state needed)")
    e.add_argument("artifact", type=Path, help="an artifact file (.pgolf) written by train or pack")
    e.add_argument("--json", action="store_true", help="print the result as JSON")
    e.add_argument("--val-leak", action="store_true", help="allow eval.correction_bytes (NOT compliant)")
    add_overrides(e, ("data.", "eval.", "train.device"))

    k = sub.add_parser("pack", help="re-pack a finished run's weights under another policy (no retraining)")
    k.add_argument(
        "run_dir", type=Path, help="a run folder with weights.pgolf (written by every pgolf train)"
    )
    k.add_argument(
        "--out", type=Path, default=None, help="artifact path (default RUN_DIR/artifact-<scheme>.pgolf)"
    )
    k.add_argument(
        "--fit",
        action="store_true",
        help="estimate each step of the policy ladder against the track's byte cap",
    )
    k.add_argument("--no-score", action="store_true", help="skip the round-trip evaluation")
    k.add_argument("--json", action="store_true", help="print the report as JSON")
    add_overrides(k, ("quant.", "pack."))

    _add_bundle(sub)

    i = sub.add_parser("inspect", help="an artifact tensor by tensor: role, format, bits, bytes")
    i.add_argument("artifact", type=Path, help="an artifact file (.pgolf)")
    i.add_argument("--json", action="store_true", help="print the table as JSON")

    _add_plan(sub)
    _add_preflight(sub)
    _add_sweep(sub)
    _add_config(sub)
    docs.add_parser(sub)
    from pgolf.tools.records.commands import add_parsers

    add_parsers(sub, add_overrides)
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
    return _track_status(result.off_track)


def cmd_train(args: argparse.Namespace) -> int:
    from pgolf import dist
    from pgolf.pipeline import run
    from pgolf.tools.summary import run_summary

    name = str(args.config) if args.config else args.preset
    cfg = apply_overrides(resolve(name), collect_overrides(args))
    from pgolf.tools.plan.artifact import off_track_before

    reasons = off_track_before(cfg)
    if reasons and not args.off_track:
        raise ConfigError(
            f"this run cannot be on its track ({'; '.join(reasons)}): fix it, or pass --off-track"
        )
    notes = tuple(f"OFF TRACK from the start (--off-track): {r}" for r in reasons)
    try:
        with dist.closing():
            result = run(cfg, out_dir=args.out or Path("runs") / Path(name).stem, resume=args.resume,
                         force=args.force, notes=notes)  # fmt: skip
    except Interrupted as e:
        hint = f"\nresume it: {resume_command(args)}" if e.resumable else ""
        raise Interrupted(f"{e}{hint}", e.resumable) from None
    if int(os.environ.get("RANK", "0")) != 0:  # the group is gone: ask the launcher
        return 0
    print("\n" + run_summary(result))
    return _track_status(result.off_track)


def resume_command(args: argparse.Namespace) -> str:
    """The command that resumes an interrupted ``pgolf train``, under the launcher it ran in."""
    again = [
        a for a in (sys.argv[1:] if args.argv is None else args.argv) if a not in ("--resume", "--force")
    ]
    world = int(os.environ.get("WORLD_SIZE", "1"))
    launcher = f"torchrun --standalone --nproc_per_node={world} -m pgolf" if world > 1 else "pgolf"
    return f"{launcher} {shlex.join(again)} --resume"


def _track_status(off_track: list[str]) -> int:
    """Exit status 1, with the reasons on stderr, when a run or an evaluation is off its track
    (over the byte cap, the training-time cap or the eval-time cap)."""
    for reason in off_track:
        print(f"pgolf: off track: {reason}", file=sys.stderr)
    return 1 if off_track else 0


def cmd_eval(args: argparse.Namespace) -> int:
    from pgolf import dist
    from pgolf.eval.artifact import evaluate_artifact

    overrides = collect_overrides(args)
    if args.val_leak:
        overrides["eval.val_leak"] = True
    device = overrides.pop("train.device", "auto")
    data = eval_cfg = None
    if overrides:
        from pgolf.config.run import RunConfig
        from pgolf.pack.format import read_artifact
        from pgolf.pack.meta import ArtifactMeta

        meta = ArtifactMeta.from_dict(read_artifact(args.artifact)[1], str(args.artifact))
        cfg = apply_overrides(RunConfig(data=meta.data, eval=meta.eval), overrides)
        data, eval_cfg = cfg.data, cfg.eval
    echo = lambda line: print(line, file=sys.stderr, flush=True) if dist.rank() == 0 else None  # noqa: E731
    with dist.closing():
        r = evaluate_artifact(args.artifact, data=data, eval_cfg=eval_cfg, device=device, echo=echo)
    if int(os.environ.get("RANK", "0")) != 0:  # under torchrun every rank scored its share; one reports
        return 1 if r.off_track else 0
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
            f"with (sources sha256 {r.meta.sources_sha256[:12]}...); bytes_code is the recorded bundle's",
            file=sys.stderr,
        )
    return _track_status(r.off_track)


def cmd_pack(args: argparse.Namespace) -> int:
    from pgolf.tools import packtool

    overrides = collect_overrides(args)
    if args.fit:
        rows = packtool.fit_ladder(args.run_dir, overrides)
        fitting = next((name for name, size in rows if size.fits), None)
        if args.json:
            ladder = [{"step": n, **s.to_dict()} for n, s in rows]
            print(json.dumps({"ladder": ladder, "first_fit": fitting, "estimate": packtool.FIT_NOTE}))
        else:
            print(packtool.FIT_NOTE)
            for name, size in rows:
                print(f"{name:46s} ~{size.total_bytes:>11,} bytes  {size.verdict()} (estimated)")
            print(f"first policy estimated to fit: {fitting}" if fitting else "no policy of the ladder fits")
        return 0 if fitting else 1
    r = packtool.repack(args.run_dir, overrides, args.out, score=not args.no_score)
    d = r.to_dict()
    if args.json:
        print(json.dumps(d, indent=2))
    else:
        print(
            f"artifact              {r.path}\nscheme                {r.label}\n"
            f"bytes                 {r.size.total_bytes:,} = model {r.size.model_bytes:,} + code "
            f"{r.size.code_bytes:,} ({r.size.verdict()})\n"
            f"bits per parameter    {r.bits_per_param:.3f} ({r.params:,} parameters)\n"
            f"pack / unpack         {r.pack_seconds:.2f} s / {r.unpack_seconds:.2f} s"
            + (f" (+ {r.calibration_seconds:.2f} s GPTQ calibration)" if r.calibration_seconds > 0.01 else "")
        )
        if r.roundtrip is not None:
            print(
                f"val_bpb               {d['val_bpb']:.6f} (pre-quant {r.pre_quant_bpb:.6f}, "
                f"gap {d['quant_gap_bpb']:+.6f})"
            )
    return _track_status(r.off_track)


def cmd_bundle(args: argparse.Namespace) -> int:
    from pgolf.fileio import write_bytes_atomic
    from pgolf.pack.bundle import build_bundle, bundle_digest

    cfg = apply_overrides(resolve(args.preset), collect_overrides(args))
    form = args.form or cfg.pack.code_form
    text = build_bundle(cfg, form)
    write_bytes_atomic(args.out, text.encode("utf-8"))
    for f in ("readable", "minified", "compressed"):
        n, digest = bundle_digest(build_bundle(cfg, f))
        mark = f"  -> {args.out}" if f == form else ""
        counted = "  (counted: pack.code_form)" if f == cfg.pack.code_form else ""
        print(f"{f:10s} {n:>9,} bytes  sha256 {digest[:16]}{counted}{mark}")
    print(f"run it: torchrun --standalone --nproc_per_node=N {args.out}  (or python {args.out})")
    return 0


def cmd_inspect(args: argparse.Namespace) -> int:
    from pgolf.pack.meta import ArtifactMeta
    from pgolf.pack.size import SizeReport
    from pgolf.tools.packtool import inspect_rows
    from pgolf.tracks import get_track

    rows, sections, raw_meta = inspect_rows(args.artifact)
    meta = ArtifactMeta.from_dict(raw_meta, str(args.artifact))
    size = SizeReport(args.artifact.stat().st_size, meta.code_bytes, get_track(meta.track).artifact_cap_bytes)
    if args.json:
        print(json.dumps({"tensors": rows, "sections": sections, **size.to_dict()}, indent=2))
        return 0
    print(
        f"{'tensor':34s} {'role':8s} {'format':12s} {'bits':>4s} {'params':>10s} {'raw':>10s} "
        f"{'~stored':>10s}"
    )
    for r in rows:
        print(f"{r['name']:34s} {r['role']:8s} {r['format']:12s} {r['bits']:>4d} {r['params']:>10,} "
              f"{r['raw_bytes']:>10,} {r['compressed_bytes']:>10,}")  # fmt: skip
    print(f"\n{'section':28s} {'codec':7s} {'transform':9s} {'raw':>11s} {'stored':>11s}")
    for sec in sections:
        print(f"{sec['section']:28s} {sec['codec']:7s} {sec['transform']:9s} {sec['raw_bytes']:>11,} "
              f"{sec['stored_bytes']:>11,}")  # fmt: skip
    print(f"\ntotal {size.total_bytes:,} = file {size.model_bytes:,} + code {size.code_bytes:,} "
          f"(recorded at training): {size.verdict()} on {meta.track}")  # fmt: skip
    return 0


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


def cmd_sweep(args: argparse.Namespace) -> int:
    import dataclasses

    from pgolf.tools import sweep
    from pgolf.tools.sweepfile import load_spec

    if args.sweep_command == "show":
        print("\n".join(sweep.show(args.out)))
        return 0
    spec = load_spec(args.spec)
    if args.trials is not None:
        spec = dataclasses.replace(spec, trials=args.trials)
    best = sweep.run_sweep(spec, args.out)
    print("\n".join(sweep.show(args.out)))
    if best is None:
        print("no trial completed")
        return 1
    print(f"best: trial {best['trial']}, mean {best['split']}_bpb {best['mean']:.4f} on the {best['split']} "
          f"split -> {args.out / 'best.toml'}")  # fmt: skip
    return 0


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
            pf = run_preflight(cfg, out, steps=args.steps, eval_share=args.eval_share,
                               val_tokens=args.val_tokens, ranks=args.ranks)  # fmt: skip
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
        "demo": cmd_demo, "data": data_commands.cmd_data, "train": cmd_train, "eval": cmd_eval,
        "pack": cmd_pack, "inspect": cmd_inspect, "config": cmd_config, "plan": cmd_plan,
        "preflight": cmd_preflight,
        "sweep": cmd_sweep, "bundle": cmd_bundle, "docs": lambda a: docs.cmd_docs(a, build_parser()),
        **dict.fromkeys(("record", "compare", "check", "runs", "plot"), cmd_records),
    }  # fmt: skip
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
