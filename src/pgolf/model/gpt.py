"""The contest's baseline GPT topology (seed-techniques §5) and its depth-recurrence variants.

Embedding -> RMSNorm -> x0; U-Net: the first floor(L/2) blocks push their outputs, the remaining
blocks pop them (LIFO) and add ``skip_weights[j] * skip`` before running; final RMSNorm; tied head;
logit softcap c*tanh(z/c). Options (all off by default, which is the baseline; seed-techniques §7)
live in ``layers`` and ``inputs``; this module adds the two kinds of depth recurrence: K shared
blocks looped with per-loop AdaLN (kellyvv), or a middle range of layers re-run once the trainer
switches passes on (the final records' "Loop3-5", progressive: ``loop_passes`` of ``loop_repeats``),
and the frontier's skip gates, two-lane tail and asymmetric logit caps (sota-stack §2.2).

Parameter names follow the contest's script, so export rules written against those names apply.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pgolf.config.model import ModelConfig
from pgolf.model.inputs import BigramHash, SmearGate, ValueEmbedding, WindowSmearGate
from pgolf.model.kernels import kernel
from pgolf.model.layers import (
    Block,
    Linear,
    document_mask,
    document_starts,
    ntk_base,
    rms_norm,
    rotary_tables,
)
from pgolf.model.params import declare


def loop_passes(recorded: bool | int, loop_repeats: int) -> int:
    """Extra loop passes from a checkpoint's or artifact's record: a count, or (older records) a flag
    meaning all of them."""
    if isinstance(recorded, bool):
        return loop_repeats if recorded else 0
    return min(int(recorded), loop_repeats)


class GPT(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        n_blocks = cfg.recurrent_blocks or cfg.num_layers
        self.tok_emb = nn.Embedding(cfg.vocab_size, cfg.model_dim)
        declare(self.tok_emb, weight="embed")
        self.bigram = (
            BigramHash(
                cfg.bigram_buckets,
                cfg.bigram_dim,
                cfg.model_dim,
                ortho=cfg.ortho_init,
                num_layers=cfg.num_layers,
            )
            if cfg.bigram_buckets
            else None
        )
        self.smear = None
        if cfg.smear_gate:
            self.smear = (
                WindowSmearGate(cfg.model_dim, cfg.smear_gate_window)
                if cfg.smear_gate_window
                else SmearGate(cfg.model_dim, cfg.smear_gate_init)
            )
        kv_dim = cfg.num_kv_heads * cfg.head_dim
        self.value_embed = (
            ValueEmbedding(cfg.vocab_size, cfg.value_embed_dim, kv_dim) if cfg.value_embed_dim else None
        )
        self.blocks = nn.ModuleList(
            Block(
                cfg,
                i,
                xsa=i >= n_blocks - cfg.xsa_last_n,
                value_embed=bool(cfg.value_embed_dim) and i >= n_blocks - cfg.value_embed_layers,
            )
            for i in range(n_blocks)
        )
        self.loop_passes = 0
        """Extra passes of the middle range now on (0 .. loop_repeats; set by the trainer from
        train.loop_from_frac, or pass by pass from train.loop_pass_fracs)."""
        if cfg.recurrent_blocks:
            loops, half = cfg.num_layers // cfg.recurrent_blocks, cfg.recurrent_blocks // 2
            self.skip_weights = nn.Parameter(torch.ones(loops, min(half, n_blocks - half), cfg.model_dim))
            self.adaln_params = nn.Parameter(torch.zeros(loops, 2 * cfg.model_dim))
            self.cycle_gates = nn.Parameter(torch.zeros(loops, cfg.model_dim))
            declare(self, adaln_params="control", cycle_gates="control")
        else:
            depth = len(self.layer_order(looping=cfg.loop_repeats))
            self.skip_weights = nn.Parameter(torch.ones(min(depth // 2, depth - depth // 2), cfg.model_dim))
            if cfg.skip_gates:
                self.skip_gates = nn.Parameter(torch.zeros_like(self.skip_weights))
        declare(self, skip_weights="control", skip_gates="control")
        if cfg.logit_cap_asym:  # frozen (no gradient, no optimizer group) until test-time SGD turns them on
            self.logit_cap_pos = nn.Parameter(torch.tensor(cfg.logit_softcap), requires_grad=False)
            self.logit_cap_neg = nn.Parameter(torch.tensor(cfg.logit_softcap), requires_grad=False)
            declare(self, logit_cap_pos="control", logit_cap_neg="control")
        self.lm_head = None if cfg.tie_embeddings else Linear(cfg.model_dim, cfg.vocab_size, role="head")
        self.head_in = nn.Identity()
        """The head's input (final-norm output); a hook point for GPTQ's Hessian of the head."""
        self.tied_head_out = nn.Identity()
        """The tied head's logits before the softcap; a hook point for the Fisher allocation's
        sensitivity of the embedding rows as output rows."""
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

    def use_attention(self, name: str) -> None:
        """Run every attention layer on the kernel ``name`` (``kernels.resolve_attention``'s result)."""
        k = kernel(name)
        for block in self.blocks:
            block.attn.kernel = k

    @property
    def looping(self) -> bool:
        """Whether any extra pass of the middle range is on."""
        return self.loop_passes > 0

    @looping.setter
    def looping(self, on: bool) -> None:
        self.loop_passes = self.cfg.loop_repeats if on else 0

    def shared_blocks(self) -> list[int]:
        """The blocks that run more than once per forward: every recurrent block, or the looped range."""
        cfg = self.cfg
        if cfg.recurrent_blocks:
            return list(range(len(self.blocks)))
        return list(range(cfg.loop_start, cfg.loop_end)) if cfg.loop_repeats else []

    def layer_order(self, looping: bool | int | None = None) -> list[int]:
        """Physical block index of each virtual layer. With n extra passes on (``looping``: a count,
        True for all loop_repeats, None for the model's own), [s, e) is re-run n more times:
        11 layers, [3, 6), 2 passes -> 0..5, 3..5, 3..5, 6..10 (17)."""
        cfg = self.cfg
        if looping is None:
            passes = self.loop_passes
        else:
            passes = cfg.loop_repeats if looping is True else min(int(looping), cfg.loop_repeats)
        if not passes:
            return list(range(cfg.num_layers))
        middle = list(range(cfg.loop_start, cfg.loop_end)) * passes
        return list(range(cfg.loop_end)) + middle + list(range(cfg.loop_end, cfg.num_layers))

    def _skip(self, j: int, x: Tensor, skip: Tensor) -> Tensor:
        """Decoder j's U-Net skip: x + w skip, or with skip gates lerp(w skip, x, sigmoid(g))."""
        s = self.skip_weights[j].to(x.dtype) * skip
        if not self.cfg.skip_gates:
            return x + s
        return torch.lerp(s, x, torch.sigmoid(self.skip_gates[j]).to(x.dtype))

    def _unet(
        self,
        x: Tensor,
        x0: Tensor,
        cos: Tensor,
        sin: Tensor,
        ve: Tensor | None,
        mask: Tensor | None,
        starts: Tensor | None,
    ) -> Tensor:
        """The U-Net over the virtual layers; two-lane blocks (at the tail) start a second lane equal to
        the stream, skips write into lane 0 only, and the output is the lanes' mean."""
        order = self.layer_order()
        n_enc = len(order) // 2
        skips: list[Tensor] = []
        lane1: Tensor | None = None
        for pos, i in enumerate(order):
            block = self.blocks[i]
            if block.two_lane and lane1 is None:
                lane1 = x  # the lanes split before this block's skip, which goes to lane 0 only
            if pos >= n_enc and skips:
                x = self._skip(pos - n_enc, x, skips.pop())
            if block.two_lane:
                x, lane1 = block.forward_lanes((x, lane1), x0, cos, sin, ve, mask)
            else:
                x = block(x, x0, cos, sin, ve, mask, starts)
            if pos < n_enc:
                skips.append(x)
        return x if lane1 is None else 0.5 * (x + lane1)

    def _recurrent(
        self, x: Tensor, x0: Tensor, cos: Tensor, sin: Tensor, mask: Tensor | None, starts: Tensor | None
    ) -> Tensor:
        """kellyvv's depth recurrence (seed-techniques §7.11): per loop, AdaLN (zero-init gamma,
        beta), a mini U-Net over the shared blocks, then a cycle gate blending with x0."""
        d, half = self.cfg.model_dim, len(self.blocks) // 2
        for loop in range(self.adaln_params.size(0)):
            ada = self.adaln_params[loop].to(x.dtype)
            x = rms_norm(x) * (1 + ada[:d]) + ada[d:]
            skips: list[Tensor] = []
            for block in self.blocks[:half]:
                x = block(x, x0, cos, sin, mask=mask, starts=starts)
                skips.append(x)
            for j, block in enumerate(self.blocks[half:]):
                if skips:
                    x = x + self.skip_weights[loop, j].to(x.dtype) * skips.pop()
                x = block(x, x0, cos, sin, mask=mask, starts=starts)
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
        if cfg.smear_gate_window:  # the input-dependent gate acts on the raw embedding
            x = self.smear(x, input_ids)
        x = rms_norm(x)
        if self.smear is not None and not cfg.smear_gate_window:
            x = self.smear(x, input_ids)
        x0 = x
        mask = document_mask(input_ids) if cfg.doc_mask else None
        starts = document_starts(input_ids) if cfg.cpmr else None
        if cfg.recurrent_blocks:
            x = self._recurrent(x, x0, cos, sin, mask, starts)
        else:
            ve = self.value_embed(input_ids) if self.value_embed is not None else None
            x = self._unet(x, x0, cos, sin, ve, mask, starts)
        x = self.head_in(rms_norm(x))
        if self.lm_head is None:
            z = self.tied_head_out(F.linear(x, self.tok_emb.weight.to(x.dtype)))
        else:
            z = self.lm_head(x)
        if self.head_delta is not None:
            z = z + self.head_delta(x).to(z.dtype)
        if cfg.logit_cap_asym:
            c = torch.where(z > 0, self.logit_cap_pos, self.logit_cap_neg).to(z.dtype)
        else:
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
