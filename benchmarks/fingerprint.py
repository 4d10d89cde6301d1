"""Fingerprint a fixed-step run, to show that a refactoring changed no arithmetic.

    python benchmarks/fingerprint.py --preset debug --steps 50 --data-root DATA [--out DIR] [--set K=V ...]

Trains PRESET for exactly STEPS steps (no wall-clock cap, so the run is deterministic), then prints
as JSON the sha256 of the final weights (over the checkpoint's tensors in sorted key order), the
pre-quant and round-trip val_bpb and the artifact bytes. Run it before and after a change: equal
hashes and scores mean equal behaviour.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import tempfile
import time
from pathlib import Path

import torch

from pgolf.config.run import apply_overrides
from pgolf.errors import PgolfError
from pgolf.pipeline import run
from pgolf.tools.overrides import pairs_to_overrides
from pgolf.tools.presets import get_preset
from pgolf.train.checkpoint import CHECKPOINT_NAME


def weights_sha256(checkpoint: Path) -> str:
    state = torch.load(checkpoint, weights_only=True)["model"]
    h = hashlib.sha256()
    for k in sorted(state):
        h.update(k.encode())
        h.update(state[k].contiguous().numpy().tobytes())
    return h.hexdigest()


def fingerprint(
    preset: str, steps: int, data_root: str, out: Path, extra: dict[str, str] | None = None
) -> dict:
    overrides = {"data.root": data_root, "train.iterations": str(steps), "train.max_wallclock_seconds": "0",
                 "train.checkpoint_every": str(steps), **(extra or {})}  # fmt: skip
    started = time.time()
    r = run(apply_overrides(get_preset(preset), overrides), out_dir=out, echo=False)
    return {
        "preset": preset,
        "steps": r.steps,
        "weights_sha256": weights_sha256(out / CHECKPOINT_NAME),
        "pre_quant_val_bpb": r.pre_quant.val_bpb,
        "val_bpb": r.roundtrip.val_bpb,
        "bytes_model": r.size.model_bytes,
        "seconds": round(time.time() - started, 1),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="debug")
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--data-root", default="data")
    p.add_argument("--out", type=Path, default=None, help="run folder (default: a temporary one)")
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                   help="more overrides, e.g. eval.val_docs=8 (a slow method, fewer documents)")  # fmt: skip
    args = p.parse_args()
    torch.set_num_threads(2)
    try:
        extra = pairs_to_overrides(args.set)
    except PgolfError as e:
        p.error(str(e))
    with tempfile.TemporaryDirectory() as tmp:
        print(
            json.dumps(
                fingerprint(args.preset, args.steps, args.data_root, args.out or Path(tmp), extra), indent=2
            )
        )


if __name__ == "__main__":
    main()
