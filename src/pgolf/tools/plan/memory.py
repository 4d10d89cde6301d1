"""Peak memory per device of a training step, without running it.

Static: fp32 weights, fp32 gradients, optimizer state (Muon: one momentum buffer per matrix; AdamW:
two moments for the rest) and the fp32 copy that EMA/SWA keeps. Activations: the tensors autograd
saves for backward, counted by running the forward on fake tensors (shapes and dtypes only, no
compute) at the real micro-batch, under bf16 autocast for a GPU (as the trainer runs) and fp32 on
the CPU. Tensors sharing storage count once; parameters are not activations (their bf16 casts
are). The backward's largest transient, the gradient of the fp32 logits and of their softcap
(2 x B x T x V x 4 bytes), is added. Eager autograd saves about what torch.compile's partitioner
keeps for this model (measured on the baseline: 230 vs 236 kB per token), so the figure stands
for the compiled run too. Allocator fragmentation and the CUDA context (~0.5 GB) are not counted.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch._subclasses.fake_tensor import FakeTensorMode

from pgolf.config.run import RunConfig
from pgolf.model.gpt import GPT
from pgolf.optim import split_parameters


@dataclass(frozen=True)
class Memory:
    weights: int
    gradients: int
    optimizer: int
    averaging: int
    activations: int
    transient: int
    micro_batch: tuple[int, int]
    """(sequences, sequence length) of one forward on one device."""

    @property
    def total(self) -> int:
        return (
            self.weights
            + self.gradients
            + self.optimizer
            + self.averaging
            + self.activations
            + self.transient
        )

    def to_dict(self) -> dict:
        return {**asdict(self), "micro_batch": list(self.micro_batch), "total": self.total}


def saved_activation_bytes(cfg: RunConfig, batch: int, bf16: bool, looping: bool) -> int:
    """Bytes autograd saves for one forward of ``batch`` x ``cfg.train.seq_len`` tokens."""
    seen: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        if not isinstance(t, torch.nn.Parameter):
            storage = t.untyped_storage()
            seen[id(storage)] = storage.nbytes()
        return t

    with FakeTensorMode(allow_non_fake_inputs=True):
        model = GPT(cfg.model)
        model.looping = looping
        ids = torch.zeros(batch, cfg.train.seq_len, dtype=torch.int64)
        hooks = torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t)
        with hooks, torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = model(ids, ids)
        loss.backward()  # dtype errors of the backward surface here too
    return sum(seen.values())


def plan_memory(cfg: RunConfig, bf16: bool) -> Memory:
    """Peak memory of one device, which runs one micro-batch at a time whatever the device count."""
    tc = cfg.train
    per_micro = tc.batch_tokens // tc.microbatches
    batch = max(1, per_micro // tc.seq_len)
    with torch.device("meta"):
        model = GPT(cfg.model)
    groups = split_parameters(model)
    n_params = sum(p.numel() for p in model.parameters())
    muon = sum(p.numel() for _, p in groups["matrix"])
    looping = cfg.model.loop_repeats > 0
    return Memory(
        weights=4 * n_params,
        gradients=4 * n_params,
        optimizer=4 * (muon + 2 * (n_params - muon)),
        averaging=4 * n_params if tc.averaging in ("ema", "swa") else 0,
        activations=saved_activation_bytes(cfg, batch, bf16, looping),
        transient=2 * batch * tc.seq_len * cfg.model.vocab_size * 4,
        micro_batch=(batch, tc.seq_len),
    )
