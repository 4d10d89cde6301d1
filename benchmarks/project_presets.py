"""Project each full-size preset's artifact from a trained model (issue 7, measurement 3).

    python benchmarks/project_presets.py RUN_DIR [--policy preset|record|int6-gptq|fisher]

RUN_DIR is a trained run (CPU track is fine). For each full-size preset its weights are re-packed
under the preset's policy (``preset``), the record's own export as seed-techniques §9 states it
(``record``; the overrides each preset's docstring gives), or int6 SDClip 12.85 + GPTQ with
int8-contest embeddings and the best codec (``int6-gptq``), or the Fisher allocation at step 0.12 in
int8 containers + GPTQ and the best codec (``fisher``: the step is the CPU model's, in its weight
units, so this rate is the CPU model's and says nothing of a full-size model's own); bits per
parameter are measured per storage format from the artifact's sections (each tensor's share of its
section, as ``pgolf inspect`` reports);
the preset's parameters per format come from the same export policy; the projection is
sum(params_f x bits_f / 8) + 4 x the meta section + the counted code bytes. A format the run does
not have (e.g. fp16 passthrough) is counted at its raw width.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import tempfile
from collections import defaultdict
from pathlib import Path

from pgolf.config.run import apply_overrides
from pgolf.model.gpt import GPT
from pgolf.model.params import param_roles
from pgolf.pack.bundle import code_account
from pgolf.quant.policy import tensor_format
from pgolf.tools.packtool import TRAINING_ONLY, inspect_rows, repack
from pgolf.tools.presets import get_preset
from pgolf.tracks import get_track

FULL_SIZE = ("baseline", "pr162", "xsa-ema", "swapp-xsa-swiglu", "kellyvv", "recurrent-3x3")
RAW_BITS = {"fp16": 16.0, "fp32": 32.0, "exact": 64.0}
_RECORD_INT6 = {"quant.matrix": "int6", "quant.mlp": "", "quant.embed": "int8-contest", "quant.clip": "max",
                "quant.gptq": "false", "quant.keep_fp16": "", "pack.compressor": "zstd", "pack.level": "22",
                "pack.transform": "none"}  # fmt: skip
RECORD_EXPORTS = {
    "pr162": {**_RECORD_INT6, "quant.keep_fp16": "tok_emb,blocks.8.attn.c_k"},
    "xsa-ema": _RECORD_INT6,
    "swapp-xsa-swiglu": {**_RECORD_INT6, "quant.mlp": "int5", "quant.embed": "int8"},
    "kellyvv": {**_RECORD_INT6, "quant.clip": "percentile", "quant.keep_fp16": "bigram.embed"},
}
"""seed-techniques §9.2-9.4 and §15; baseline and recurrent-3x3 keep their presets' int8."""


def policy_of(name: str, policy: str):
    cfg = get_preset(name)
    if policy == "record" and name in RECORD_EXPORTS:
        cfg = apply_overrides(cfg, RECORD_EXPORTS[name])
    if policy == "int6-gptq":
        quant = dataclasses.replace(cfg.quant, matrix="int6", mlp="", embed="int8-contest", clip="sdclip",
                                    clip_k=12.85, gptq=True, keep_fp16="")  # fmt: skip
        pack = dataclasses.replace(cfg.pack, compressor="auto", transform="auto")
        cfg = dataclasses.replace(cfg, quant=quant, pack=pack)
    if policy == "fisher":
        quant = dataclasses.replace(cfg.quant, matrix="int8", mlp="", embed="int8", alloc="fisher",
                                    fisher_step=0.12, gptq=True, qat=False, keep_fp16="")  # fmt: skip
        pack = dataclasses.replace(cfg.pack, compressor="auto", transform="auto")
        cfg = dataclasses.replace(cfg, quant=quant, pack=pack)
    return cfg


def project(run_dir: Path, name: str, policy: str, tmp: Path) -> dict:
    cfg = policy_of(name, policy)
    quant = {k: v for k, v in dataclasses.asdict(cfg.quant).items() if k != "keep_float_max_numel"}
    overrides = {f"quant.{k}": str(v).lower() if isinstance(v, bool) else str(v) for k, v in quant.items()}
    overrides |= {f"pack.{k}": str(v) for k, v in dataclasses.asdict(cfg.pack).items()}
    overrides = {k: v for k, v in overrides.items() if k not in TRAINING_ONLY}  # a re-pack cannot change them
    out = tmp / f"{name}.pgolf"
    repack(run_dir, overrides, out, score=False)
    tensors, sections, _ = inspect_rows(out)
    bits, params = defaultdict(float), defaultdict(int)
    for t in tensors:
        bits[t["format"]] += 8 * t["compressed_bytes"]
        params[t["format"]] += t["params"]
    rate = {f: bits[f] / params[f] for f in bits}
    counts = defaultdict(int)
    model = GPT(cfg.model)
    roles = param_roles(model)
    for k, v in model.state_dict().items():
        counts[tensor_format(k, v, roles[k], cfg.quant)] += v.numel()
    meta = next(s["stored_bytes"] for s in sections if s["section"] == "meta")
    model = sum(n * rate.get(f, RAW_BITS.get(f, 8.0)) / 8 for f, n in counts.items()) + 4 * meta
    total = model + code_account(cfg).bytes
    return {
        "preset": name, "policy": policy, "params": sum(counts.values()), "params_by_format": dict(counts),
        "bits_by_format": {f: round(rate[f], 3) for f in counts if f in rate},
        "unmeasured_formats": [f for f in counts if f not in rate], "model_bytes": round(model),
        "total_bytes": round(total), "fits": total <= get_track(cfg.track).artifact_cap_bytes,
    }  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run_dir", type=Path)
    p.add_argument("--policy", choices=("preset", "record", "int6-gptq", "fisher"), default="preset")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        for name in FULL_SIZE:
            print(json.dumps(project(args.run_dir, name, args.policy, Path(tmp))), flush=True)


if __name__ == "__main__":
    main()
