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
than once. ``quant.nekp`` adds a penalty on the same weights' row kurtosis to the training loss
(``kurtosis_penalty``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pgolf.config.quant import QuantConfig
from pgolf.errors import ConfigError
from pgolf.model.layers import Linear
from pgolf.model.params import param_roles
from pgolf.quant.grid import GridSpec, fake_quant, noisy_quant
from pgolf.quant.policy import grid_spec


def grid_linears(model: nn.Module, cfg: QuantConfig) -> list[tuple[Linear, GridSpec]]:
    """Every Linear in ``quant.qat_scope`` whose weight the export stores on a grid, with its spec."""
    roles = param_roles(model)
    scope = ("",) if cfg.qat_scope == "all" else tuple(f"blocks.{i}." for i in model.shared_blocks())
    found = []
    for name, module in model.named_modules():
        if isinstance(module, Linear) and name.startswith(scope):
            spec = grid_spec(f"{name}.weight", module.weight, roles[f"{name}.weight"], cfg)
            if spec is not None:
                found.append((module, spec))
    return found


def enable_qat(model: nn.Module, cfg: QuantConfig) -> int:
    """Install fake quantisation (or ``quant.qat_noise``'s noise) on every grid-quantised Linear in
    ``quant.qat_scope``; returns how many."""
    quant = noisy_quant if cfg.qat_noise else fake_quant
    linears = grid_linears(model, cfg)
    for module, spec in linears:
        module.weight_fn = lambda w, spec=spec: quant(w, spec)
    return len(linears)


def row_kurtosis(w: Tensor) -> Tensor:
    """Each row's kurtosis E[(w - mean)^4] / Var^2 (3 for a normal distribution, 1.8 for a uniform)."""
    c = w - w.mean(dim=1, keepdim=True)
    var = c.square().mean(dim=1)
    return c.pow(4).mean(dim=1) / (var + 1e-12).square()  # an all-zero row (a zero init) counts 0


def kurtosis_penalty(weights: list[Tensor], target: float) -> Tensor:
    """NEKP: the mean over every row of ``weights`` of max(0, kurtosis - target)."""
    excess = torch.cat([F.relu(row_kurtosis(w.float()) - target) for w in weights])
    return excess.mean()


class KurtosisPenalty:
    """``quant.nekp`` in training: the weights it reads (``grid_linears``), found once; refused when
    there are none."""

    def __init__(self, model: nn.Module, cfg: QuantConfig) -> None:
        self.cfg = cfg
        self.weights = [m.weight for m, _ in grid_linears(model, cfg)]
        if not self.weights:
            raise ConfigError(
                f"quant.nekp={cfg.nekp}: no Linear of this model is grid-quantised (formats "
                f"quant.matrix/mlp, quant.keep_float_max_numel={cfg.keep_float_max_numel}, "
                f"quant.qat_scope={cfg.qat_scope}), so the penalty would read nothing"
            )

    def backward(self) -> None:
        """Add the weighted penalty's gradient to the weights' (once per optimizer step)."""
        (self.cfg.nekp * kurtosis_penalty(self.weights, self.cfg.nekp_target)).backward()

    def describe(self) -> str:
        return f"nekp:{self.cfg.nekp} matrices:{len(self.weights)}"
