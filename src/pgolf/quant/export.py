"""A state dict to stored entries under the export policy, and back."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from pgolf.config.pack import ExportConfig
from pgolf.quant.grid import QTensor, dequantize, quantize_int8
from pgolf.quant.policy import tensor_format

SCHEME = "int8"
"""The quantiser family this export writes (the only one until the quantization issue lands)."""


@dataclass
class QuantStats:
    int8_params: int = 0
    raw_params: int = 0
    floored_rows: int = 0
    total_rows: int = 0


def quantize_state_dict(state: dict[str, Tensor], cfg: ExportConfig) -> tuple[dict[str, QTensor], QuantStats]:
    out: dict[str, QTensor] = {}
    stats = QuantStats()
    for name, tensor in state.items():
        t = tensor.detach().cpu().contiguous()
        fmt = tensor_format(name, t, cfg)
        if fmt == "int8":
            out[name], floored = quantize_int8(t, cfg.clip_quantile)
            stats.int8_params += t.numel()
            stats.floored_rows += floored
            stats.total_rows += t.shape[0] if t.ndim == 2 else 0
            continue
        store = {"exact": t.dtype, "fp32": torch.float32, "fp16": torch.float16}[fmt]
        out[name] = QTensor("raw", t.to(store), t.dtype)
        stats.raw_params += t.numel()
    return out, stats


def dequantize_state_dict(entries: dict[str, QTensor]) -> dict[str, Tensor]:
    return {name: dequantize(e) for name, e in entries.items()}
