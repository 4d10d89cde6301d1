"""Tokenizer-agnostic bits per byte (seed-techniques §3): the sums and the figures.

    val_loss = sum(nll_t) / sum(1)          (nats per token)
    val_bpb  = sum(nll_t) / (ln 2 * sum(bytes_t))
Sums are float64, kept on the device (no per-batch sync) and all-reduced over ranks by the caller.
Byte counts come from ``data.bytes``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


class BpbAccumulator:
    """Float64 sums of NLL, scored tokens and bytes, kept on the device (no per-batch sync)."""

    def __init__(self, device: torch.device | str = "cpu") -> None:
        self.sums = torch.zeros(3, dtype=torch.float64, device=device)

    def add(self, nll: torch.Tensor, nbytes: torch.Tensor) -> None:
        """Add per-token NLL (nats) and per-token byte counts of the same scored positions."""
        self.sums[0] += nll.detach().to(torch.float64).sum()
        self.sums[1] += nll.numel()
        self.sums[2] += nbytes.to(torch.float64).sum()

    def add_masked(self, nll: torch.Tensor, nbytes: torch.Tensor, mask: torch.Tensor, count: int) -> None:
        """``add`` of the positions ``mask`` marks (``count`` of them, known on the host): no boolean
        indexing, which would wait for the device to count them."""
        self.sums[0] += torch.where(mask, nll.detach().to(torch.float64), 0.0).sum()
        self.sums[1] += count
        self.sums[2] += torch.where(mask, nbytes.to(torch.float64), 0.0).sum()

    def result(self) -> BpbResult:
        loss, tokens, nbytes = (float(x) for x in self.sums.cpu())
        return BpbResult(loss_sum=loss, tokens=int(tokens), bytes=int(nbytes))


@dataclass(frozen=True)
class BpbResult:
    loss_sum: float
    tokens: int
    bytes: int

    @property
    def val_loss(self) -> float:
        return self.loss_sum / self.tokens

    @property
    def val_bpb(self) -> float:
        return self.loss_sum / (math.log(2) * self.bytes)
