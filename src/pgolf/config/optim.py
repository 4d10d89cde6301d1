"""The optimizer's schema: Muon and Adam groups, momentum warm-up, warmdown (seed-techniques §6)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from pgolf.checks import non_negative, positive
from pgolf.errors import ConfigError


@dataclass(frozen=True, kw_only=True)
class OptimConfig:
    SECTION: ClassVar[str] = "optim"

    matrix_lr: float = 0.04
    """Muon learning rate for the 2-D block matrices."""
    scalar_lr: float = 0.04
    """Adam learning rate for vectors, scalars and control tensors."""
    tied_embed_lr: float = 0.05
    """Adam learning rate of the embedding when it is tied to the head."""
    embed_lr: float = 0.6
    """Adam learning rate of the embedding when untied."""
    head_lr: float = 0.008
    """Adam learning rate of the untied output head."""
    beta1: float = 0.9
    """Adam beta1."""
    beta2: float = 0.95
    """Adam beta2."""
    adam_eps: float = 1e-8
    """Adam epsilon."""
    muon_momentum: float = 0.95
    """Muon momentum after warm-up."""
    muon_momentum_warmup_start: float = 0.85
    """Muon momentum at step 0, raised linearly to muon_momentum."""
    muon_momentum_warmup_steps: int = 500
    """Steps of the Muon momentum warm-up."""
    muon_backend_steps: int = 5
    """Newton-Schulz iterations."""
    grad_clip_norm: float = 0.0
    """Global L2 gradient clip (0: off)."""
    muon_weight_decay: float = 0.0
    """Decoupled weight decay of Muon matrices: W <- W (1 - lr_t * wd) before each update."""
    adam_weight_decay: float = 0.0
    """Decoupled (AdamW) weight decay of the embedding, head and scalar groups."""
    warmdown_iters: int = 1200
    """Linear LR decay to 0 over the last N steps (in wall-clock mode: N times the mean step time)."""
    warmdown_frac: float = 0.0
    """If > 0, decay over this fraction of the budget (time or steps) instead of warmdown_iters."""
    min_lr: float = 0.0
    """Floor of the LR multiplier during the warmdown (MIN_LR, PR #1787: 0.1)."""
    muon_polar_express: bool = False
    """Newton-Schulz with the five per-iteration Polar Express triples instead of the fixed quintic."""
    muon_row_norm: bool = False
    """MuonEq-R: divide each row of the Nesterov update by its L2 norm before orthogonalising."""
    wd_taper_from: float = 0.0
    """From this fraction of the run (wall clock, else steps) the Muon weight decay is multiplied by
    wd_taper_mult (0: no taper; PR #1729: 0.7)."""
    wd_taper_mult: float = 0.5
    """The late weight-decay multiplier (see wd_taper_from)."""
    embed_beta2: float = 0.0
    """Adam beta2 of the embedding group (0: beta2)."""
    scalar_beta2: float = 0.0
    """Adam beta2 of the scalar/control group (0: beta2)."""
    head_beta2: float = 0.0
    """Adam beta2 of the untied head (0: beta2)."""

    def __post_init__(self) -> None:
        non_negative(self, "warmdown_iters", "grad_clip_norm", "muon_momentum_warmup_steps")
        non_negative(self, "muon_weight_decay", "adam_weight_decay")
        positive(self, "muon_backend_steps")
        for name in ("warmdown_frac", "min_lr", "wd_taper_from"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ConfigError(f"optim.{name} must be in [0, 1], got {getattr(self, name)}")
        non_negative(self, "wd_taper_mult")
        if self.muon_polar_express and self.muon_backend_steps < 5:
            raise ConfigError(
                "optim.muon_polar_express needs optim.muon_backend_steps >= 5 (its triples are designed "
                f"as a sequence of five), got {self.muon_backend_steps}"
            )
        betas = ("muon_momentum", "muon_momentum_warmup_start", "beta1", "beta2")
        for name in (*betas, "embed_beta2", "scalar_beta2", "head_beta2"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ConfigError(f"optim.{name} must be in [0, 1), got {getattr(self, name)}")
