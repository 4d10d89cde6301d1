"""Rounding grids: a tensor to integer codes plus scales, and back. Imports nothing of pgolf (the
artifact format, the export, GPTQ and QAT all build on it).

Row grids (2-D weights, one fp16 scale per row, codes in an int8 container):

* ``int8-contest``, the contest's baseline exactly (seed-techniques §9.1): clip c_r = quantile(|W_r|,
  q); codes = clamp(round(clip(W) / s32), ±127) with s32 = max(c_r/127, 1/127) in fp32; the stored
  scale is fp16(s32), so the loader multiplies by a slightly different number than the rounding
  divided by (the contest's own mismatch, kept for bit-compatibility).
* ``intB`` for B in 4..8: symmetric, codes in [-(2^(B-1)-1), 2^(B-1)-1]; s = fp16(c_r / qmax) floored
  at fp16's smallest normal, and codes are rounded with that same fp16 scale, so quantise and
  dequantise agree exactly. The clip c_r is each row's own: ``max``, ``percentile`` (quantile q),
  ``sdclip`` (k x the row's root mean square, its spread about the grid's centre 0: the standard
  deviation of sota-stack §2.5 for the zero-mean rows of trained matrices) or ``search``
  (GPTQ-lite, seed-techniques §9.5, per row: the candidate quantile with the least squared error).

Other tensors get ``int8-contest``'s per-tensor form (one fp32 scale). ``fake_quant`` is the QAT
forward: the dequantised grid value, with a straight-through gradient.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

CONTEST_FLOOR = 1.0 / 127.0
FP16_TINY = float(torch.finfo(torch.float16).tiny)
SEARCH_QUANTILES = (0.999, 0.9995, 0.9999, 0.99999, 1.0)
KINDS = ("raw", "row", "tensor")


@dataclass(frozen=True)
class GridSpec:
    fmt: str
    """int8-contest or int4..int8."""
    clip: str = "percentile"
    quantile: float = 0.9999984
    k: float = 12.85

    @property
    def contest(self) -> bool:
        return self.fmt == "int8-contest"

    @property
    def bits(self) -> int:
        return 8 if self.contest else int(self.fmt.removeprefix("int"))

    @property
    def qmax(self) -> int:
        return 2 ** (self.bits - 1) - 1


@dataclass
class QTensor:
    """One stored tensor. ``raw``: ``data`` as stored, cast back to ``orig_dtype`` on load; ``row``:
    codes (R, C) times an fp16 scale per row; ``tensor``: codes times one fp32 scale. ``fmt`` names
    the storage format for reports (exact, fp32, fp16, int8-contest, int6, ...)."""

    kind: str
    data: Tensor
    orig_dtype: torch.dtype
    scale: Tensor | None = None
    fmt: str = ""


def _quantile(x: Tensor, q: float, dim: int | None = None) -> Tensor:
    # torch.quantile refuses inputs above 2**24 elements; numpy has no such limit.
    if x.numel() <= 1 << 24:
        return torch.quantile(x, q, dim=dim) if dim is not None else torch.quantile(x.flatten(), q)
    arr = (
        np.quantile(x.cpu().numpy(), q, axis=dim)
        if dim is not None
        else np.quantile(x.cpu().numpy().ravel(), q)
    )
    return torch.as_tensor(arr, dtype=torch.float32, device=x.device)


def _clip_for(w: Tensor, spec: GridSpec, quantile: float) -> Tensor:
    if w.shape[1] == 0:
        return torch.zeros(w.shape[0], device=w.device)
    if spec.contest or spec.clip in ("percentile", "search"):
        if quantile >= 1.0:
            return w.abs().amax(dim=1)
        return _quantile(w.abs(), quantile, dim=1) if w.numel() else torch.zeros(w.shape[0], device=w.device)
    if spec.clip == "max":
        return w.abs().amax(dim=1)
    if spec.clip == "sdclip":  # the grid is symmetric about 0: spread about 0 (= std for zero-mean rows)
        return spec.k * w.pow(2).mean(dim=1).sqrt()
    raise ValueError(f"unknown clip rule {spec.clip!r}")


def row_scales(clip: Tensor, spec: GridSpec) -> tuple[Tensor, Tensor]:
    """(fp16 scale stored, fp32 scale the codes are rounded with) for row clips ``clip``."""
    if spec.contest:
        s32 = (clip / 127.0).clamp_min(CONTEST_FLOOR)
        return s32.to(torch.float16), s32
    s16 = (clip / spec.qmax).clamp_min(FP16_TINY).to(torch.float16).clamp_min(FP16_TINY)
    return s16, s16.float()


def round_codes(w: Tensor, clip: Tensor, s: Tensor, qmax: int) -> Tensor:
    """int8 codes of the rows of ``w`` clipped to +-clip and divided by ``s`` (both (R,))."""
    clipped = torch.maximum(torch.minimum(w, clip[:, None]), -clip[:, None])
    return torch.clamp(torch.round(clipped / s[:, None]), -qmax, qmax).to(torch.int8)


def row_grid(w: Tensor, spec: GridSpec, clip: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """(clip, fp16 scale, fp32 rounding scale) per row of a 2-D fp32 ``w``, by the spec's rule, or
    from given row clips (the Fisher allocation's)."""
    if clip is not None:
        return (clip, *row_scales(clip, spec))
    if spec.clip != "search" or spec.contest:
        clip = _clip_for(w, spec, spec.quantile)
        return (clip, *row_scales(clip, spec))
    best = None
    for q in SEARCH_QUANTILES:  # GPTQ-lite, per row (never worse than per matrix)
        clip = _clip_for(w, spec, q)
        s16, s32 = row_scales(clip, spec)
        err = ((round_codes(w, clip, s32, spec.qmax).float() * s16.float()[:, None] - w) ** 2).sum(1)
        if best is None:
            best = [err, clip, s16, s32]
        else:
            better = err < best[0]
            for i, new in enumerate((err, clip, s16, s32)):
                best[i] = torch.where(better, new, best[i])
    return best[1], best[2], best[3]


def quantize_rows(w: Tensor, spec: GridSpec, clip: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """(int8 codes, fp16 scales) of a 2-D tensor (row clips by the spec's rule unless given)."""
    w32 = w.detach().float()
    clip, s16, s32 = row_grid(w32, spec, clip)
    return round_codes(w32, clip, s32, spec.qmax), s16


def quantize(t: Tensor, spec: GridSpec, clip: Tensor | None = None) -> QTensor:
    """Store ``t`` on the grid: per row when 2-D (with the given row clips, if any); otherwise
    int8-contest's per-tensor form."""
    if t.ndim == 2:
        q, s16 = quantize_rows(t.cpu(), spec, clip)
        return QTensor("row", q, t.dtype, s16, spec.fmt)
    t32 = t.detach().float().cpu()
    clip = float(_quantile(t32.abs(), spec.quantile)) if t32.numel() else 0.0
    scale = torch.tensor(clip / 127.0 if clip > 0 else 1.0, dtype=torch.float32)
    q = torch.clamp(torch.round(torch.clamp(t32, -clip, clip) / scale), -127, 127)
    return QTensor("tensor", q.to(torch.int8), t.dtype, scale, "int8-contest")


def dequantize(e: QTensor) -> Tensor:
    """The tensor a stored entry stands for, in its original dtype."""
    if e.kind == "raw":
        return e.data.to(e.orig_dtype)
    if e.kind == "row":
        return (e.data.float() * e.scale.float()[:, None]).to(e.orig_dtype)
    if e.kind == "tensor":
        return (e.data.float() * e.scale.float()).to(e.orig_dtype)
    raise ValueError(f"unknown quantisation kind {e.kind!r}")


@torch.library.custom_op(
    "pgolf::grid_value",
    mutates_args=(),
    schema="(Tensor w, str fmt, str clip, float quantile, float k) -> Tensor",  # the bundle drops annotations
)
def grid_value(w: Tensor, fmt: str, clip: str, quantile: float, k: float) -> Tensor:
    """The dequantised grid value of a 2-D weight under GridSpec(fmt, clip, quantile, k). A custom op,
    so a compiler calls it as one opaque eager function: inductor, free to fuse and reorder the
    rounding arithmetic, otherwise rounded some weights to the neighbouring code (loss 7.07023 against
    eager's 7.06984 on the debug model), and QAT would not train the export's exact weights."""
    q, s16 = quantize_rows(w, GridSpec(fmt, clip, quantile, k))
    return (q.float() * s16.float()[:, None]).to(w.dtype)


@grid_value.register_fake
def _grid_value_shape(w: Tensor, fmt: str, clip: str, quantile: float, k: float) -> Tensor:
    return torch.empty_like(w)


def noisy_quant(w: Tensor, spec: GridSpec) -> Tensor:
    """Noisy QAT forward of a 2-D weight (seed-techniques §7.11): ``w`` plus uniform noise of one grid
    step per row, the step being the export's row scale, computed without gradient."""
    with torch.no_grad():
        step = row_grid(w.detach().float(), spec)[2]
    return w + (torch.rand_like(w) - 0.5) * step.to(w.dtype)[:, None]


def fake_quant(w: Tensor, spec: GridSpec) -> Tensor:
    """QAT forward of a 2-D weight: exactly the dequantised grid value (bit for bit what the export
    stores and the loader rebuilds, compiled or not), with the gradient of the identity
    (straight-through)."""
    deq = grid_value(w.detach(), spec.fmt, spec.clip, spec.quantile, spec.k)
    return deq + (w - w.detach())
