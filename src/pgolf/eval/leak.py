"""The seeds' correction table as an evaluation method (NOT compliant; seed-techniques §13).

Only ``pgolf eval --val-leak --eval.correction_bytes N`` runs it: the validation set is scored
once with the model, the worst-scored targets (position, true token) go into a table of at most N
bytes (``eval.correction``), and the set is scored again with those targets' logits boosted. The
score is labelled a leak, never official, off track, and the table's bytes count in the artifact.
"""

from __future__ import annotations

import torch

from pgolf.config.eval import EvalConfig
from pgolf.data.valset import ValidationSet
from pgolf.eval.bpb import BpbResult
from pgolf.eval.correction import CorrectionTable, apply, build_table
from pgolf.eval.ledger import Ledger
from pgolf.eval.predict import ModelHead, ModelPredictor
from pgolf.eval.score import EvalClock, score
from pgolf.eval.windows import plan_windows


class CorrectionHead:
    """The seeds' correction table applied to the model's distribution (NOT compliant)."""

    def __init__(self, table, boost: float, val_leak: bool) -> None:
        self.table, self.boost, self.val_leak = table, boost, val_leak

    def nll(self, log_probs, batch):
        boosted = apply(log_probs, batch.positions(), self.table, self.boost, val_leak=self.val_leak)
        return -torch.log_softmax(boosted, -1).gather(-1, batch.y.unsqueeze(-1)).squeeze(-1)

    def observe(self, batch, ledger) -> None:
        return None


class _Capture(ModelHead):
    """The model's NLL, remembered per scored target (the correction table's first pass)."""

    def __init__(self) -> None:
        self.parts: list[tuple] = []

    def nll(self, log_probs, batch):
        nll = super().nll(log_probs, batch)
        mask = batch.scored if batch.scored is not None else torch.ones_like(nll, dtype=torch.bool)
        self.parts.append((nll[mask].cpu(), batch.positions()[mask].cpu(), batch.y[mask].cpu()))
        return nll


def correction_table(model, valset: ValidationSet, cfg: EvalConfig, device: torch.device):
    """Score the validation set once and keep its worst targets within cfg.correction_bytes."""
    capture = _Capture()
    windows = plan_windows(valset.tokens, cfg.method, cfg.seq_len, cfg.stride)
    score(ModelPredictor(model.eval(), device), valset.tokens, valset.target_bytes, windows,
          batch_tokens=cfg.batch_tokens, device=device, head=capture)  # fmt: skip
    nll, pos, tgt = (torch.cat(x) for x in zip(*capture.parts, strict=True))
    order = torch.argsort(pos)
    return build_table(
        nll[order], pos[order], tgt[order], val_leak=cfg.val_leak, budget_bytes=cfg.correction_bytes
    )


def score_with_table(
    model, valset: ValidationSet, cfg: EvalConfig, device: torch.device, ledger: Ledger, clock: EvalClock
) -> tuple[BpbResult, CorrectionTable]:
    with clock.phase("leak_table"):
        table = correction_table(model, valset, cfg, device)
    windows = plan_windows(valset.tokens, cfg.method, cfg.seq_len, cfg.stride)
    r = score(
        ModelPredictor(model.eval(), device), valset.tokens, valset.target_bytes, windows,
        batch_tokens=cfg.batch_tokens, device=device,
        head=CorrectionHead(table, cfg.correction_boost, cfg.val_leak), ledger=ledger, clock=clock,
    )  # fmt: skip
    return r, table
