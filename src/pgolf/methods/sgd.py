"""SGD test-time training (seed-techniques §11.2): chunked full-weight SGD, score first, persisting
over the stream. Implementation and cost: ``eval.sgd_ttt``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from pgolf.checks import non_negative, positive
from pgolf.methods.base import CostInputs, Method, plugin


@dataclass(frozen=True, kw_only=True)
class SgdSection:
    sgd_chunk_tokens: int = 32_768
    """SGD TTT: targets per chunk; each chunk is scored, then trained on (the last one never)."""
    sgd_epochs: int = 3
    """SGD TTT: passes over each scored chunk."""
    sgd_momentum: float = 0.9
    """SGD TTT: momentum of the SGD optimiser."""
    sgd_batch_seqs: int = 32
    """SGD TTT: sequences (of eval.seq_len) per step, over all ranks."""
    sgd_freeze_blocks: int = 0
    """SGD TTT: the first N blocks (and the embeddings with them, when N > 0) stay frozen."""
    sgd_clip: float = 1.0
    """SGD TTT: gradient-norm clip (0: none)."""


class Sgd(Method):
    name, Section, modules, adapts = "sgd", SgdSection, ("pgolf.eval.sgd_ttt",), True
    off: ClassVar[dict[str, object]] = {"ttt": "none"}

    def used(self, cfg) -> bool:
        return cfg.ttt == "sgd"

    def check(self, cfg) -> None:
        positive(cfg, "sgd_chunk_tokens", "sgd_epochs", "sgd_batch_seqs")
        non_negative(cfg, "sgd_momentum", "sgd_freeze_blocks", "sgd_clip")

    def label(self, cfg) -> str:
        return "sgd"

    def predictor(self, model, device, cfg, windows: list):
        return plugin(self.modules[0], self.modules).predictor(model, device, cfg, windows)

    def cost(self, cfg, work: CostInputs) -> list[tuple[str, float, str]]:
        return plugin(self.modules[0], self.modules).cost(cfg, work)

    def probe(self, cfg, tokens, n_docs: int) -> dict:
        """Chunks of a quarter of the stream; the learning rate raised (a leak moves scores in
        proportion)."""
        return {"sgd_chunk_tokens": max(1, tokens.numel() // 4), "ttt_lr": max(cfg.ttt_lr, 0.02)}
