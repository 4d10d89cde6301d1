"""FLOPs per token of a model: an analytic count from the module tree, and a measured one.

Conventions (the usual MFU ones): a multiply-accumulate is 2 FLOPs; training costs 3 x the forward
(backward = 2 x forward); causal attention costs, per layer and token at context T, 2 x d x (T+1)
forward FLOPs (QK^T and AV each take d MACs per key, over (T+1)/2 keys on average). Flash kernels
recompute scores in backward, which these numbers leave out, as MFU figures do. Elementwise work
(norms, RoPE, activations, softcap) is not counted.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from pgolf.model.gpt import GPT


@dataclass(frozen=True)
class Flops:
    matmul: int
    """Forward FLOPs per token of every weight matrix applied (the tied head included)."""
    attention_coeff: int
    """2 x model_dim x layers: a window of L tokens costs attention_coeff x L x (L+1) forward FLOPs."""
    seq_len: int
    layers: int
    """Block applications per token (depth after loops and recurrence)."""

    @property
    def attention(self) -> float:
        """Forward FLOPs per token of causal attention at ``seq_len``, averaged over positions."""
        return self.attention_coeff * (self.seq_len + 1)

    @property
    def forward(self) -> float:
        return self.matmul + self.attention

    @property
    def train(self) -> float:
        return 3 * self.forward


def block_applications(model: GPT, looping: bool) -> dict[int, int]:
    """How many times each physical block runs per token."""
    cfg = model.cfg
    if cfg.recurrent_blocks:
        loops = cfg.num_layers // cfg.recurrent_blocks
        return {i: loops for i in range(len(model.blocks))}
    counts: dict[int, int] = {}
    for i in model.layer_order(looping):
        counts[i] = counts.get(i, 0) + 1
    return counts


def count_flops(model: GPT, seq_len: int, looping: bool = False) -> Flops:
    """Analytic forward FLOPs per token (works on a meta-device model: only shapes are read)."""
    apps = block_applications(model, looping)
    matmul = 0
    for name, mod in model.named_modules():
        if isinstance(mod, nn.Linear):
            m = re.match(r"blocks\.(\d+)\.", name)
            matmul += 2 * mod.weight.numel() * (apps.get(int(m.group(1)), 0) if m else 1)
    if model.lm_head is None:
        matmul += 2 * model.tok_emb.weight.numel()
    layers = sum(apps.values())
    return Flops(
        matmul=matmul, attention_coeff=2 * model.cfg.model_dim * layers, seq_len=seq_len, layers=layers
    )


@dataclass(frozen=True)
class Check:
    """One forward/backward at full width and sequence length, batch 1, on the CPU."""

    seq_len: int
    loss: float
    seconds: float
    matmul_train_flops: float
    """Matmul FLOPs per token that torch's FlopCounterMode counted in the pass (forward + backward)."""


def check_pass(model: GPT, seq_len: int, vocab: int, seed: int = 0) -> Check:
    """Run the pass (shape and dtype errors surface here) and count its matmul FLOPs."""
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, vocab, (1, seq_len + 1), generator=gen)
    start = time.perf_counter()
    with FlopCounterMode(display=False) as counter:
        loss = model(ids[:, :-1], ids[:, 1:])
        loss.backward()
    seconds = time.perf_counter() - start
    counts = counter.get_flop_counts().get("Global", {})
    mm = sum(v for op, v in counts.items() if "mm" in str(op) or "addmm" in str(op))
    model.zero_grad(set_to_none=True)
    return Check(seq_len=seq_len, loss=float(loss.detach()), seconds=seconds, matmul_train_flops=mm / seq_len)
