"""The seeds' correction table (seed-techniques §13): a validation leak, NOT compliant, studied
alone behind ``eval.val_leak``. Implementation: ``eval.correction``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from pgolf.checks import non_negative
from pgolf.errors import ConfigError
from pgolf.methods.base import Method, plugin


@dataclass(frozen=True, kw_only=True)
class CorrectionSection:
    val_leak: bool = False
    """Allow methods that read validation targets (NOT compliant; never in a preset; ``pgolf
    check`` fails any record that sets it). Required by eval.correction_bytes."""
    correction_bytes: int = 0
    """The seeds' error-correction table (seed-techniques §13): score the validation set once, store
    the worst-scored targets in a table of at most this many bytes, counted in the artifact, and
    boost them by correction_boost when scoring. A validation leak: needs eval.val_leak."""
    correction_boost: float = 20.0
    """Correction table: logit boost of a stored target (after the softcap)."""


class Correction(Method):
    name, Section, modules, scores = "correction", CorrectionSection, ("pgolf.eval.correction",), True
    off: ClassVar[dict[str, object]] = {"correction_bytes": 0, "val_leak": False}

    def used(self, cfg) -> bool:
        return bool(cfg.correction_bytes)

    def check(self, cfg) -> None:
        non_negative(cfg, "correction_bytes", "correction_boost")
        if cfg.correction_bytes and cfg.val_leak is not True:
            raise ConfigError(
                "eval.correction_bytes: the correction table stores validation targets; it runs only "
                "with eval.val_leak=true (pgolf eval --val-leak), is never official and fails pgolf check"
            )

    def label(self, cfg) -> str:
        return "val_leak_correction"

    def run(self, model, valset, cfg, device, clock, ledger, head):
        if cfg.adapts:
            raise ConfigError("eval.correction_bytes is studied alone: without TTT, experts or tilt")
        return plugin(self.modules[0], self.modules).run(model, valset, cfg, device, clock, ledger, head)
