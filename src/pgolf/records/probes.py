"""Legality probes on a predictor (any ``eval.predict.Predictor``): what ``pgolf check`` re-runs on
an artifact. Each returns the largest violation it saw, so a report can print how far from the
tolerance it was.

- **normalisation**: every position's distribution sums to 1 (logsumexp of the log-probabilities
  within ``tol`` of 0);
- **causality**: changing the token at t+1 (and everything after it) never changes the distribution
  at positions <= t.

Score-before-update needs an adaptive method's own instrumentation; a fixed network (the only
method an artifact is scored with today) updates nothing.
"""

from __future__ import annotations

import torch

from pgolf.eval.predict import Predictor


def sample_inputs(vocab_size: int, length: int, batch: int = 2, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, vocab_size, (batch, length), generator=g)


def normalisation_error(predictor: Predictor, inputs: torch.Tensor) -> float:
    """max |log sum_v p(v)| over every position of ``inputs``."""
    lp = predictor.log_probs(inputs).double()
    return float(torch.logsumexp(lp, dim=-1).abs().max())


def causality_error(predictor: Predictor, inputs: torch.Tensor, cuts: list[int], vocab_size: int) -> float:
    """max |change| of the log-probabilities at positions <= t when every token after t is replaced,
    over each cut t."""
    base = predictor.log_probs(inputs)
    worst = 0.0
    for t in cuts:
        changed = inputs.clone()
        changed[:, t + 1 :] = (changed[:, t + 1 :] + 1 + t) % vocab_size
        other = predictor.log_probs(changed)
        worst = max(worst, float((other[:, : t + 1] - base[:, : t + 1]).abs().max()))
    return worst
