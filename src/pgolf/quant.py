"""The baseline int8 export (seed-techniques §9.1), tensor by tensor.

* non-float tensors: stored exactly;
* float tensors with at most ``keep_float_max_numel`` elements: control tensors (see
  ``model.CONTROL_PATTERNS``) fp32, others fp16 (original dtype recorded);
* 2-D tensors: per row r, clip c_r = quantile(|W_r|, q); scale s_r = max(c_r/127, 1/127) stored
  fp16; q = clamp(round(clip(W)/s_r), -127, 127) as int8;
* other float tensors: one fp32 scale c/127 with c the same quantile over all elements.

Difference from the contest script, on purpose: q is computed with the fp16-rounded row scale that
the loader will multiply by, so quantise and dequantise agree exactly (the script rounds with the
fp32 scale and dequantises with the fp16 one). The 1/127 scale floor is the script's and is kept;
``QuantStats.floored_rows`` reports how many rows it coarsened.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

from pgolf.config import ExportConfig
from pgolf.model import is_control

SCALE_FLOOR = 1.0 / 127.0


@dataclass
class QTensor:
    """One exported tensor: ``kind`` is ``int8_row``, ``int8_tensor`` or ``raw``."""

    kind: str
    data: Tensor
    orig_dtype: torch.dtype
    scale: Tensor | None = None


@dataclass
class QuantStats:
    int8_params: int = 0
    raw_params: int = 0
    floored_rows: int = 0
    total_rows: int = 0
    per_tensor: dict[str, str] = field(default_factory=dict)


def _quantile(x: Tensor, q: float, dim: int | None = None) -> Tensor:
    # torch.quantile refuses inputs above 2**24 elements; numpy has no such limit.
    if x.numel() <= 1 << 24:
        return torch.quantile(x, q, dim=dim) if dim is not None else torch.quantile(x.flatten(), q)
    arr = np.quantile(x.numpy(), q, axis=dim) if dim is not None else np.quantile(x.numpy().ravel(), q)
    return torch.as_tensor(arr, dtype=torch.float32)


def quantize_tensor(t: Tensor, clip_q: float) -> tuple[Tensor, Tensor, int]:
    """int8 codes, scale, and number of rows whose scale hit the floor."""
    t32 = t.detach().float().cpu()
    if t32.ndim == 2:
        clip = _quantile(t32.abs(), clip_q, dim=1) if t32.numel() else torch.zeros(t32.shape[0])
        floored = int((clip / 127.0 < SCALE_FLOOR).sum())
        scale = (clip / 127.0).clamp_min(SCALE_FLOOR).to(torch.float16)
        s = scale.float()[:, None]
        q = torch.clamp(torch.round(torch.clamp(t32, -clip[:, None], clip[:, None]) / s), -127, 127)
        return q.to(torch.int8), scale, floored
    clip = float(_quantile(t32.abs(), clip_q)) if t32.numel() else 0.0
    scale = torch.tensor(clip / 127.0 if clip > 0 else 1.0, dtype=torch.float32)
    q = torch.clamp(torch.round(torch.clamp(t32, -clip, clip) / scale), -127, 127)
    return q.to(torch.int8), scale, 0


def quantize_state_dict(state: dict[str, Tensor], cfg: ExportConfig) -> tuple[dict[str, QTensor], QuantStats]:
    out: dict[str, QTensor] = {}
    stats = QuantStats()
    for name, tensor in state.items():
        t = tensor.detach().cpu().contiguous()
        if not t.is_floating_point():
            out[name] = QTensor("raw", t, t.dtype)
            stats.raw_params += t.numel()
            stats.per_tensor[name] = f"raw {t.dtype}"
        elif t.numel() <= cfg.keep_float_max_numel:
            store = torch.float32 if is_control(name) else torch.float16
            out[name] = QTensor("raw", t.to(store), t.dtype)
            stats.raw_params += t.numel()
            stats.per_tensor[name] = f"raw {store}"
        else:
            q, scale, floored = quantize_tensor(t, cfg.clip_quantile)
            kind = "int8_row" if t.ndim == 2 else "int8_tensor"
            out[name] = QTensor(kind, q, t.dtype, scale)
            stats.int8_params += t.numel()
            stats.floored_rows += floored
            stats.total_rows += t.shape[0] if t.ndim == 2 else 0
            stats.per_tensor[name] = kind
    return out, stats


def dequantize(entries: dict[str, QTensor]) -> dict[str, Tensor]:
    state = {}
    for name, e in entries.items():
        if e.kind == "raw":
            state[name] = e.data.to(e.orig_dtype)
        elif e.kind == "int8_row":
            state[name] = (e.data.float() * e.scale.float()[:, None]).to(e.orig_dtype)
        elif e.kind == "int8_tensor":
            state[name] = (e.data.float() * e.scale.float()).to(e.orig_dtype)
        else:
            raise ValueError(f"{name}: unknown quantisation kind {e.kind!r}")
    return state
