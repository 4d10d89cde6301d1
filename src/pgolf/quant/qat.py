"""Quantisation-aware training: the export's exact grid in the training forward (seed-techniques §9.7).

Every Linear whose weight the export stores on a grid gets ``weight_fn = fake_quant(., its spec)``,
with the spec from the same policy function the export uses, so the forward weights are bit for bit
the exported-then-dequantised ones (a test checks it) and gradients pass straight through. The
layers apply it in training mode only, so validation scores the float weights. The tied embedding
and the BigramHash table are not Linears and never see fake quantisation (their export is int8 or
int7 round-to-nearest). With GPTQ on, the export's codes differ from QAT's round-to-nearest ones by
design: QAT then trains against the grid, GPTQ chooses the codes.

``quant.qat_noise`` replaces the rounding with uniform noise of one grid step per row (noisy QAT,
§7.11: the depth-recurrent model's quantisation gap, amplified through its loops, fell from 0.37 to
0.002 bpb in its source); ``quant.qat_scope=shared`` limits either to the blocks a forward runs more
than once.
"""

from __future__ import annotations

from torch import nn

from pgolf.config.quant import QuantConfig
from pgolf.model.layers import Linear
from pgolf.model.params import param_roles
from pgolf.quant.grid import fake_quant, noisy_quant
from pgolf.quant.policy import grid_spec


def enable_qat(model: nn.Module, cfg: QuantConfig) -> int:
    """Install fake quantisation (or ``quant.qat_noise``'s noise) on every grid-quantised Linear in
    ``quant.qat_scope``; returns how many."""
    n, roles, quant = 0, param_roles(model), noisy_quant if cfg.qat_noise else fake_quant
    scope = ("",) if cfg.qat_scope == "all" else tuple(f"blocks.{i}." for i in model.shared_blocks())
    for name, module in model.named_modules():
        if isinstance(module, Linear) and name.startswith(scope):
            spec = grid_spec(f"{name}.weight", module.weight, roles[f"{name}.weight"], cfg)
            if spec is not None:
                module.weight_fn = lambda w, spec=spec: quant(w, spec)
                n += 1
    return n
