"""The contest's baseline GPT topology (seed-techniques §5) and its depth-recurrence variants.

Embedding -> RMSNorm -> x0; U-Net: the first floor(L/2) blocks push their outputs, the remaining
blocks pop them (LIFO) and add ``skip_weights[j] * skip`` before running; final RMSNorm; tied head;
logit softcap c*tanh(z/c). Options (all off by default, which is the baseline; seed-techniques §7)
live in ``layers`` and ``inputs``; this module adds the two kinds of depth recurrence: K shared
blocks looped with per-loop AdaLN (kellyvv), or a middle range of layers re-run once ``looping``
is switched on (the final records' "Loop3-5").

Parameter names follow the contest's script, so export rules written against those names apply.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pgolf.config.model import ModelConfig
from pgolf.model.inputs import BigramHash, SmearGate
from pgolf.model.layers import Block, Linear, ntk_base, rms_norm, rotary_tables


class GPT(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        n_blocks = cfg.recurrent_blocks or cfg.num_layers
        self.tok_emb = nn.Embedding(cfg.vocab_size, cfg.model_dim)
        self.bigram = (
            BigramHash(cfg.bigram_buckets, cfg.bigram_dim, cfg.model_dim, ortho=cfg.ortho_init,
                       num_layers=cfg.num_layers)
            if cfg.bigram_buckets else None
        )  # fmt: skip
        self.smear = SmearGate(cfg.model_dim, cfg.smear_gate_init) if cfg.smear_gate else None
        self.blocks = nn.ModuleList(
            Block(cfg, i, xsa=i >= n_blocks - cfg.xsa_last_n) for i in range(n_blocks)
        )
        self.looping = False
        """Whether the middle-range loop is on (set by the trainer at train.loop_from_frac)."""
        if cfg.recurrent_blocks:
            loops, half = cfg.num_layers // cfg.recurrent_blocks, cfg.recurrent_blocks // 2
            self.skip_weights = nn.Parameter(torch.ones(loops, min(half, n_blocks - half), cfg.model_dim))
            self.adaln_params = nn.Parameter(torch.zeros(loops, 2 * cfg.model_dim))
            self.cycle_gates = nn.Parameter(torch.zeros(loops, cfg.model_dim))
        else:
            depth = len(self.layer_order(looping=cfg.loop_repeats > 0))
            self.skip_weights = nn.Parameter(torch.ones(min(depth // 2, depth - depth // 2), cfg.model_dim))
        self.lm_head = None if cfg.tie_embeddings else Linear(cfg.model_dim, cfg.vocab_size)
        self.head_in = nn.Identity()
        """The head's input (final-norm output); a hook point for GPTQ's Hessian of the head."""
        if self.lm_head is not None:
            self.lm_head.zero_init = True
        self.rope_len = 0
        """If > 0, the NTK base is computed for this window length whatever the forward's length (an
        evaluation's shorter windows, near a document's end, must not see another base)."""
        self.head_delta = None
        """Optional callable (B, T, d) -> (B, T, V) added to the logits before the softcap, from the
        head's input (per-document LoRA on the head at test-time training); not a parameter."""
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Contest init: N(0, tied_embed_init_std) embedding; zero output projections (and untied
        head); other Linears keep PyTorch's kaiming-uniform, or with ``ortho_init`` (seed-techniques
        §7.5, as the records' code does): orthogonal when both dims >= 64, and x 1/sqrt(2L) for
        '.proj' modules that are not zero-init, which in this model is only ``bigram.proj``."""
        nn.init.normal_(self.tok_emb.weight, std=self.cfg.tied_embed_init_std)
        for name, mod in self.named_modules():
            if not isinstance(mod, nn.Linear) or name.startswith("bigram."):
                continue
            if getattr(mod, "zero_init", False):
                nn.init.zeros_(mod.weight)
            elif self.cfg.ortho_init and min(mod.weight.shape) >= 64:
                nn.init.orthogonal_(mod.weight)

    def layer_order(self, looping: bool | None = None) -> list[int]:
        """Physical block index of each virtual layer. With the middle loop on, [s, e) is re-run
        loop_repeats more times: 11 layers, [3, 6), 2 repeats -> 0..5, 3..5, 3..5, 6..10 (17)."""
        cfg = self.cfg
        looping = self.looping if looping is None else looping
        if not (looping and cfg.loop_repeats):
            return list(range(cfg.num_layers))
        middle = list(range(cfg.loop_start, cfg.loop_end)) * cfg.loop_repeats
        return list(range(cfg.loop_end)) + middle + list(range(cfg.loop_end, cfg.num_layers))

    def _unet(self, x: Tensor, x0: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
        order = self.layer_order()
        n_enc = len(order) // 2
        skips: list[Tensor] = []
        for i in order[:n_enc]:
            x = self.blocks[i](x, x0, cos, sin)
            skips.append(x)
        for j, i in enumerate(order[n_enc:]):
            if skips:
                x = x + self.skip_weights[j].to(x.dtype) * skips.pop()
            x = self.blocks[i](x, x0, cos, sin)
        return x

    def _recurrent(self, x: Tensor, x0: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
        """kellyvv's depth recurrence (seed-techniques §7.11): per loop, AdaLN (zero-init gamma,
        beta), a mini U-Net over the shared blocks, then a cycle gate blending with x0."""
        d, half = self.cfg.model_dim, len(self.blocks) // 2
        for loop in range(self.adaln_params.size(0)):
            ada = self.adaln_params[loop].to(x.dtype)
            x = rms_norm(x) * (1 + ada[:d]) + ada[d:]
            skips: list[Tensor] = []
            for block in self.blocks[:half]:
                x = block(x, x0, cos, sin)
                skips.append(x)
            for j, block in enumerate(self.blocks[half:]):
                if skips:
                    x = x + self.skip_weights[loop, j].to(x.dtype) * skips.pop()
                x = block(x, x0, cos, sin)
            gate = torch.sigmoid(self.cycle_gates[loop]).to(x.dtype)
            x = gate * x + (1 - gate) * x0
        return x

    def logits(self, input_ids: Tensor) -> Tensor:
        """Softcapped logits (B, T, V) for input ids (B, T)."""
        cfg = self.cfg
        t, rd = input_ids.size(1), cfg.rotary_dims
        base = ntk_base(cfg.rope_base, rd, self.rope_len or t, cfg.rope_ntk_seq_len)
        cos, sin = rotary_tables(t, rd, base, input_ids.device)
        x = self.tok_emb(input_ids)
        if self.bigram is not None:
            x = x + self.bigram(input_ids).to(x.dtype)
        x = rms_norm(x)
        if self.smear is not None:
            x = self.smear(x, input_ids)
        x0 = x
        x = (self._recurrent if cfg.recurrent_blocks else self._unet)(x, x0, cos, sin)
        x = self.head_in(rms_norm(x))
        z = F.linear(x, self.tok_emb.weight.to(x.dtype)) if self.lm_head is None else self.lm_head(x)
        if self.head_delta is not None:
            z = z + self.head_delta(x).to(z.dtype)
        c = cfg.logit_softcap
        return c * torch.tanh(z / c)

    def forward(self, input_ids: Tensor, targets: Tensor | None = None) -> Tensor:
        """With targets: the mean cross-entropy in fp32 (the training loss). Without: the softcapped
        logits (B, T, V), which scoring turns into distributions. Calling the module (rather than
        ``logits``) keeps both on the compiled graph when the model is wrapped by torch.compile."""
        if targets is None:
            return self.logits(input_ids)
        z = self.logits(input_ids).float()
        return F.cross_entropy(z.flatten(0, 1), targets.flatten())
