"""Full-Hessian GPTQ (Frantar et al. 2022; sota-stack §2.5) on the export's own grids.

For a weight W (R x C) that multiplies inputs x (C,), the layer-output error of a rounding W^ is
E ||x (W - W^)^T||^2 = tr((W - W^) H (W - W^)^T) with H = E[x x^T]. GPTQ rounds one column at a
time and moves the rounding error onto the columns not yet rounded, along H's inverse:
H += damp * mean(diag H) * I (x10 while H is not positive definite, logged); columns in descending
diag(H) order ("act-order"); U = the upper Cholesky factor of H^-1; for column j: q_j = grid(w_j),
e = (w_j - q_j) / U_jj, W[:, j:] -= e U_j,j:, in blocks of ``block`` columns with the block's error
applied to the rest at once.

The grid (row clip and scale) is fixed from the original W by the export's clip rule, so GPTQ only
changes which code each weight gets, and the artifact format is unchanged. The Hessians come from
forward hooks on each quantised Linear's input and, for the (tied) head, on ``GPT.head_in``; they
are summed over calibration batches of *training* data (never validation data) and over ranks.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from torch import Tensor, nn

from pgolf import dist
from pgolf.quant.fisher import fp32
from pgolf.quant.grid import GridSpec, QTensor, quantize, row_grid


def hessian_targets(model: nn.Module, names: set[str]) -> dict[str, nn.Module]:
    """Weight name -> the module whose *input* multiplies it, for the names GPTQ should round."""
    targets = {f"{n}.weight": m for n, m in model.named_modules() if isinstance(m, nn.Linear)}
    head = "lm_head.weight" if getattr(model, "lm_head", None) is not None else "tok_emb.weight"
    if hasattr(model, "head_in"):
        targets[head] = model.head_in
    return {k: v for k, v in targets.items() if k in names}


@torch.no_grad()
def collect_hessians(model: nn.Module, names: set[str], batches: Iterable[Tensor]) -> dict[str, Tensor]:
    """H = mean over calibration tokens of x x^T (fp32, (C, C)) for each name, from forward passes on
    ``batches`` of input ids; summed over ranks. The forward may run under bf16 autocast (as training
    does), but each x^T x is an fp32 GEMM into an fp32 sum: under autocast it would be a bf16 GEMM
    into a bf16 running sum, ~1 % per entry, as large as GPTQ's damping (the Cholesky then fails).
    With TF32 on (the trainer enables it on CUDA) the GEMM rounds its inputs to 10-bit mantissas:
    still the Gram matrix of those inputs, positive semi-definite, off by ~5e-4 relative."""
    targets = hessian_targets(model, names)
    sums: dict[str, Tensor] = {}
    rows = dict.fromkeys(targets, 0)
    hooks = []
    for name, module in targets.items():

        def hook(mod, inputs, output, name=name):
            x = inputs[0].detach()
            with fp32(x):
                x = x.reshape(-1, x.shape[-1]).float()
                if name in sums:
                    sums[name] += x.T @ x
                else:
                    sums[name] = x.T @ x
            rows[name] += x.shape[0]  # a shape: no device tensor, no sync

        hooks.append(module.register_forward_hook(hook))
    was_training = model.training
    model.eval()
    try:
        for ids in batches:
            model(ids)
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    out = {}
    for name in targets:
        total = torch.tensor(float(rows[name]), dtype=torch.float64, device=sums[name].device)
        dist.all_reduce_sum_(sums[name])
        dist.all_reduce_sum_(total)
        out[name] = (sums[name] / total).float()
    return out


MAX_DAMP = 1.0
"""The most damping GPTQ escalates to (x10 per failed Cholesky) before it rounds a tensor to nearest."""


def inverse_factor(h: Tensor, damp: float) -> tuple[Tensor, Tensor, float] | None:
    """GPTQ's column order (descending diagonal of the damped H, "act-order"), U (the upper Cholesky
    factor of the inverse of the damped H in that order; float64 (C, C)) and the damping d of
    H + d mean(diag H) I that made it positive definite: ``damp``, else x10 per failure up to
    ``MAX_DAMP``. None when no damping does (a non-finite H)."""
    if not torch.isfinite(h).all():
        return None
    eye, mean_diag = torch.eye(h.shape[0], dtype=h.dtype), torch.diag(h).mean()
    perm = torch.argsort(torch.diag(h + damp * mean_diag * eye), descending=True)
    d = damp
    while True:
        damped = (h + d * mean_diag * eye)[perm][:, perm]
        try:
            return (
                perm,
                torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(damped)), upper=True),
                d,
            )
        except torch.linalg.LinAlgError:
            if d >= MAX_DAMP:
                return None
            d = min(MAX_DAMP, max(10 * d, 1e-4))


def gptq_quantize(
    w: Tensor,
    h: Tensor,
    spec: GridSpec,
    clip: Tensor | None = None,
    *,
    block: int = 128,
    damp: float = 0.01,
    damped: dict[str, float] | None = None,
    name: str = "",
) -> QTensor:
    """Round a 2-D ``w`` on ``spec``'s grid (row clips by its rule unless given) with GPTQ under input
    second moment ``h`` (C, C). When ``h`` needs more damping than ``damp`` to factor, the damping used
    is recorded in ``damped[name]`` (-1: none sufficed, and ``w`` is rounded to nearest instead: the
    trained weights are never lost to a failed solve)."""
    w32 = w.detach().float().cpu().clone()
    h = h.detach().double().cpu().clone()
    dead = torch.diag(h) == 0
    h[dead, dead] = 1.0
    factor = inverse_factor(h, damp)
    if factor is None or factor[2] != damp:
        if damped is not None:
            damped[name] = -1.0 if factor is None else factor[2]
        if factor is None:
            return quantize(w, spec, clip)
    perm, u = factor[0], factor[1].float()
    clip, s16, s32 = row_grid(w32, spec, clip)
    deq_scale = s16.float()
    w32[:, dead] = 0.0
    w32 = w32[:, perm]
    codes = torch.zeros_like(w32, dtype=torch.int8)
    qmax = spec.qmax
    for i1 in range(0, w32.shape[1], block):
        i2 = min(i1 + block, w32.shape[1])
        wb, ub = w32[:, i1:i2].clone(), u[i1:i2, i1:i2]
        err = torch.zeros_like(wb)
        for i in range(i2 - i1):
            col = wb[:, i]
            q = torch.clamp(torch.round(torch.maximum(torch.minimum(col, clip), -clip) / s32), -qmax, qmax)
            codes[:, i1 + i] = q.to(torch.int8)
            e = (col - q * deq_scale) / ub[i, i]
            wb[:, i:] -= e[:, None] * ub[i, i:][None, :]
            err[:, i] = e
        w32[:, i2:] -= err @ u[i1:i2, i2:]
    inverse = torch.argsort(perm)
    return QTensor("row", codes[:, inverse].contiguous(), w.dtype, s16, spec.fmt)


def gptq_rounders(
    hessians: dict[str, Tensor], *, block: int, damp: float, damped: dict[str, float] | None = None
) -> dict[str, Callable]:
    """``quant.export.quantize_state_dict``'s rounders: GPTQ for every tensor with a Hessian; more
    damping than ``damp`` goes to ``damped`` (``gptq_quantize``)."""
    return {
        name: (
            lambda t, spec, clip, h=h, name=name: gptq_quantize(
                t, h, spec, clip, block=block, damp=damp, damped=damped, name=name
            )
        )
        for name, h in hessians.items()
    }
