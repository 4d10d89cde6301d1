"""A state dict to stored entries under the export policy, and back."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import torch
from torch import Tensor

from pgolf.config.quant import QuantConfig
from pgolf.quant.fisher import fisher_clips, predicted_gap
from pgolf.quant.gptq import gptq_rounders
from pgolf.quant.grid import CONTEST_FLOOR, QTensor, dequantize, quantize
from pgolf.quant.policy import grid_spec, tensor_format


@dataclass
class QuantStats:
    params: Counter = field(default_factory=Counter)
    """Parameters per storage format."""
    floored_rows: int = 0
    """int8-contest rows whose scale sits on the 1/127 floor (their codes use part of the range)."""
    contest_rows: int = 0
    fisher_tensors: int = 0
    """Tensors whose row steps the Fisher allocation chose."""
    fisher_predicted_gap: float | None = None
    """Its second-order estimate of the loss increase (nats per token, round-to-nearest)."""
    gptq_damped: dict[str, float] = field(default_factory=dict)
    """Tensors whose Hessian needed more damping than quant.gptq_damp: the damping used (-1: none
    sufficed, rounded to nearest)."""

    def summary(self) -> str:
        formats = " ".join(f"{k}:{v}" for k, v in sorted(self.params.items()))
        line = f"{formats} scale_floor_rows:{self.floored_rows}/{self.contest_rows}"
        if self.fisher_predicted_gap is not None:
            gap = self.fisher_predicted_gap
            line += f" fisher_tensors:{self.fisher_tensors} fisher_predicted_gap:{gap:.5f}"
        if self.gptq_damped:
            line += " gptq_more_damping:" + ",".join(
                f"{k}={v:g}" for k, v in sorted(self.gptq_damped.items())
            )
        return line


def quantize_state_dict(
    state: dict[str, Tensor],
    roles: dict[str, str],
    cfg: QuantConfig,
    hessians: dict[str, Tensor] | None = None,
    sensitivities: dict[str, Tensor] | None = None,
    tokens: int = 0,
) -> tuple[dict[str, QTensor], QuantStats]:
    """Entries for every tensor, by its role in ``roles`` (``model.params.param_roles``): GPTQ instead
    of round-to-nearest where ``hessians`` has the tensor; with quant.alloc=fisher, the row steps of
    the tensors in ``sensitivities`` (summed over ``tokens`` calibration tokens) from the Fisher
    allocation, the others by their role's clip rule."""
    out: dict[str, QTensor] = {}
    stats = QuantStats()
    rounders = (
        gptq_rounders(hessians, block=cfg.gptq_block, damp=cfg.gptq_damp, damped=stats.gptq_damped)
        if hessians
        else {}
    )
    clips: dict[str, Tensor] = {}
    if cfg.alloc == "fisher" and sensitivities is None:
        raise ValueError("quant.alloc=fisher needs the calibration's sensitivities (none were given)")
    if cfg.alloc == "fisher":
        specs = {
            n: s
            for n, t in state.items()
            if t.ndim == 2 and (s := grid_spec(n, t, roles[n], cfg)) is not None
        }
        clips = fisher_clips(state, sensitivities, specs, cfg.fisher_step, cfg.fisher_max_rms)
        stats.fisher_tensors = len(clips)
        stats.fisher_predicted_gap = predicted_gap(state, sensitivities, clips, specs, tokens)
    for name, tensor in state.items():
        t = tensor.detach().cpu().contiguous()
        fmt = tensor_format(name, t, roles[name], cfg)
        stats.params[fmt] += t.numel()
        spec = grid_spec(name, t, roles[name], cfg)
        if spec is None:
            store = {"exact": t.dtype, "fp32": torch.float32, "fp16": torch.float16}[fmt]
            out[name] = QTensor("raw", t.to(store), t.dtype, fmt=fmt)
            continue
        rounder, clip = rounders.get(name), clips.get(name)
        out[name] = rounder(t, spec, clip) if rounder is not None and t.ndim == 2 else quantize(t, spec, clip)
        if spec.contest and t.ndim == 2:
            stats.contest_rows += t.shape[0]
            stats.floored_rows += int(
                (out[name].scale.float() <= torch.tensor(CONTEST_FLOOR).half().float()).sum()
            )
    return out, stats


def dequantize_state_dict(entries: dict[str, QTensor]) -> dict[str, Tensor]:
    return {name: dequantize(e) for name, e in entries.items()}
