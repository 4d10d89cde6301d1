"""Input-side token mixers and tables: BigramHash, SmearGate (seed-techniques §7.3, §7.4), the
input-dependent SmearGate of the final records (sota-stack §2.2) and value embeddings (§7.10).

Neither lets information cross a document boundary: at a BOS position the SmearGate keeps the
current token only and the BigramHash uses its reserved "no previous token" bucket, so the BOS that
starts document n+1 carries nothing of document n (the BOS fix of records 2026-04-27, PR #1851).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pgolf.model.layers import Linear
from pgolf.model.params import declare
from pgolf.vocab import BOS_ID


class BigramHash(nn.Module):
    """s * P E[h_t], with h_t = (36313 x_t XOR 27191 x_{t-1}) mod (B-1) and h_t = B-1 at position 0 and
    at BOS (PR162's hash; its README's "(prev*31 + curr)" differs from its code, which this follows).

    Init (no dead branch): with ortho init, table E zero and P orthogonal x 1/sqrt(2L) (what PR162's
    global init pass does to its zero-flagged projection); otherwise E ~ N(0, 0.01^2) and P zero
    (kellyvv). Either way one of the two gets gradient at step 0.
    """

    def __init__(self, buckets: int, dim: int, model_dim: int, *, ortho: bool, num_layers: int) -> None:
        super().__init__()
        self.buckets = buckets
        self.embed = nn.Embedding(buckets, dim)
        declare(self.embed, weight="embed")
        self.proj = Linear(dim, model_dim)
        self.scale = nn.Parameter(torch.tensor(0.05))
        declare(self, scale="control")
        self.ortho, self.num_layers = ortho, num_layers
        self.reset_parameters()

    def reset_parameters(self) -> None:
        if self.ortho:
            nn.init.zeros_(self.embed.weight)
            nn.init.orthogonal_(self.proj.weight)
            with torch.no_grad():
                self.proj.weight.mul_(1 / math.sqrt(2 * self.num_layers))
        else:
            nn.init.normal_(self.embed.weight, std=0.01)
            nn.init.zeros_(self.proj.weight)

    def bucket_ids(self, ids: Tensor) -> Tensor:
        """(B, T) token ids -> (B, T) bucket ids."""
        prev = F.pad(ids[:, :-1], (1, 0))
        h = torch.bitwise_xor(36313 * ids, 27191 * prev) % (self.buckets - 1)
        h[:, 0] = self.buckets - 1
        return h.masked_fill(ids == BOS_ID, self.buckets - 1)

    def forward(self, ids: Tensor) -> Tensor:
        return self.scale * self.proj(self.embed(self.bucket_ids(ids)))


class SmearGate(nn.Module):
    """y_t = (1 - sigma(g)) x_t + sigma(g) x_{t-1}, per dimension; x_{-1} = 0; y_t = x_t at BOS.

    This is variant A of seed-techniques §7.3 (PR162, XSA4, PROPE, GPTQL, swapp): applied after the
    embedding RMSNorm, gate logit g learned per dimension. It is chosen because the record lineage
    used it; the initial previous-token weight sigma(g0) is the one knob that separates it from the
    other variants (g0 = 0 gives 0.5 as PR162; g0 = -3 gives 0.047 as kellyvv and SGOI).
    """

    def __init__(self, dim: int, init: float) -> None:
        super().__init__()
        self.gate = nn.Parameter(torch.full((dim,), init))
        declare(self, gate="control")

    def forward(self, x: Tensor, ids: Tensor) -> Tensor:
        g = torch.sigmoid(self.gate).to(x.dtype)
        prev = F.pad(x[:, :-1], (0, 0, 1, 0))  # (B, T, D), zeros at t = 0
        keep = (ids != BOS_ID).unsqueeze(-1).to(x.dtype)
        return x + keep * g * (prev - x)


class WindowSmearGate(nn.Module):
    """x_t + lambda sigmoid(W x_t[:w]) x_(t-1) on the raw embedding, zero at BOS and at t = 0 (PR #1667
    with the BOS fix of PR #1851); lambda (scalar) and W (1 x w) zero-initialised: the identity at init."""

    def __init__(self, dim: int, window: int) -> None:
        super().__init__()
        self.window = min(window, dim)
        self.weight = nn.Parameter(torch.zeros(1, self.window))
        self.lam = nn.Parameter(torch.zeros(()))
        declare(self, weight="control", lam="control")

    def forward(self, x: Tensor, ids: Tensor) -> Tensor:
        g = torch.sigmoid(F.linear(x[..., : self.window], self.weight.to(x.dtype)))  # (B, T, 1)
        prev = F.pad(x[:, :-1], (0, 0, 1, 0))
        keep = (ids != BOS_ID).unsqueeze(-1).to(x.dtype)
        return x + self.lam.to(x.dtype) * keep * g * prev


class ValueEmbedding(nn.Module):
    """scale * P E[x_t]: a shared table E (V x dim, N(0, 0.01^2)) projected to the KV width by P, with a
    learned scale initialised to 0.1 (VE128, seed-techniques §7.10); each target layer adds it to v
    times its own scalar."""

    def __init__(self, vocab: int, dim: int, kv_dim: int) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, dim)
        declare(self.embed, weight="embed")
        self.proj = Linear(dim, kv_dim)
        self.scale = nn.Parameter(torch.tensor(0.1))
        declare(self, scale="control")
        nn.init.normal_(self.embed.weight, std=0.01)

    def forward(self, ids: Tensor) -> Tensor:
        return self.scale * self.proj(self.embed(ids))
