"""Ablations: one base config plus one change at a time, each trained by ``pgolf train`` in its own
process, one after another; prints and writes a table of round-trip bpb (on the dev split by default)
and its delta to the base.

    python benchmarks/ablate.py --base sweeps/cpu-shape-best.toml --steps 150 --out DIR
        [--only NAME ...] [--seeds 1337 ...] [--wallclock 0] [-- --data.root R --data.dataset D ...]

At a fixed step count (``--steps``, no wall-clock cap) the figures are deterministic, so they rank
techniques whatever else the machine runs; with ``--wallclock S`` (and a large ``--steps``) they are
timed and must be taken alone. Arguments after ``--`` go to every run (data flags). A run whose
result.json exists is read, not rerun, so a killed ablation resumes.

Every run scores the dataset's dev split (``--data.score_split dev``, issue 34), so the variants are
chosen without reading the validation set; a dataset without a dev split is refused before the first
run (``pgolf data build --dev-docs N``), unless ``--split val`` asks for validation explicitly. The
split is printed first and written into ``ablation.json``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

VARIANTS: dict[str, dict[str, str]] = {
    "base": {},
    "polar-express": {"optim.muon_polar_express": "true"},
    "muoneq-r": {"optim.muon_row_norm": "true"},
    "min-lr-0.1": {"optim.min_lr": "0.1"},
    "skip-gates": {"model.skip_gates": "true"},
    "two-lane-last": {"model.parallel_from": "2"},
    "gate-sparse": {"model.attn_gate": "sparse"},
    "gate-output": {"model.attn_gate": "output"},
    "gate-dense": {"model.attn_gate": "dense"},
    "value-embed-32": {"model.value_embed_dim": "32", "model.value_embed_layers": "1"},
    "smear-window": {"model.smear_gate_window": "12"},
    "context-128-0.3": {"train.seq_len_schedule": "128:0.3"},
    "xsa-all": {"model.xsa_last_n": "3"},
    "qk-gain-5.25": {"model.qk_gain_init": "5.25"},
    "leaky-mlp4": {"model.mlp_activation": "leaky_relu2", "model.mlp_mult": "4.0"},
}
"""Each one change against the base (the CPU sweep's winner: 3x224 SwiGLU, XSA on the last layer, seq 256)."""


def run_one(
    name: str, overrides: dict[str, str], args: argparse.Namespace, seed: int, extra: list[str]
) -> dict:
    out = Path(args.out) / f"{name}-s{seed}"
    result = out / "result.json"
    if not result.exists():
        cmd = [sys.executable, "-m", "pgolf", "train", "--config", args.base, "--out", str(out),
               "--train.iterations", str(args.steps), "--train.max_wallclock_seconds", str(args.wallclock),
               "--train.seed", str(seed), "--train.log_every", "0", *extra,
               "--data.score_split", args.split]  # fmt: skip
        for key, value in overrides.items():
            cmd += [f"--{key}", value]
        proc = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        if proc.returncode not in (0, 1):  # 1: off track (e.g. over the byte cap), still scored
            raise SystemExit(f"{name}: pgolf train failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
    r = json.loads(result.read_text())
    if r.get("split", "val") != args.split:  # a run kept from an ablation on the other split
        raise SystemExit(f"{out}: scored the {r.get('split', 'val')} split, this ablation {args.split}: "
                         "use another --out")  # fmt: skip
    keys = ("val_bpb", "pre_quant_val_bpb", "steps", "train_seconds", "bytes_total", "num_params")
    return {k: r[k] for k in keys}


def data_of(base: str, extra: list[str], overrides: dict[str, str]):
    """The data config one variant's runs get: the base's, then the ``--data.*`` flags after ``--``,
    then the variant's own ``data.*`` overrides."""
    from pgolf.config.run import apply_overrides
    from pgolf.tools.config_files import resolve

    flags, i = {}, 0
    while i < len(extra):
        key, eq, value = extra[i].partition("=")
        if not eq and i + 1 < len(extra):
            value, i = extra[i + 1], i + 1
        flags[key.removeprefix("--")] = value
        i += 1
    data = {k: v for k, v in {**flags, **overrides}.items() if k.startswith("data.")}
    return apply_overrides(resolve(base), data).data


def scored_split(args: argparse.Namespace, extra: list[str], variants: dict[str, dict[str, str]]) -> str:
    """The split every run scores (``--split``), checked on every variant's data before any run (a
    variant may name another dataset); prints which split of which dataset, once per dataset."""
    from pgolf.errors import PgolfError
    from pgolf.tools.data.splits import search_split

    if any(a.split("=")[0] == "--data.score_split" for a in extra) or any(
        "data.score_split" in v for v in variants.values()
    ):
        raise SystemExit("ablate: the split is --split's (dev or val), not a --data.score_split flag")
    lines = []
    for name, overrides in variants.items():
        try:
            lines.append(search_split(data_of(args.base, extra, overrides), args.split, "--split val")[1])
        except PgolfError as e:
            raise SystemExit(f"ablate: variant {name}: {e}") from None
    print("\n".join(dict.fromkeys(lines)), flush=True)
    return args.split


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    extra = argv[argv.index("--") + 1 :] if "--" in argv else []
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--base", required=True, help="config file (or preset name) every variant starts from")
    ap.add_argument("--steps", type=int, default=150)
    ap.add_argument("--wallclock", type=float, default=0.0, help="training cap in seconds (0: steps only)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[1337])
    ap.add_argument("--only", nargs="+", help="variant names (default: all)")
    ap.add_argument("--set", nargs="+", default=[], metavar="NAME=KEY:VAL;KEY:VAL",
                    help="extra variants, e.g. stack=model.skip_gates:true;optim.min_lr:0.1")  # fmt: skip
    ap.add_argument("--out", required=True)
    ap.add_argument("--split", choices=("dev", "val"), default="dev",
                    help="what each run scores: the dataset's dev split (default) or validation")  # fmt: skip
    args = ap.parse_args(argv[: argv.index("--")] if "--" in argv else argv)
    variants = dict(VARIANTS)
    for spec in args.set:
        name, _, body = spec.partition("=")
        variants[name] = dict(kv.split(":", 1) for kv in body.split(";") if kv)
    names = args.only or list(variants)
    if "base" not in names:
        names = ["base", *names]
    split = scored_split(args, extra, {name: variants[name] for name in names})
    rows = {}
    for name in names:
        runs = [run_one(name, variants[name], args, seed, extra) for seed in args.seeds]
        rows[name] = {"runs": runs, "mean": statistics.fmean(r["val_bpb"] for r in runs)}
        base = rows["base"]["mean"]
        r0 = runs[0]
        print(f"{name:18s} {split}_bpb {rows[name]['mean']:.4f} ({rows[name]['mean'] - base:+.4f}) "
              f"pre-quant {r0['pre_quant_val_bpb']:.4f} steps {r0['steps']} train {r0['train_seconds']:.0f}s "
              f"params {r0['num_params']:,} bytes {r0['bytes_total']:,}", flush=True)  # fmt: skip
    Path(args.out, "ablation.json").write_text(json.dumps({"split": split, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
