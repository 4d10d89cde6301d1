"""A state dict to stored entries under the export policy, and back."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import torch
from torch import Tensor

from pgolf.config.quant import QuantConfig
from pgolf.quant.grid import CONTEST_FLOOR, QTensor, dequantize, quantize
from pgolf.quant.policy import grid_spec, tensor_format


@dataclass
class QuantStats:
    params: Counter = field(default_factory=Counter)
    """Parameters per storage format."""
    floored_rows: int = 0
    """int8-contest rows whose scale sits on the 1/127 floor (their codes use part of the range)."""
    contest_rows: int = 0

    def summary(self) -> str:
        formats = " ".join(f"{k}:{v}" for k, v in sorted(self.params.items()))
        return f"{formats} scale_floor_rows:{self.floored_rows}/{self.contest_rows}"


def quantize_state_dict(
    state: dict[str, Tensor], cfg: QuantConfig, rounders: dict | None = None
) -> tuple[dict[str, QTensor], QuantStats]:
    """Entries for every tensor. ``rounders`` maps a tensor name to a function (tensor, spec) ->
    QTensor that replaces round-to-nearest on that tensor's grid (GPTQ)."""
    out: dict[str, QTensor] = {}
    stats = QuantStats()
    for name, tensor in state.items():
        t = tensor.detach().cpu().contiguous()
        fmt = tensor_format(name, t, cfg)
        stats.params[fmt] += t.numel()
        spec = grid_spec(name, t, cfg)
        if spec is None:
            store = {"exact": t.dtype, "fp32": torch.float32, "fp16": torch.float16}[fmt]
            out[name] = QTensor("raw", t.to(store), t.dtype, fmt=fmt)
            continue
        rounder = (rounders or {}).get(name)
        out[name] = rounder(t, spec) if rounder is not None and t.ndim == 2 else quantize(t, spec)
        if spec.contest and t.ndim == 2:
            stats.contest_rows += t.shape[0]
            stats.floored_rows += int(
                (out[name].scale.float() <= torch.tensor(CONTEST_FLOOR).half().float()).sum()
            )
    return out, stats


def dequantize_state_dict(entries: dict[str, QTensor]) -> dict[str, Tensor]:
    return {name: dequantize(e) for name, e in entries.items()}
