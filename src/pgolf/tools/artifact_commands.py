"""The artifact commands (tooling): ``pgolf eval`` (score an artifact), ``pack`` (re-pack a run's
weights under another policy), ``bundle`` (write a preset's counted ``train_gpt.py``) and ``inspect``
(an artifact tensor by tensor)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from pgolf.config.run import apply_overrides
from pgolf.tools.config_files import resolve
from pgolf.tools.overrides import add_overrides, collect_overrides


def add_parsers(sub: argparse._SubParsersAction) -> None:
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

    u = sub.add_parser("bundle", help="write the single counted train_gpt.py of a preset (config baked in)")
    u.add_argument("--preset", default="baseline-cpu", help="preset name (see `pgolf config list`)")
    u.add_argument("--out", type=Path, default=Path("train_gpt.py"), help="file to write")
    u.add_argument(
        "--form",
        choices=("readable", "minified", "compressed"),
        default=None,
        help="form to write (default: the config's pack.code_form, the one a run counts)",
    )
    add_overrides(u)

    i = sub.add_parser("inspect", help="an artifact tensor by tensor: role, format, bits, bytes")
    i.add_argument("artifact", type=Path, help="an artifact file (.pgolf)")
    i.add_argument("--json", action="store_true", help="print the table as JSON")


def track_status(off_track: list[str]) -> int:
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
    return track_status(r.off_track)


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
                f"{r.split}_bpb               {d['val_bpb']:.6f} (pre-quant {r.pre_quant_bpb:.6f}, "
                f"gap {d['quant_gap_bpb']:+.6f})"
            )
    return track_status(r.off_track)


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
        print(
            f"{r['name']:34s} {r['role']:8s} {r['format']:12s} {r['bits']:>4d} {r['params']:>10,} "
            f"{r['raw_bytes']:>10,} {r['compressed_bytes']:>10,}"
        )
    print(f"\n{'section':28s} {'codec':7s} {'transform':9s} {'raw':>11s} {'stored':>11s}")
    for sec in sections:
        print(
            f"{sec['section']:28s} {sec['codec']:7s} {sec['transform']:9s} {sec['raw_bytes']:>11,} "
            f"{sec['stored_bytes']:>11,}"
        )
    print(
        f"\ntotal {size.total_bytes:,} = file {size.model_bytes:,} + code {size.code_bytes:,} "
        f"(recorded at training): {size.verdict()} on {meta.track}"
    )
    return 0
