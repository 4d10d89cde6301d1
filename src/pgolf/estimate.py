"""Artifact estimates for a config before any training (``pgolf config show``; tooling)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from pgolf.config.run import RunConfig
from pgolf.model.gpt import GPT
from pgolf.model.params import count_parameters
from pgolf.pack.format import PackSpec, encode, pack_spec
from pgolf.pack.size import code_bytes
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
    """The artifact of the untrained model with the configured compressor (a trained model's weights
    compress worse: a lower bound in practice)."""
    code_bytes: int
    cap_bytes: int

    def lines(self) -> list[str]:
        cap = f"{self.cap_bytes:,}" if self.cap_bytes else "none"
        fit = (
            "fits"
            if not self.cap_bytes or self.upper_bound_bytes + self.code_bytes <= self.cap_bytes
            else "OVER"
        )
        return [
            f"parameters             {self.params:,} ({self.quantized_params:,} quantised, "
            f"{self.raw_params:,} kept float)",
            f"artifact upper bound   {self.upper_bound_bytes + self.code_bytes:,} bytes = "
            f"{self.upper_bound_bytes:,} uncompressed codes + {self.code_bytes:,} code ({fit}, cap {cap})",
            f"untrained, compressed  {self.untrained_bytes + self.code_bytes:,} bytes",
        ]


def estimate(cfg: RunConfig) -> Estimate:
    torch.manual_seed(cfg.train.seed)
    model = GPT(cfg.model)
    entries, stats = quantize_state_dict(model.state_dict(), cfg.quant)
    raw = sum(v for k, v in stats.params.items() if k in ("exact", "fp32", "fp16"))
    return Estimate(
        params=count_parameters(model),
        quantized_params=count_parameters(model) - raw,
        raw_params=raw,
        upper_bound_bytes=len(encode(entries, {}, PackSpec("zlib", 0))),
        untrained_bytes=len(encode(entries, {}, pack_spec(cfg.pack))),
        code_bytes=code_bytes(),
        cap_bytes=get_track(cfg.track).artifact_cap_bytes,
    )
