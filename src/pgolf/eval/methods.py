"""One entry point for every evaluation method: the window plan, then what adapts on top of it.

``run_method`` scores a model on a validation set with an ``EvalConfig``: plain, sliding or
document windows; chunked SGD TTT or per-document LoRA TTT on top; eval-time experts mixed in and
the n-gram tilt as the head. Every method goes through a ledger that raises the moment a token would
be scored twice, scored after an update saw it, or learned before it was scored, and reports how
many updates it checked. The model may be changed (TTT trains it): pass a copy you can lose.
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from pgolf import dist
from pgolf.config.eval import PLUGINS, EvalConfig
from pgolf.data.valset import ValidationSet
from pgolf.errors import ConfigError, DataError
from pgolf.eval.bpb import BpbResult
from pgolf.eval.ledger import Ledger
from pgolf.eval.predict import Head, ModelHead, ModelPredictor
from pgolf.eval.score import EvalClock, chunk_plan, score
from pgolf.eval.windows import plan_windows
from pgolf.vocab import BOS_ID


@dataclass(frozen=True)
class MethodResult:
    result: BpbResult
    ledger: dict
    """The score-before-update check: verified, updates checked, tokens learned from."""
    leak_bytes: int = 0
    """Bytes of validation data the method carries (the correction table): they count in the artifact."""
    details: dict = dataclasses.field(default_factory=dict)


def plugin(module: str):
    """An optional method's module, imported by name (counted only in configs that use it)."""
    if module not in PLUGINS:
        raise ValueError(f"{module} is not a declared evaluation plug-in")
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise ConfigError(
            f"this evaluation needs {module}, which this bundled file does not carry: bundle the "
            f"config that uses it (pgolf bundle ... --eval.<setting>) ({e})"
        ) from None


def build_head(cfg: EvalConfig, valset: ValidationSet, vocab_size: int, clock: EvalClock) -> Head:
    """The model's own distribution, or its mixture with eval-time experts and the tilt (mixed in
    a stream-order pass after LoRA TTT, which scores documents out of stream order)."""
    if not (cfg.expert_list or cfg.tilt):
        return ModelHead()
    with clock.phase("experts"):
        mixture = plugin("pgolf.eval.mixture")
        return mixture.MixtureHead(cfg, valset.tokens, vocab_size, deferred=cfg.ttt == "lora")


def run_method(
    model: nn.Module,
    valset: ValidationSet,
    cfg: EvalConfig,
    device: torch.device,
    clock: EvalClock,
    *,
    wrap_head: Callable[[Head], Head] | None = None,
) -> MethodResult:
    """Score ``model`` on ``valset`` with the method of ``cfg`` (whose seq_len must be resolved).
    ``wrap_head`` lets a probe see every scored target (``records.probes``)."""
    valset = valset.first_docs(cfg.val_docs)
    if (cfg.method == "docs" or cfg.ttt == "lora") and int(valset.tokens[0]) != BOS_ID:
        raise DataError(
            f"eval.method={cfg.method}, eval.ttt={cfg.ttt} find documents by their BOS, but the validation "
            "stream does not start with one (an export built without BOS; rebuild it with pgolf data build)"
        )
    if cfg.ntk_seq_len:
        model.cfg = dataclasses.replace(model.cfg, rope_ntk_seq_len=cfg.ntk_seq_len)
    model.rope_len = cfg.seq_len  # one RoPE base for every window, however short
    tokens, vocab = valset.tokens, model.cfg.vocab_size
    with clock.phase("warmup"):
        warm_up(model, cfg.seq_len, device)
    ledger = Ledger(tokens.numel())
    head = build_head(cfg, valset, vocab, clock)
    if wrap_head is not None:
        head = wrap_head(head)
    if cfg.correction_bytes:
        if cfg.adapts:
            raise ConfigError("eval.correction_bytes is studied alone: without TTT, experts or tilt")
        r, table = plugin("pgolf.eval.leak").score_with_table(model, valset, cfg, device, ledger, clock)
        return MethodResult(r, ledger.summary(), table.nbytes, {"correction_table": table.describe()})
    if cfg.ttt == "lora":
        r = plugin("pgolf.eval.lora").lora_ttt(
            model, tokens, valset.target_bytes, cfg, cfg.seq_len, device,
            head=head, ledger=ledger, clock=clock,
        )  # fmt: skip
        return MethodResult(r, ledger.summary(), details=_details(head))
    with clock.phase("score"):
        windows = plan_windows(tokens, cfg.method, cfg.seq_len, cfg.stride)
        n_chunks = len(chunk_plan(windows, cfg.sgd_chunk_tokens)) if cfg.ttt == "sgd" else 1
    if cfg.ttt == "sgd":
        predictor = plugin("pgolf.eval.ttt").SgdTTT(model, device, cfg, n_chunks, cfg.seq_len)
        chunk_tokens = cfg.sgd_chunk_tokens
    else:
        predictor, chunk_tokens = ModelPredictor(model.eval(), device), 0
    r = score(
        predictor, tokens, valset.target_bytes, windows, batch_tokens=cfg.batch_tokens, device=device,
        head=head, chunk_tokens=chunk_tokens, ledger=ledger, clock=clock,
    )  # fmt: skip
    return MethodResult(r, ledger.summary(), details=_details(head))


@torch.no_grad()
def warm_up(model: nn.Module, seq_len: int, device: torch.device) -> None:
    """One forward of a full-length window of synthetic tokens (never validation data), so that
    first-call costs (allocator, kernel selection, a compile) get a phase of their own instead of
    slowing the first scored batch and the projection made from it."""
    model.eval()
    x = torch.arange(seq_len, device=device)[None, :] % model.cfg.vocab_size
    with dist.autocast_for(device):
        model(x)


def _details(head: Head) -> dict:
    return head.summary() if hasattr(head, "summary") else {}
