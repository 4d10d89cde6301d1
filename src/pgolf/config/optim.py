"""The optimizer's schema: Muon and Adam groups, momentum warm-up, warmdown (seed-techniques §6)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from pgolf.config.base import non_negative, positive
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

    def __post_init__(self) -> None:
        non_negative(self, "warmdown_iters", "grad_clip_norm", "muon_momentum_warmup_steps")
        non_negative(self, "muon_weight_decay", "adam_weight_decay")
        positive(self, "muon_backend_steps")
        if not 0.0 <= self.warmdown_frac <= 1.0:
            raise ConfigError(f"optim.warmdown_frac must be in [0, 1], got {self.warmdown_frac}")
        for name in ("muon_momentum", "muon_momentum_warmup_start", "beta1", "beta2"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ConfigError(f"optim.{name} must be in [0, 1), got {getattr(self, name)}")
