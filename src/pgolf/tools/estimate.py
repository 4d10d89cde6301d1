"""Artifact estimates for a config before any training (``pgolf config show``; tooling)."""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass

import torch

from pgolf.config.run import RunConfig
from pgolf.model.gpt import GPT
from pgolf.model.params import count_parameters, param_roles
from pgolf.pack.bundle import code_account
from pgolf.pack.format import PackSpec, encode, pack_spec
from pgolf.quant.export import quantize_state_dict
from pgolf.tracks import get_track


@dataclass(frozen=True)
class Estimate:
    params: int
    quantized_params: int
    raw_params: int
    upper_bound_bytes: int
    """Artifact with the payload stored uncompressed (zlib level 0): codes cost one byte each whatever
    their values, so training cannot make the file larger than this (meta aside)."""
    untrained_bytes: int
    """The artifact of the untrained model with the configured compressor (zstd-3 standing in for
    ``auto``, whose search is slow at full size); a trained model's weights compress worse: a lower
    bound in practice."""
    untrained_codec: str
    code_bytes: int
    cap_bytes: int
    formats: dict[str, list[str]]
    """The resolved export policy: storage format -> the tensors that get it."""
    format_params: dict[str, int]

    def lines(self) -> list[str]:
        cap = f"{self.cap_bytes:,}" if self.cap_bytes else "none"
        fit = (
            "fits"
            if not self.cap_bytes or self.upper_bound_bytes + self.code_bytes <= self.cap_bytes
            else "OVER"
        )
        policy = [
            f"  {fmt:13s} {self.format_params[fmt]:>12,} params  {_names(names)}"
            for fmt, names in self.formats.items()
        ]
        return [
            "export policy (format, parameters, tensors):",
            *policy,
            f"parameters             {self.params:,} ({self.quantized_params:,} quantised, "
            f"{self.raw_params:,} kept float)",
            f"artifact upper bound   {self.upper_bound_bytes + self.code_bytes:,} bytes = "
            f"{self.upper_bound_bytes:,} uncompressed codes + {self.code_bytes:,} code ({fit}, cap {cap})",
            f"untrained, compressed  {self.untrained_bytes + self.code_bytes:,} bytes "
            f"({self.untrained_codec})",
        ]


def _names(names: list[str]) -> str:
    """Tensor names with their block index folded: blocks.{0..8}.attn.c_q.weight."""
    folded = dict.fromkeys(re.sub(r"^blocks\.\d+\.", "blocks.*.", n) for n in names)
    text = ", ".join(folded)
    return text if len(text) <= 90 else text[:87] + "..."


def estimate(cfg: RunConfig) -> Estimate:
    torch.manual_seed(cfg.train.seed)
    model = GPT(cfg.model)
    state = model.state_dict()
    # untrained weights have no sensitivities: the Fisher allocation is sized on the role grids
    entries, stats = quantize_state_dict(
        state, param_roles(model), dataclasses.replace(cfg.quant, alloc="role")
    )
    formats: dict[str, list[str]] = {}
    for name, e in entries.items():
        formats.setdefault(e.fmt, []).append(name)
    spec = PackSpec("zstd", 3) if cfg.pack.compressor == "auto" else pack_spec(cfg.pack)
    raw = sum(v for k, v in stats.params.items() if k in ("exact", "fp32", "fp16"))
    return Estimate(
        params=count_parameters(model),
        quantized_params=count_parameters(model) - raw,
        raw_params=raw,
        upper_bound_bytes=len(encode(entries, {}, PackSpec("zlib", 0))),
        untrained_bytes=len(encode(entries, {}, spec)),
        untrained_codec=f"{spec.compressor}-{spec.level}",
        code_bytes=code_account(cfg).bytes,
        cap_bytes=get_track(cfg.track).artifact_cap_bytes,
        formats=formats,
        format_params=dict(stats.params),
    )
