"""The causal token n-gram tilt (sota-stack §2.5): the hinted token's logit boosted, renormalised.
Implementation and cost: ``eval.mixture`` (it shares the experts' head)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from pgolf.checks import non_negative, positive
from pgolf.errors import ConfigError
from pgolf.methods.base import CostInputs, Method, plugin
from pgolf.methods.experts import mixture_head


@dataclass(frozen=True, kw_only=True)
class TiltSection:
    tilt: bool = False
    """Causal token n-gram tilt: boost the hinted token's logit by tilt_beta, renormalised."""
    tilt_order: int = 16
    """Tilt: tokens of context whose earlier continuations give the hint."""
    tilt_threshold: float = 0.8
    """Tilt: hint only when the context's most frequent next token has at least this share."""
    tilt_beta: float = 2.625
    """Tilt: logit boost of the hinted token."""


class Tilt(Method):
    name, Section, modules, adapts = "tilt", TiltSection, ("pgolf.eval.mixture",), True
    off: ClassVar[dict[str, object]] = {"tilt": False}

    def used(self, cfg) -> bool:
        return cfg.tilt

    def check(self, cfg) -> None:
        positive(cfg, "tilt_order")
        non_negative(cfg, "tilt_beta")
        if not 0 < cfg.tilt_threshold <= 1:
            raise ConfigError("eval.tilt_threshold must be in (0, 1]")

    def label(self, cfg) -> str:
        return "tilt"

    def head(self, cfg, valset, vocab_size: int, clock):
        return mixture_head(cfg, valset, vocab_size, clock)  # with the experts when both are used

    def cost(self, cfg, work: CostInputs) -> list[tuple[str, float, str]]:
        return plugin(self.modules[0], self.modules).tilt_cost(cfg, work)
