"""One entry point for every evaluation method: the window plan, then what adapts on top of it.

``run_method`` scores a model on a validation set with an ``EvalConfig``, asking the registered
methods (``pgolf.methods``) for their hooks: plain, sliding or document windows; chunked SGD TTT or
per-document LoRA TTT on top; eval-time experts mixed in and the n-gram tilt as the head. Every
method goes through a ledger that raises the moment a token would be scored twice, scored after an
update saw it, or learned before it was scored, and reports how many updates it checked. The model
may be changed (TTT trains it): pass a copy you can lose.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from pgolf import dist
from pgolf.config.eval import EvalConfig
from pgolf.data.valset import ValidationSet
from pgolf.errors import DataError
from pgolf.eval.bpb import BpbResult
from pgolf.eval.ledger import Ledger
from pgolf.eval.predict import Head, ModelHead, ModelPredictor
from pgolf.eval.score import EvalClock, score
from pgolf.methods import used
from pgolf.methods.windows import plan_windows
from pgolf.vocab import BOS_ID


@dataclass(frozen=True)
class MethodResult:
    result: BpbResult
    ledger: dict
    """The score-before-update check: verified, updates checked, tokens learned from."""
    leak_bytes: int = 0
    """Bytes of validation data the method carries (the correction table): they count in the artifact."""
    details: dict = dataclasses.field(default_factory=dict)


def build_head(cfg: EvalConfig, valset: ValidationSet, vocab_size: int, clock: EvalClock) -> Head:
    """The model's own distribution, or the head of the first method that brings one (the mixture
    with eval-time experts and the tilt)."""
    for method in used(cfg):
        if (head := method.head(cfg, valset, vocab_size, clock)) is not None:
            return head
    return ModelHead()


def run_method(
    model: nn.Module,
    valset: ValidationSet,
    cfg: EvalConfig,
    device: torch.device,
    clock: EvalClock,
    *,
    wrap_head: Callable[[Head], Head] | None = None,
) -> MethodResult:
    """Score ``model`` on ``valset`` with the method of ``cfg`` (whose seq_len must be resolved):
    a method that scores the stream itself (LoRA TTT, the correction table) runs it; otherwise the
    window plan is scored by the model, or by the predictor a method brings (SGD TTT). ``wrap_head``
    lets a probe see every scored target (``records.probes``)."""
    valset = valset.first_docs(cfg.val_docs)
    methods = used(cfg)
    if any(m.needs_bos(cfg) for m in methods) and int(valset.tokens[0]) != BOS_ID:
        raise DataError(
            f"eval.method={cfg.method}, eval.ttt={cfg.ttt} find documents by their BOS, but the validation "
            "stream does not start with one (an export built without BOS; rebuild it with pgolf data build)"
        )
    if cfg.ntk_seq_len:
        model.cfg = dataclasses.replace(model.cfg, rope_ntk_seq_len=cfg.ntk_seq_len)
    model.rope_len = cfg.seq_len  # one RoPE base for every window, however short
    tokens = valset.tokens
    with clock.phase("warmup"):
        warm_up(model, cfg.seq_len, device)
    ledger = Ledger(tokens.numel())
    head = build_head(cfg, valset, model.cfg.vocab_size, clock)
    if wrap_head is not None:
        head = wrap_head(head)
    for method in methods:
        if (result := method.run(model, valset, cfg, device, clock, ledger, head)) is not None:
            return result
    with clock.phase("score"):
        windows = plan_windows(tokens, cfg.method, cfg.seq_len, cfg.stride)
        brought = [p for m in methods if (p := m.predictor(model, device, cfg, windows)) is not None]
    predictor, chunk_tokens = brought[0] if brought else (ModelPredictor(model.eval(), device), 0)
    r = score(
        predictor,
        tokens,
        valset.target_bytes,
        windows,
        batch_tokens=cfg.batch_tokens,
        device=device,
        head=head,
        chunk_tokens=chunk_tokens,
        ledger=ledger,
        clock=clock,
    )
    return MethodResult(r, ledger.summary(), details=details(head))


@torch.no_grad()
def warm_up(model: nn.Module, seq_len: int, device: torch.device) -> None:
    """One forward of a full-length window of synthetic tokens (never validation data), so that
    first-call costs (allocator, kernel selection, a compile) get a phase of their own instead of
    slowing the first scored batch and the projection made from it."""
    model.eval()
    x = torch.arange(seq_len, device=device)[None, :] % model.cfg.vocab_size
    with dist.autocast_for(device):
        model(x)


def details(head: Head) -> dict:
    return head.summary() if hasattr(head, "summary") else {}
