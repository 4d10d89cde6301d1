"""What both score-first SGD methods share: which weights train, and one step averaged over ranks.

Chunked SGD TTT (``eval.ttt``) and LoRA TTT's phased global SGD (``eval.lora``) train the base
weights on tokens every rank has already scored. Every rank takes the same number of steps (a rank
with no rows of a step contributes zero gradients), so the all-reduce inside a step always pairs.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from pgolf import dist


def trainable(model: nn.Module, freeze_blocks: int) -> list[nn.Parameter]:
    """Every parameter, except the first ``freeze_blocks`` blocks and, when any are frozen, the
    inputs below them (embeddings, bigram and value-embedding tables, smear gate)."""
    frozen = {f"blocks.{i}." for i in range(freeze_blocks)}
    below = ("tok_emb.", "bigram.", "smear.", "value_embed.") if freeze_blocks else ()
    return [
        p
        for name, p in model.named_parameters()
        if not any(name.startswith(f) for f in frozen) and not name.startswith(below)
    ]


def sgd_step(
    params: list[nn.Parameter], opt: torch.optim.Optimizer, loss: Callable[[], Tensor] | None, clip: float
) -> None:
    """One step: this rank's ``loss()`` (None: no rows here) backpropagated, gradients averaged over
    ranks (the caller weights its loss so that the average is the mean over every rank's rows),
    clipped to ``clip`` (0: not clipped), applied."""
    opt.zero_grad(set_to_none=False)
    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
    if loss is not None:
        loss().backward()
    dist.average_gradients(params)
    if clip:
        torch.nn.utils.clip_grad_norm_(params, clip)
    opt.step()
