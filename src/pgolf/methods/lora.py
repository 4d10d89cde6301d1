"""Per-document batched LoRA test-time training with optional phased global SGD (seed-techniques
§11.1; sota-stack §2.6). Implementation, plan (chunks of a document, phases of the stream) and
cost: ``eval.lora``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from pgolf.checks import non_negative, positive
from pgolf.errors import ConfigError
from pgolf.methods.base import CostInputs, Method, plugin

LORA_TARGETS = ("q", "k", "v", "o", "head")


@dataclass(frozen=True, kw_only=True)
class LoraSection:
    lora_rank: int = 8
    """LoRA TTT: rank r of each adapter."""
    lora_targets: str = "q,v,head"
    """LoRA TTT: comma list of q, k, v, o (attention projections of every block) and head."""
    lora_alpha: float = 0.0
    """LoRA TTT: scale each delta by alpha/rank (0: unscaled, as the seed records)."""
    lora_batch_docs: int = 64
    """LoRA TTT: documents adapted side by side (one adapter each)."""
    lora_beta1: float = 0.9
    """LoRA TTT: Adam beta1 (the frontier uses 0)."""
    lora_beta2: float = 0.95
    """LoRA TTT: Adam beta2."""
    lora_wd: float = 0.0
    """LoRA TTT: AdamW weight decay of the adapters."""
    lora_warm_a: bool = False
    """LoRA TTT: keep the A matrices across document batches (only B is reset; frontier warm start)."""

    lora_phase_docs: int = 0
    """LoRA TTT with phased global SGD (sota-stack §2.6): the base weights also train on the first N
    documents of the stream, once they are scored (0: off). Phases follow the stream: every
    document after a phase is scored with the base weights it trained."""
    lora_phases: int = 1
    """Phased global SGD: pauses at equal shares of the first lora_phase_docs documents; each trains
    one epoch on the documents scored since the previous pause."""
    lora_phase_lr: float = 0.001
    """Phased global SGD: learning rate, cosine over each phase's steps (SGD with eval.sgd_momentum,
    clip eval.sgd_clip, the first eval.sgd_freeze_blocks blocks frozen; a step takes
    eval.sgd_batch_seqs pieces of at most eval.seq_len tokens, none crossing a document)."""

    @property
    def lora_target_list(self) -> list[str]:
        return [x.strip() for x in self.lora_targets.split(",") if x.strip()]


class Lora(Method):
    name, Section, modules, adapts, scores = "lora", LoraSection, ("pgolf.eval.lora",), True, True
    off: ClassVar[dict[str, object]] = {"ttt": "none", "lora_phase_docs": 0}

    def used(self, cfg) -> bool:
        return cfg.ttt == "lora"

    def check(self, cfg) -> None:
        positive(cfg, "lora_rank", "lora_batch_docs", "lora_phases", "lora_phase_lr")
        non_negative(cfg, "lora_phase_docs", "lora_alpha", "lora_wd")
        items = cfg.lora_target_list
        bad = [x for x in items if x not in LORA_TARGETS] or (len(set(items)) < len(items) and ["(repeated)"])
        if bad:
            raise ConfigError(
                f"eval.lora_targets={cfg.lora_targets!r}: {bad[0]} is not one of {LORA_TARGETS}"
            )
        for name in ("lora_beta1", "lora_beta2"):
            if not 0 <= getattr(cfg, name) < 1:
                raise ConfigError(f"eval.{name}={getattr(cfg, name)} must be in [0, 1)")
        if cfg.lora_phase_docs and cfg.ttt != "lora":
            raise ConfigError("eval.lora_phase_docs: phased global SGD runs inside LoRA TTT (eval.ttt=lora)")
        if not self.used(cfg):
            return
        if cfg.method != "docs":
            raise ConfigError("eval.ttt=lora adapts per document: it needs eval.method=docs")
        if not items:
            raise ConfigError("eval.lora_targets is empty: name at least one of q, k, v, o, head")

    def label(self, cfg) -> str:
        phased = f"-phased{cfg.lora_phases}x{cfg.lora_phase_docs}" if cfg.lora_phase_docs else ""
        return "lora" + ("-warm" if cfg.lora_warm_a else "") + phased

    def needs_bos(self, cfg) -> bool:
        return True

    def run(self, model, valset, cfg, device, clock, ledger, head):
        return plugin(self.modules[0], self.modules).run(model, valset, cfg, device, clock, ledger, head)

    def cost(self, cfg, work: CostInputs) -> list[tuple[str, float, str]]:
        return plugin(self.modules[0], self.modules).cost(cfg, work)

    def probe(self, cfg, tokens, n_docs: int) -> dict:
        """Batches of at most 3 documents, phases on at most half of them, their rate raised."""
        return {
            "lora_batch_docs": min(cfg.lora_batch_docs, 3),
            "lora_phase_docs": min(cfg.lora_phase_docs, n_docs // 2),
            "lora_phase_lr": max(cfg.lora_phase_lr, 0.1),
        }
