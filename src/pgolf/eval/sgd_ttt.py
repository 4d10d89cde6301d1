"""Chunked full-weight score-first SGD test-time training (seed-techniques §11.4; sota-stack §2.6).

The validation targets are cut into chunks of ``sgd_chunk_tokens`` (each window of the plan goes
to the chunk of its first scored target). Chunk c is scored first, with the model in eval mode and
no gradients; then, except after the last chunk, every rank trains all (unfrozen) weights on the
chunk's tokens: ``sgd_epochs`` passes over its sequences of the window length, SGD with momentum,
lr_c = lr * (1 + cos(pi c / (C - 1))) / 2, gradients averaged over ranks and clipped. The model is
not reset: what it learns persists over the rest of the stream. Before each update the ledger is
told every token it reads, and refuses unless all were scored.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor, nn

from pgolf import dist
from pgolf.config.eval import EvalConfig
from pgolf.eval.ledger import Ledger
from pgolf.eval.predict import ModelPredictor
from pgolf.eval.score import chunk_plan
from pgolf.eval.sgd import sgd_step, trainable
from pgolf.methods.base import CostInputs

DEFAULT_LR = 0.002


class SgdTTT(ModelPredictor):
    """Scores with the current weights; after each chunk but the last, trains on it."""

    def __init__(self, model: nn.Module, device: torch.device, cfg: EvalConfig, n_chunks: int, seq_len: int):
        super().__init__(model.eval(), device)
        self.cfg, self.n_chunks, self.seq_len = cfg, n_chunks, seq_len
        self.params = trainable(model, cfg.sgd_freeze_blocks)
        for p in model.parameters():
            p.requires_grad_(False)
        for p in self.params:
            p.requires_grad_(True)
        self.opt = torch.optim.SGD(self.params, lr=cfg.ttt_lr or DEFAULT_LR, momentum=cfg.sgd_momentum)
        self.chunk = 0
        self.steps = 0

    def lr(self, chunk: int) -> float:
        base = self.cfg.ttt_lr or DEFAULT_LR
        return base * 0.5 * (1 + math.cos(math.pi * chunk / max(1, self.n_chunks - 1)))

    def end_chunk(self, tokens: Tensor, lo: int, hi: int, ledger: Ledger) -> None:
        t = min(self.seq_len, hi - lo)
        n_seq = (hi - lo) // t
        ledger.learn(np.arange(lo, lo + n_seq * t + 1))
        seqs = torch.stack([tokens[lo + i * t : lo + (i + 1) * t + 1] for i in range(n_seq)]).to(self.device)
        for group in self.opt.param_groups:
            group["lr"] = self.lr(self.chunk)
        self.model.train()
        world, rank, per_step = dist.world_size(), dist.rank(), self.cfg.sgd_batch_seqs
        for _ in range(self.cfg.sgd_epochs):
            for i in range(0, n_seq, per_step):
                rows = range(i, min(i + per_step, n_seq))
                mine = list(rows)[rank::world]
                self._step(seqs[mine], len(mine) * world / len(rows))
        self.model.eval()
        self.chunk += 1

    def _step(self, seqs: Tensor, weight: float) -> None:
        """One SGD step on this rank's sequences; ``weight`` makes the rank-average of the local
        means the mean over every rank's sequences."""

        def loss() -> Tensor:
            with dist.autocast_for(self.device):
                return self.model(seqs[:, :-1], seqs[:, 1:]) * weight

        sgd_step(self.params, self.opt, loss if len(seqs) else None, self.cfg.sgd_clip)
        self.steps += 1


def predictor(model: nn.Module, device: torch.device, cfg: EvalConfig, windows: list) -> tuple[SgdTTT, int]:
    """SGD TTT over ``windows`` (its chunks of ``eval.sgd_chunk_tokens`` targets), and that chunk size."""
    n_chunks = len(chunk_plan(windows, cfg.sgd_chunk_tokens))
    return SgdTTT(model, device, cfg, n_chunks, cfg.seq_len), cfg.sgd_chunk_tokens


def cost(cfg: EvalConfig, work: CostInputs) -> list[tuple[str, float, str]]:
    """``pgolf plan``'s projection (``Sgd.cost``): the epochs over every chunk but the last."""
    n, f, r = work.n_tokens, work.flops, work.rates
    chunks = math.ceil(n / cfg.sgd_chunk_tokens)
    steps = (
        (chunks - 1) * cfg.sgd_epochs * math.ceil(cfg.sgd_chunk_tokens / (cfg.sgd_batch_seqs * work.seq_len))
    )
    flops = cfg.sgd_epochs * (n - n / chunks) * f.train  # the last chunk never trains
    how = f"{cfg.sgd_epochs} epochs over {chunks - 1:,} of {chunks:,} chunks, {steps:,} steps"
    return [("adapt", flops / r.train_flops + steps * r.step_ms / 1e3, how)]
