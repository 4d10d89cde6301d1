"""Re-pack one trained run under several quantisation and packing policies (issue 7, measurement 1).

    python benchmarks/bench_pack.py RUN_DIR [--out results.json]

For each scheme: artifact bytes, bits per parameter (compressed model bytes x 8 / parameters), pack
and unpack seconds, and the quantisation gap (round-trip minus pre-quant val_bpb), all on the same
trained weights (``pgolf pack`` under the hood; nothing is retrained). Then, on the int6 and int5
codes of the run: bit-packing (4 six-bit or 8 five-bit values per 3 or 5 bytes) against the byte
container, under every codec, to decide which representation the artifact should store.

The round trips score the split the run scored (``data.score_split``). This benchmark chooses
policies, so it wants a run trained with ``--data.score_split dev`` (issue 34: settings are chosen on
the dev split); a run scored on validation is refused unless ``--split val`` asks for it explicitly.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from pgolf.pack.codec import CODECS
from pgolf.quant.export import quantize_state_dict
from pgolf.tools.packtool import load_run, model_roles, repack, with_policy

BEST = {"pack.compressor": "auto", "pack.transform": "auto"}
FISHER = {"quant.alloc": "fisher", "quant.matrix": "int8", "quant.embed": "int8", "quant.gptq": "true",
          **BEST}  # fmt: skip
MIXED = {"quant.matrix": "int6", "quant.mlp": "int5", "quant.embed": "int7", "quant.clip": "sdclip"}
SCHEMES: list[tuple[str, dict[str, str]]] = [
    ("int8-contest + zlib-9 (as trained)", {}),
    ("int8-contest, best codec per section", BEST),
    ("int6 SDClip 12.85 + zstd-22",
     {"quant.matrix": "int6", "quant.clip": "sdclip", "pack.compressor": "zstd", "pack.level": "22"}),
    ("int6 SDClip, int8 embed, best codec", {"quant.matrix": "int6", "quant.clip": "sdclip", **BEST}),
    ("int6 / int5 MLP / int7 embed SDClip, best codec", {**MIXED, **BEST}),
    ("  the same with GPTQ-lite clip search", {**MIXED, **BEST, "quant.clip": "search"}),
    ("  the same with full GPTQ (SDClip grid)", {**MIXED, **BEST, "quant.gptq": "true"}),
    ("int5 / int4 MLP / int6 embed SDClip + GPTQ, best codec", {"quant.matrix": "int5", "quant.mlp": "int4",
        "quant.embed": "int6", "quant.clip": "sdclip", "quant.gptq": "true", **BEST}),
    ("int6 SDClip 12.85 + GPTQ, int8-contest embed, best codec",
     {"quant.matrix": "int6", "quant.clip": "sdclip", "quant.gptq": "true", **BEST}),
    ("int6 SDClip 16 + GPTQ, int8-contest embed, best codec",
     {"quant.matrix": "int6", "quant.clip": "sdclip", "quant.clip_k": "16", "quant.gptq": "true", **BEST}),
    *[(f"Fisher allocation, int8 containers, step {step} + GPTQ, best codec",
       {**FISHER, "quant.fisher_step": step}) for step in ("0.08", "0.1", "0.12", "0.14")],
    ("  step 0.12, round-to-nearest", {**FISHER, "quant.fisher_step": "0.12", "quant.gptq": "false"}),
]  # fmt: skip


def bitpack(codes: np.ndarray, bits: int) -> bytes:
    """Signed codes in [-(2^(b-1)-1), 2^(b-1)-1] as unsigned b-bit fields, packed MSB first."""
    u = (codes.astype(np.int16) + (1 << (bits - 1))).astype(np.uint8)
    planes = (u[:, None] >> np.arange(bits - 1, -1, -1, dtype=np.uint8)) & 1
    return np.packbits(planes.ravel()).tobytes()


def bitpacking(run_dir: Path) -> list[dict]:
    run = load_run(run_dir)
    rows = []
    for fmt, bits in (("int6", 6), ("int5", 5)):
        cfg = with_policy(run.config, {"quant.matrix": fmt, "quant.embed": fmt, "quant.clip": "sdclip"})
        entries, _ = quantize_state_dict(run.state, model_roles(cfg.model), cfg.quant)
        codes = np.concatenate([e.data.numpy().ravel() for e in entries.values() if e.fmt == fmt])
        container, packed = codes.astype(np.int8).tobytes(), bitpack(codes, bits)
        for name, codec in CODECS.items():
            rows.append({"codes": fmt, "count": int(codes.size), "codec": name,
                         "byte_container": len(codec.compress(container, codec.max_level)),
                         "bit_packed": len(codec.compress(packed, codec.max_level)),
                         "raw_bit_packed": len(packed)})  # fmt: skip
    return rows


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run_dir", type=Path)
    p.add_argument("--out", type=Path, default=None)
    p.add_argument(
        "--split", choices=("dev", "val"), default="dev", help="the split the run scored (default dev)"
    )
    args = p.parse_args(argv)
    scored = load_run(args.run_dir).config.data.score_split
    if scored != args.split:
        raise SystemExit(
            f"{args.run_dir} scored the {scored} split; this benchmark chooses policies on {args.split}: "
            "train the run with --data.score_split dev (or pass --split val to compare on validation)"
        )
    results = []
    for name, overrides in SCHEMES:
        out = args.run_dir / f"bench-{len(results)}.pgolf"
        r = repack(args.run_dir, overrides, out).to_dict()
        results.append({"scheme": name, "overrides": overrides, **r})
        print(f"| {name} | {r['bytes_model']:,} | {r['bits_per_param']:.3f} | {r['val_bpb']:.4f} | "
              f"{r['quant_gap_bpb']:+.4f} | {r['pack_seconds']:.1f} | {r['unpack_seconds']:.2f} | "
              f"{r['calibration_seconds']:.1f} |", flush=True)  # fmt: skip
        out.unlink()
    packing = bitpacking(args.run_dir)
    for row in packing:
        print(f"| {row['codes']} | {row['codec']} | {row['byte_container']:,} | {row['bit_packed']:,} |")
    if args.out:
        args.out.write_text(json.dumps({"schemes": results, "bitpacking": packing}, indent=2))


if __name__ == "__main__":
    main()
