"""What an evaluation method declares: its settings, its label, its code and its costs.

A method is one ``Method`` object in its own module of ``pgolf.methods`` and one line of the
registry (``pgolf.methods.REGISTRY``). Its config section is a dataclass whose fields are merged
into ``EvalConfig`` (flat names: ``eval.lora_rank``). Everything else that used to be spread over
the package asks the registry: the score's label (``EvalConfig.tag``), the modules it adds to the
counted code (``EvalConfig.plugin_modules``), how ``run_method`` runs it (the hooks below, which
import the implementation by name so that a config counts only the code it runs), its projected
time (``cost``, for ``pgolf plan``) and how the legality probe scales it to a synthetic stream
(``probe``).

Declarations import no implementation: ``pgolf.config`` builds on them, and a plain config's
bundled file carries them without the adaptive code.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any, ClassVar

from pgolf.errors import ConfigError


class Method:
    """One evaluation method or plug-in; subclasses override what applies to them."""

    name: ClassVar[str]
    Section: ClassVar[type | None] = None
    """Its config fields (a frozen, keyword-only dataclass merged into ``EvalConfig``)."""
    modules: ClassVar[tuple[str, ...]] = ()
    """Implementation modules it adds to the counted code when used (imported by name)."""
    adapts: ClassVar[bool] = False
    """Something learns while it scores (the windows-only diagnostic turns it off)."""
    scores: ClassVar[bool] = False
    """It scores the stream itself (``run``): the window scorer's pass and cost are replaced."""
    off: ClassVar[dict[str, Any]] = {}
    """Field values that turn it off (``EvalConfig.windows_only``)."""

    def used(self, cfg) -> bool:
        return False

    def check(self, cfg) -> None:
        """Refuse settings that cannot run together (``ConfigError`` naming the fields)."""

    def label(self, cfg) -> str:
        """Its part of the score's label ('' when it adds nothing)."""
        return ""

    def needs_bos(self, cfg) -> bool:
        """It finds documents by their BOS (the stream must start with one)."""
        return False

    def head(self, cfg, valset, vocab_size: int, clock):
        """The head it scores through (a mixture with experts), or None."""
        return None

    def predictor(self, model, device, cfg, windows: list):
        """(predictor, chunk tokens) when it replaces the model's fixed predictor, else None."""
        return None

    def run(self, model, valset, cfg, device, clock, ledger, head):
        """A ``MethodResult`` when it runs the whole evaluation itself, else None."""
        return None

    def cost(self, cfg, work: CostInputs) -> list[tuple[str, float, str]]:
        """Projected (phase, seconds, how it was counted) for ``pgolf plan``."""
        return []

    def probe(self, cfg, tokens, n_docs: int) -> dict[str, Any]:
        """Field values that scale it to the probe's synthetic stream so every mechanism acts on it
        and a leak shows (same code paths; only sizes and rates change)."""
        return {}


@dataclass(frozen=True)
class CostInputs:
    """What ``pgolf plan`` knows when it projects a method's time."""

    flops: Any
    """``plan.flops.Flops`` at the eval window length (matmul, attention_coeff, train per token)."""
    rates: Any
    """``plan.evaltime.Rates``: score and train FLOP/s, fixed ms per step, ranks."""
    n_tokens: int
    tokens: Any
    """The validation tokens, or None (then documents are estimated)."""
    windows: list
    """The window plan (``methods.windows``)."""
    seq_len: int
    mean_document: float
    """Tokens per validation document when the tokens are not at hand."""


def plugin(module: str, declared: tuple[str, ...]):
    """An optional method's implementation module, imported by name (counted only in configs that
    use it)."""
    if module not in declared:
        raise ValueError(f"{module} is not a declared evaluation plug-in")
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise ConfigError(
            f"this evaluation needs {module}, which this bundled file does not carry: bundle the "
            f"config that uses it (pgolf bundle ... --eval.<setting>) ({e})"
        ) from None
