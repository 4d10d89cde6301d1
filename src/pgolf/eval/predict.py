"""Predictors and heads: what a scoring method asks of a model, and what it makes of the answer.

A predictor gives, for a batch of contexts, a normalised log-probability distribution over the whole
vocabulary for the next token at every position; an adaptive one (chunked SGD TTT) is told after
each chunk which tokens every rank has scored (``end_chunk``) and may learn from those only. A head
turns the predictor's distribution into the NLL of each target (the model's own, a mixture with
eval-time experts, a tilt) and may then learn from the scored targets (``observe``). Mixing and
adapting need the distribution itself, which is why scoring never asks the model for a loss.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pgolf.dist import autocast_for
from pgolf.eval.ledger import Ledger
from pgolf.methods.windows import Window


@dataclass(frozen=True)
class Batch:
    """Equal-length windows: inputs x and targets y (B, T); the target at [i, j] is stream position
    starts[i] + j + 1; ``scored`` (B, T) marks the scored targets (None: all of them)."""

    x: Tensor
    y: Tensor
    starts: Tensor
    scored: Tensor | None
    windows: list[Window]

    def positions(self) -> Tensor:
        """(B, T) stream positions of the targets."""
        return self.starts[:, None] + torch.arange(1, self.x.size(1) + 1, device=self.x.device)[None, :]

    def scored_positions(self) -> np.ndarray:
        """Stream positions of the scored targets, in batch order (from the plan, without a device sync)."""
        return np.concatenate(
            [np.arange(w.start + w.score_from + 1, w.start + w.length + 1) for w in self.windows]
        )

    def target_bytes(self, stream_bytes: Tensor) -> Tensor:
        """(B, T) bytes of each target, read from the stream's per-position bytes (``ValidationSet.
        target_bytes``; a padding position past the stream's end reads its last entry)."""
        return stream_bytes[self.positions().clamp_(max=stream_bytes.numel() - 1)]


def padded_batch(tokens: Tensor, windows: list[Window], device: torch.device) -> Batch:
    """Windows of unequal length, right-padded with token 0 to the longest: causal attention keeps the
    padding out of the real positions, and ``scored`` marks only real scored targets."""
    t = max(w.length for w in windows)
    rows = torch.zeros(len(windows), t + 1, dtype=tokens.dtype)
    scored = torch.zeros(len(windows), t, dtype=torch.bool)
    for i, w in enumerate(windows):
        rows[i, : w.length + 1] = tokens[w.start : w.start + w.length + 1]
        scored[i, w.score_from : w.length] = True
    rows, scored = rows.to(device), scored.to(device)
    starts = torch.tensor([w.start for w in windows], device=device)
    return Batch(rows[:, :-1], rows[:, 1:], starts, scored, windows)


class Predictor(Protocol):
    def log_probs(self, inputs: Tensor) -> Tensor:
        """(B, T) context ids -> (B, T, V) float32 log-probabilities of the next token; each row
        must be normalised (logsumexp 0) and position t may depend only on inputs[:, : t + 1]."""
        ...

    def end_chunk(self, tokens: Tensor, lo: int, hi: int, ledger: Ledger) -> None:
        """Called on every rank once the targets (lo, hi] of the stream are scored (never after the
        last chunk); an update must first ``ledger.learn`` every position it reads."""
        ...


class Head(Protocol):
    def nll(self, log_probs: Tensor, batch: Batch) -> Tensor:
        """(B, T) NLL of each target under the head's normalised distribution."""
        ...

    def observe(self, batch: Batch, ledger: Ledger) -> None:
        """Called once the batch's scored targets are final."""
        ...


class ModelPredictor:
    """A fixed network: softcapped logits in fp32, log-softmax over the vocabulary. Learns nothing."""

    def __init__(self, model: nn.Module, device: torch.device) -> None:
        self.model, self.device = model, device

    @torch.no_grad()
    def log_probs(self, inputs: Tensor) -> Tensor:
        with autocast_for(self.device):
            z = self.model(inputs)
        return F.log_softmax(z.float(), dim=-1)

    def end_chunk(self, tokens: Tensor, lo: int, hi: int, ledger: Ledger) -> None:
        return None


class ModelHead:
    """The predictor's own distribution; learns nothing."""

    takes_padding = True
    """Windows of different lengths may share a padded batch (``score``): the head reads each target
    where it is and remembers nothing, so neither padding nor batch order can reach a score."""

    def nll(self, log_probs: Tensor, batch: Batch) -> Tensor:
        return -log_probs.gather(-1, batch.y.unsqueeze(-1)).squeeze(-1)

    def observe(self, batch: Batch, ledger: Ledger) -> None:
        return None
