"""Predictors: what a scoring method asks of a model.

A predictor gives, for a batch of contexts, a normalised log-probability distribution over the whole
vocabulary for the next token at every position, and is then told which tokens were scored
(``observe``), so that adaptive methods (test-time training, eval-time experts) learn only from
tokens whose score is already final. Mixing and adapting need the distribution itself, which is
why scoring never asks the model for a loss.
"""

from __future__ import annotations

from typing import Protocol

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pgolf.dist import autocast_for


class Predictor(Protocol):
    def log_probs(self, inputs: Tensor) -> Tensor:
        """(B, T) context ids -> (B, T, V) float32 log-probabilities of the next token; each row
        must be normalised (logsumexp 0) and position t may depend only on inputs[:, : t + 1]."""
        ...

    def observe(self, inputs: Tensor, targets: Tensor, scored: Tensor) -> None:
        """Called after the targets of a batch were scored; ``scored`` (B, T) bool marks them."""
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

    def observe(self, inputs: Tensor, targets: Tensor, scored: Tensor) -> None:
        return None
