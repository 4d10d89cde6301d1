"""Eval-time experts (n-gram, match, bigram) mixed with the model, learning from scored tokens only
(seed-techniques §12). Implementation and cost: ``eval.mixture`` + ``eval.experts``."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

from pgolf.checks import positive
from pgolf.errors import ConfigError
from pgolf.methods.base import CostInputs, Method, plugin

EXPERTS = ("ngram", "match", "bigram")


@dataclass(frozen=True, kw_only=True)
class ExpertsSection:
    experts: str = ""
    """Eval-time experts mixed with the model, learning from scored tokens only: comma list of
    ngram (PPM-style backoff), match (longest suffix match) and bigram; empty for none."""
    mix: str = "linear"
    """How experts are pooled: linear (sum of w_i p_i) or log (softmax of sum w_i log p_i)."""
    mix_rule: str = "bayes"
    """How the mixer's weights learn after each scored target y: bayes (the seed's exponential
    weights, w_i <- w_i * p_i(y)^eta: they converge on the best single expert) or eg (exponentiated
    gradient, w_i <- w_i * exp(mix_lr * p_i(y) / P(y)): they converge on the best mixture)."""
    mix_eta: float = 1.0
    """Exponential-weights learning rate (mix_rule=bayes): w_i <- w_i * p_i(y)^eta."""
    mix_lr: float = 0.005
    """Exponentiated-gradient learning rate (mix_rule=eg)."""
    mix_floor: float = 0.01
    """Each mixer weight is floored at this before renormalising (fixed-share-like switching)."""
    mix_fixed_share: bool = False
    """Normalise the updated weights before flooring them (fixed share); the seed floors the raw
    products, which resets every weight to the floor after a target all experts found unlikely."""
    ngram_order: int = 6
    """N-gram expert: contexts of 0 .. order-1 tokens."""
    ngram_alpha: float = 0.0
    """N-gram expert: PPM escape mass alpha (0: order/2)."""

    @property
    def expert_list(self) -> list[str]:
        return [x.strip() for x in self.experts.split(",") if x.strip()]


def mixture_head(cfg, valset, vocab_size: int, clock):
    """The model mixed with the experts and the tilt (after LoRA TTT, which scores documents out of
    stream order, in a deferred stream-order pass)."""
    with clock.phase("experts"):
        mixture = plugin("pgolf.eval.mixture", Experts.modules)
        return mixture.MixtureHead(cfg, valset.tokens, vocab_size, deferred=cfg.ttt == "lora")


class Experts(Method):
    name, Section, modules, adapts = "experts", ExpertsSection, ("pgolf.eval.mixture",), True
    off: ClassVar[dict[str, object]] = {"experts": ""}

    def used(self, cfg) -> bool:
        return bool(cfg.expert_list)

    def check(self, cfg) -> None:
        positive(cfg, "mix_eta", "mix_lr", "ngram_order")
        if cfg.ngram_alpha < 0:
            raise ConfigError(f"eval.ngram_alpha must be >= 0, got {cfg.ngram_alpha}")
        for name, allowed in (("mix", ("linear", "log")), ("mix_rule", ("bayes", "eg"))):
            if getattr(cfg, name) not in allowed:
                raise ConfigError(f"eval.{name}={getattr(cfg, name)!r}; expected one of {', '.join(allowed)}")
        if not math.isfinite(cfg.mix_lr):
            raise ConfigError(f"eval.mix_lr must be finite, got {cfg.mix_lr}")
        if cfg.mix_rule == "eg" and (cfg.mix != "linear" or cfg.mix_fixed_share):
            raise ConfigError(
                "eval.mix_rule=eg is the linear pool's gradient and always normalises: it takes "
                "eval.mix=linear and eval.mix_fixed_share=false"
            )
        items = cfg.expert_list
        bad = [x for x in items if x not in EXPERTS] or (len(set(items)) < len(items) and ["(repeated)"])
        if bad:
            raise ConfigError(f"eval.experts={cfg.experts!r}: {bad[0]} is not one of {EXPERTS}")
        if cfg.ttt == "lora" and items and cfg.mix != "linear":
            raise ConfigError(
                "eval.experts with eval.ttt=lora mix in a stream-order pass after scoring (LoRA scores "
                "documents in batches), which keeps each target's probability only: eval.mix=linear"
            )
        if not 0 < cfg.mix_floor < 1:
            raise ConfigError("eval.mix_floor must be in (0, 1)")

    def label(self, cfg) -> str:
        return (
            "+".join(cfg.expert_list)
            + f"-{cfg.mix}"
            + ("-share" if cfg.mix_fixed_share else "")
            + ("-eg" if cfg.mix_rule == "eg" else "")
        )

    def head(self, cfg, valset, vocab_size: int, clock):
        return mixture_head(cfg, valset, vocab_size, clock)

    def cost(self, cfg, work: CostInputs) -> list[tuple[str, float, str]]:
        return plugin(self.modules[0], self.modules).cost(cfg, work)

    def probe(self, cfg, tokens, n_docs: int) -> dict:
        """The mixer's learning rate raised (a leak moves scores in proportion)."""
        return {"mix_lr": max(cfg.mix_lr, 0.1)}
