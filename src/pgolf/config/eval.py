"""The evaluation's schema: the fields every evaluation has, and each registered method's section
(``pgolf.methods``: the window plan, SGD and LoRA TTT, eval-time experts, the tilt, the correction
table), merged into one flat ``EvalConfig`` (``eval.lora_rank``)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import ClassVar

from pgolf.checks import non_negative, positive
from pgolf.errors import ConfigError
from pgolf.methods import REGISTRY, used
from pgolf.methods.correction import CorrectionSection
from pgolf.methods.experts import ExpertsSection
from pgolf.methods.lora import LoraSection
from pgolf.methods.sgd import SgdSection
from pgolf.methods.tilt import TiltSection
from pgolf.methods.windows import WindowsSection

TTT_KINDS = ("none", "sgd", "lora")


@dataclass(frozen=True, kw_only=True)
class CommonSection:
    batch_tokens: int = 524_288
    """Validation tokens per forward batch, summed over ranks."""
    val_docs: int = 0
    """If > 0, score only the first N validation documents, for quick local iteration: the score is
    labelled unofficial everywhere and ``pgolf check`` refuses it (0: the whole set, the only
    official score). The artifact's own eval settings always keep 0."""
    ttt: str = "none"
    """Score-first test-time training: none, sgd (chunked full-weight SGD, persisting over the
    stream) or lora (per-document batched LoRA adapters, reset per batch; needs eval.method=docs)."""
    ttt_lr: float = 0.0
    """TTT learning rate (0: the method's default, sgd 0.002 (cosine over chunks), lora 0.01)."""


@dataclass(frozen=True, kw_only=True)
class EvalConfig(
    CorrectionSection, TiltSection, ExpertsSection, LoraSection, SgdSection, WindowsSection, CommonSection
):
    """Sections in reverse: a dataclass lists its bases' fields from the last base on."""

    SECTION: ClassVar[str] = "eval"

    def __post_init__(self) -> None:
        positive(self, "batch_tokens")
        non_negative(self, "val_docs", "ttt_lr")
        if self.ttt not in TTT_KINDS:
            raise ConfigError(f"eval.ttt={self.ttt!r}; expected one of {', '.join(TTT_KINDS)}")
        for method in REGISTRY:
            method.check(self)

    @property
    def adapts(self) -> bool:
        """Whether anything learns during the evaluation (TTT, experts, tilt)."""
        return any(m.adapts for m in used(self))

    @property
    def tag(self) -> str:
        """The method in a score's label: empty for plain without anything else, e.g. ``sliding64``,
        ``docs48_lora``, ``sliding256_sgd_ngram+match-linear_tilt``."""
        parts = [label for m in used(self) if (label := m.label(self))]
        if parts and self.method == "plain":
            parts.insert(0, "plain")
        return "_".join(parts)

    @property
    def windows_only(self) -> EvalConfig:
        """The same window plan with nothing adapting: what the pre-quant score of a run measures,
        so the quantisation gap compares like with like."""
        return dataclasses.replace(self, **{k: v for m in REGISTRY for k, v in m.off.items()})

    @property
    def plugin_modules(self) -> tuple[str, ...]:
        """The optional eval modules this config runs: counted code includes them only when used
        (``pack.size.counted_modules``), so a submission's bytes are the code it runs."""
        return tuple(dict.fromkeys(module for m in used(self) for module in m.modules))

    def settings(self) -> dict:
        """Every field that changes a score but batch_tokens and val_docs (which changes the data,
        not the method, and makes any score unofficial): two evaluations with equal settings on the
        same artifact and data are the same method."""
        return {k: v for k, v in dataclasses.asdict(self).items() if k not in ("batch_tokens", "val_docs")}
