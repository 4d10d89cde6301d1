"""Muon for block matrices and Adam for the rest (seed-techniques §6); their schedule is ``train.schedule``.

Muon, per owned parameter with gradient G: B <- mu B + G; U = G + mu B (Nesterov);
O = NS5(U) * sqrt(max(1, rows/cols)); W <- W (1 - lr wd) - lr O (decoupled weight decay with the
scheduled lr, records 2026-03-19 onward; wd = 0 in the baseline). Frontier options (sota-stack §2.3):
MuonEq-R divides each row of U by its L2 norm before orthogonalising; Polar Express replaces the fixed
quintic by five per-iteration minimax triples; ``step`` takes the scheduled LR multiplier, momentum
and weight-decay multiplier (the warmdown's MIN_LR floor, the late taper). Parameter i is
orthogonalised by rank i mod world_size; updates travel in one flat buffer and one all-reduce.
Unlike the contest script, every rank keeps the (cheap, elementwise) momentum of every parameter, so
optimizer state is identical on all ranks and a checkpoint from rank 0 resumes at any world size.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from pgolf import dist
from pgolf.config.optim import OptimConfig
from pgolf.model.params import ROLES, param_roles

NS_COEFFS = (3.4445, -4.7750, 2.0315)
"""The fixed quintic of the contest's Muon, applied at every iteration."""
POLAR_EXPRESS_COEFFS = (
    (8.156554524902461, -22.48329292557795, 15.878769915207462),
    (4.042929935166739, -2.808917465908714, 0.5000178451051316),
    (3.8916678022926607, -2.772484153217685, 0.5060648178503393),
    (3.285753657755655, -2.3681294933425376, 0.46449024233003106),
    (2.3465413258596377, -1.7097828382687081, 0.42323551169305323),
)
"""Polar Express (Amsel et al. 2025; PR #1344 -> #1787): the published minimax-optimal triple of each of
five iterations, designed for singular values in (0, 1] after a slightly inflated Frobenius scaling;
iterations past the fifth repeat the last triple."""
POLAR_EXPRESS_SAFETY = 1.02
"""The input is divided by this times its Frobenius norm, so bf16 rounding cannot push the top
singular value above 1, where the aggressive first triple diverges."""


def newton_schulz5(
    g: Tensor, steps: int, dtype: torch.dtype = torch.float32, eps: float = 1e-7, polar: bool = False
) -> Tensor:
    """Approximate the orthogonal polar factor of a 2-D ``g`` with the quintic iteration
    X <- aX + (bA + cA^2)X, A = XX^T, after scaling g to unit Frobenius norm: the fixed triple
    ``NS_COEFFS`` at every step, or with ``polar`` the per-step ``POLAR_EXPRESS_COEFFS``."""
    x = g.to(dtype)
    x = x / (x.norm() * (POLAR_EXPRESS_SAFETY if polar else 1.0) + eps)
    transposed = g.size(0) > g.size(1)
    if transposed:
        x = x.T
    for i in range(steps):
        a, b, c = POLAR_EXPRESS_COEFFS[min(i, 4)] if polar else NS_COEFFS
        am = x @ x.T
        x = a * x + (b * am + c * am @ am) @ x
    return x.T if transposed else x


def row_normalise(u: Tensor, eps: float = 1e-7) -> Tensor:
    """MuonEq-R (arXiv 2603.28254): each row of the update divided by its L2 norm."""
    return u / (u.norm(dim=1, keepdim=True) + eps)


class Muon(torch.optim.Optimizer):
    def __init__(
        self,
        params,
        *,
        lr: float,
        momentum: float,
        backend_steps: int,
        ns_dtype: torch.dtype,
        weight_decay: float = 0.0,
        polar_express: bool = False,
        row_norm: bool = False,
    ) -> None:
        defaults = {
            "lr": lr,
            "momentum": momentum,
            "backend_steps": backend_steps,
            "weight_decay": weight_decay,
        }
        super().__init__(params, defaults)
        self.ns_dtype = ns_dtype
        self.polar_express, self.row_norm = polar_express, row_norm
        self.ns = newton_schulz5
        self.wd_mul = 1.0
        """Multiplies every group's weight decay (the late taper); set per step by ``Optimizers``."""

    @torch.no_grad()
    def step(self, closure=None) -> None:
        rank, world = dist.rank(), dist.world_size()
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            mu = group["momentum"]
            flat = torch.zeros(sum(p.numel() for p in params), dtype=self.ns_dtype, device=params[0].device)
            offset = 0
            for i, p in enumerate(params):
                g = p.grad
                buf = self.state[p].get("momentum_buffer")
                if buf is None:
                    buf = self.state[p]["momentum_buffer"] = torch.zeros_like(g)
                buf.mul_(mu).add_(g)
                if i % world == rank:
                    u = g.add(buf, alpha=mu)
                    if self.row_norm:
                        u = row_normalise(u)
                    o = self.ns(u, group["backend_steps"], self.ns_dtype, polar=self.polar_express)
                    o = o * math.sqrt(max(1.0, p.size(0) / p.size(1)))
                    flat[offset : offset + p.numel()] = o.flatten()
                offset += p.numel()
            dist.all_reduce_sum_(flat)
            offset = 0
            decay = 1 - group["lr"] * group["weight_decay"] * self.wd_mul
            for p in params:
                if decay != 1:
                    p.mul_(decay)
                p.add_(flat[offset : offset + p.numel()].view_as(p).to(p.dtype), alpha=-group["lr"])
                offset += p.numel()


def split_parameters(model: nn.Module) -> dict[str, list[tuple[str, nn.Parameter]]]:
    """Named trainable parameters by role (``model.params``): matrix (Muon), embed, head, control
    (Adam). Frozen ones (``requires_grad=False``: the asymmetric logit caps, which only test-time SGD
    adapts) are in none."""
    groups: dict[str, list[tuple[str, nn.Parameter]]] = {role: [] for role in ROLES}
    roles = param_roles(model)
    for name, p in model.named_parameters():
        if p.requires_grad:
            groups[roles[name]].append((name, p))
    return groups


class Optimizers:
    """Muon + Adam behind one step(); every group keeps ``base_lr`` and is scaled by ``lr_mul``."""

    def __init__(self, model: nn.Module, cfg: OptimConfig, tied: bool, device: torch.device) -> None:
        self.cfg = cfg
        groups = split_parameters(model)
        embed_lr = cfg.tied_embed_lr if tied else cfg.embed_lr
        adam_groups = [
            {
                "params": [p for _, p in groups["embed"]],
                "lr": embed_lr,
                "base_lr": embed_lr,
                "betas": (cfg.beta1, cfg.embed_beta2 or cfg.beta2),
            },
            {
                "params": [p for _, p in groups["control"]],
                "lr": cfg.scalar_lr,
                "base_lr": cfg.scalar_lr,
                "betas": (cfg.beta1, cfg.scalar_beta2 or cfg.beta2),
            },
        ]
        if groups["head"]:
            adam_groups.append(
                {
                    "params": [p for _, p in groups["head"]],
                    "lr": cfg.head_lr,
                    "base_lr": cfg.head_lr,
                    "betas": (cfg.beta1, cfg.head_beta2 or cfg.beta2),
                }
            )
        self.adam = torch.optim.AdamW(
            [g for g in adam_groups if g["params"]],
            betas=(cfg.beta1, cfg.beta2),
            eps=cfg.adam_eps,
            weight_decay=cfg.adam_weight_decay,
            fused=device.type == "cuda",
        )
        self.muon = Muon(
            [p for _, p in groups["matrix"]],
            lr=cfg.matrix_lr,
            momentum=cfg.muon_momentum,
            backend_steps=cfg.muon_backend_steps,
            ns_dtype=torch.bfloat16 if device.type == "cuda" else torch.float32,
            weight_decay=cfg.muon_weight_decay,
            polar_express=cfg.muon_polar_express,
            row_norm=cfg.muon_row_norm,
        )
        for g in self.muon.param_groups:
            g["base_lr"] = cfg.matrix_lr
        self.params = [p for group in groups.values() for _, p in group]

    def step(self, lr_mul: float, momentum: float, wd_mul: float = 1.0) -> None:
        self.muon.wd_mul = wd_mul
        for opt in (self.adam, self.muon):
            for g in opt.param_groups:
                g["lr"] = g["base_lr"] * lr_mul
        for g in self.muon.param_groups:
            g["momentum"] = momentum
        if self.cfg.grad_clip_norm > 0:
            torch.nn.utils.clip_grad_norm_(self.params, self.cfg.grad_clip_norm)
        self.adam.step()
        self.muon.step()

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None

    def state_dict(self) -> dict:
        return {"adam": self.adam.state_dict(), "muon": self.muon.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.adam.load_state_dict(state["adam"])
        self.muon.load_state_dict(state["muon"])
