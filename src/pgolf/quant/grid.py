"""Rounding grids: quantise a tensor to integer codes plus scales, and back. Imports nothing of pgolf
(the artifact format and QAT both build on it).

The contest's int8 scheme (seed-techniques §9.1), kept bit-compatible except where noted:

* 2-D tensors, per row r: clip c_r = quantile(|W_r|, q); scale s_r = max(c_r/127, 1/127) stored
  fp16; codes = clamp(round(clip(W)/s_r), -127, 127) as int8;
* other tensors: one fp32 scale c/127 with c the same quantile over all elements.

Difference from the contest script, on purpose: codes are computed with the fp16-rounded row scale
that the loader multiplies by, so quantise and dequantise agree exactly (the script rounds with the
fp32 scale and dequantises with the fp16 one). The 1/127 scale floor is the script's.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

SCALE_FLOOR = 1.0 / 127.0
KINDS = ("raw", "int8_row", "int8_tensor")


@dataclass
class QTensor:
    """One stored tensor: ``kind`` is ``raw`` (``data`` kept as is, cast back to ``orig_dtype`` on
    load), ``int8_row`` (codes (R, C) with an fp16 scale per row) or ``int8_tensor`` (one fp32
    scale)."""

    kind: str
    data: Tensor
    orig_dtype: torch.dtype
    scale: Tensor | None = None


def _quantile(x: Tensor, q: float, dim: int | None = None) -> Tensor:
    # torch.quantile refuses inputs above 2**24 elements; numpy has no such limit.
    if x.numel() <= 1 << 24:
        return torch.quantile(x, q, dim=dim) if dim is not None else torch.quantile(x.flatten(), q)
    arr = np.quantile(x.numpy(), q, axis=dim) if dim is not None else np.quantile(x.numpy().ravel(), q)
    return torch.as_tensor(arr, dtype=torch.float32)


def quantize_int8(t: Tensor, clip_q: float) -> tuple[QTensor, int]:
    """int8 codes of ``t`` (per row when 2-D) and the number of rows whose scale hit the floor."""
    t32 = t.detach().float().cpu()
    if t32.ndim == 2:
        clip = _quantile(t32.abs(), clip_q, dim=1) if t32.numel() else torch.zeros(t32.shape[0])
        floored = int((clip / 127.0 < SCALE_FLOOR).sum())
        scale = (clip / 127.0).clamp_min(SCALE_FLOOR).to(torch.float16)
        s = scale.float()[:, None]
        q = torch.clamp(torch.round(torch.clamp(t32, -clip[:, None], clip[:, None]) / s), -127, 127)
        return QTensor("int8_row", q.to(torch.int8), t.dtype, scale), floored
    clip = float(_quantile(t32.abs(), clip_q)) if t32.numel() else 0.0
    scale = torch.tensor(clip / 127.0 if clip > 0 else 1.0, dtype=torch.float32)
    q = torch.clamp(torch.round(torch.clamp(t32, -clip, clip) / scale), -127, 127)
    return QTensor("int8_tensor", q.to(torch.int8), t.dtype, scale), 0


def dequantize(e: QTensor) -> Tensor:
    """The tensor a stored entry stands for, in its original dtype."""
    if e.kind == "raw":
        return e.data.to(e.orig_dtype)
    if e.kind == "int8_row":
        return (e.data.float() * e.scale.float()[:, None]).to(e.orig_dtype)
    if e.kind == "int8_tensor":
        return (e.data.float() * e.scale.float()).to(e.orig_dtype)
    raise ValueError(f"unknown quantisation kind {e.kind!r}")
