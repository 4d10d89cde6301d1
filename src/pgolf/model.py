"""The contest's baseline GPT (seed-techniques §5).

Embedding -> RMSNorm -> x0; U-Net: the first floor(L/2) blocks push their outputs, the remaining
blocks pop them (LIFO) and add ``skip_weights[j] * skip`` before running; final RMSNorm; tied head;
logit softcap c*tanh(z/c). Each block mixes its input with x0 (``resid_mix``), then adds scaled
attention and relu^2 MLP outputs. Attention RMS-normalises q and k per head (no gain), applies RoPE
(half-split convention) and a learned per-head query gain, and uses grouped-query SDPA.

Options (all off by default, which is the baseline; seed-techniques §7): MLP activation, SmearGate
and BigramHash (``embed.py``), OrthoInit, XSA on the last layers, partial RoPE, LN scale, NTK RoPE
rescale, and two kinds of depth recurrence: K shared blocks looped with per-loop AdaLN (kellyvv), or
a middle range of layers re-run once ``looping`` is switched on (the final records' "Loop3-5").

Parameter names follow the contest's script, so export rules written against those names apply.
All parameters are fp32; on CUDA the forward runs under bf16 autocast.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pgolf.config import ModelConfig
from pgolf.embed import BigramHash, SmearGate

CONTROL_PATTERNS = (
    "attn_scale", "mlp_scale", "resid_mix", "q_gain", "skip_weight", "smear", "bigram.scale", "adaln",
    "cycle_gate",
)  # fmt: skip
"""Name fragments of control tensors: Adam "scalar" group, kept fp32 at export (§5.4, §9.1)."""


def rms_norm(x: Tensor) -> Tensor:
    return F.rms_norm(x, (x.size(-1),))


def rotary_tables(seq_len: int, rot_dims: int, base: float, device: torch.device) -> tuple[Tensor, Tensor]:
    """cos, sin of shape (T, rot_dims/2): theta[t, j] = t * base^(-2j/rot_dims)."""
    inv_freq = base ** (-torch.arange(0, rot_dims, 2, dtype=torch.float32, device=device) / rot_dims)
    angles = torch.outer(torch.arange(seq_len, dtype=torch.float32, device=device), inv_freq)
    return angles.cos(), angles.sin()


def ntk_base(base: float, rot_dims: int, seq_len: int, trained_len: int) -> float:
    """NTK-aware rescale for sequences longer than ``trained_len`` (0: never):
    base' = base * s^(d/(d-2)), s = seq_len/trained_len (seed-techniques §7.9)."""
    if not trained_len or seq_len <= trained_len:
        return base
    return base * (seq_len / trained_len) ** (rot_dims / (rot_dims - 2))


def apply_rotary(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Half-split RoPE on the first 2*cos.size(-1) dims of x (B, H, T, D): within them
    [x1 cos + x2 sin, -x1 sin + x2 cos]; the remaining dims pass through (partial RoPE)."""
    rd = 2 * cos.size(-1)
    rot, rest = x[..., :rd], x[..., rd:]
    x1, x2 = rot[..., : rd // 2], rot[..., rd // 2 :]
    cos, sin = cos.to(x.dtype), sin.to(x.dtype)
    return torch.cat((x1 * cos + x2 * sin, x2 * cos - x1 * sin, rest), dim=-1)


def exclusive_self_attention(y: Tensor, v: Tensor) -> Tensor:
    """XSA (arXiv:2603.09078; seed-techniques §7.6): y_h <- y_h - <y_h, v^_g> v^_g, where g is head h's
    KV group and v^ = v/|v| is the token's own value, so a layer adds only what is orthogonal to the
    token itself. GQA-aware by reshaping, without repeat_interleave.
    y: (B, H, T, D); v: (B, KV, T, D)."""
    b, h, t, d = y.shape
    kv = v.size(1)
    yg = y.view(b, kv, h // kv, t, d)
    vn = F.normalize(v, dim=-1).unsqueeze(2)  # (B, KV, 1, T, D)
    return (yg - (yg * vn).sum(-1, keepdim=True) * vn).view(b, h, t, d)


class Attention(nn.Module):
    def __init__(self, cfg: ModelConfig, xsa: bool = False) -> None:
        super().__init__()
        self.xsa = xsa
        self.num_heads, self.num_kv_heads, self.head_dim = cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
        kv_dim = cfg.num_kv_heads * cfg.head_dim
        self.c_q = nn.Linear(cfg.model_dim, cfg.model_dim, bias=False)
        self.c_k = nn.Linear(cfg.model_dim, kv_dim, bias=False)
        self.c_v = nn.Linear(cfg.model_dim, kv_dim, bias=False)
        self.proj = nn.Linear(cfg.model_dim, cfg.model_dim, bias=False)
        self.proj.zero_init = True
        self.q_gain = nn.Parameter(torch.full((cfg.num_heads,), cfg.qk_gain_init))

    def forward(self, x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
        b, t, d = x.shape
        q = self.c_q(x).view(b, t, self.num_heads, self.head_dim).transpose(1, 2)  # (B, H, T, D)
        k = self.c_k(x).view(b, t, self.num_kv_heads, self.head_dim).transpose(1, 2)  # (B, KV, T, D)
        v = self.c_v(x).view(b, t, self.num_kv_heads, self.head_dim).transpose(1, 2)
        q = apply_rotary(rms_norm(q), cos, sin) * self.q_gain.to(q.dtype)[None, :, None, None]
        k = apply_rotary(rms_norm(k), cos, sin)
        y = F.scaled_dot_product_attention(
            q, k, v, is_causal=True, enable_gqa=self.num_kv_heads != self.num_heads
        )
        if self.xsa:
            y = exclusive_self_attention(y, v)
        return self.proj(y.transpose(1, 2).reshape(b, t, d))


class MLP(nn.Module):
    """relu2: relu(u)^2 (baseline); leaky_relu2: LeakyReLU(0.5)(u)^2 (records 2026-03-23);
    swiglu: proj(silu(gate x) * up x) (swapp1990). u = fc x; proj is zero-initialised."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.kind = cfg.mlp_activation
        if self.kind == "swiglu":
            self.gate = nn.Linear(cfg.model_dim, cfg.mlp_hidden, bias=False)
            self.up = nn.Linear(cfg.model_dim, cfg.mlp_hidden, bias=False)
        else:
            self.fc = nn.Linear(cfg.model_dim, cfg.mlp_hidden, bias=False)
        self.proj = nn.Linear(cfg.mlp_hidden, cfg.model_dim, bias=False)
        self.proj.zero_init = True

    def forward(self, x: Tensor) -> Tensor:
        if self.kind == "swiglu":
            return self.proj(F.silu(self.gate(x)) * self.up(x))
        u = self.fc(x)
        h = F.relu(u) if self.kind == "relu2" else F.leaky_relu(u, 0.5)
        return self.proj(h.square())


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig, index: int = 0, xsa: bool = False) -> None:
        super().__init__()
        # LN scale (records 2026-03-21): block i's normalised inputs x 1/sqrt(i+1)
        self.ln_mult = 1 / math.sqrt(index + 1) if cfg.ln_scale else 1.0
        self.attn = Attention(cfg, xsa)
        self.mlp = MLP(cfg)
        self.attn_scale = nn.Parameter(torch.ones(cfg.model_dim))
        self.mlp_scale = nn.Parameter(torch.ones(cfg.model_dim))
        self.resid_mix = nn.Parameter(torch.stack((torch.ones(cfg.model_dim), torch.zeros(cfg.model_dim))))

    def forward(self, x: Tensor, x0: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
        mix = self.resid_mix.to(x.dtype)
        x = mix[0] * x + mix[1] * x0
        x = x + self.attn_scale.to(x.dtype) * self.attn(rms_norm(x) * self.ln_mult, cos, sin)
        return x + self.mlp_scale.to(x.dtype) * self.mlp(rms_norm(x) * self.ln_mult)


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
        self.lm_head = None if cfg.tie_embeddings else nn.Linear(cfg.model_dim, cfg.vocab_size, bias=False)
        if self.lm_head is not None:
            self.lm_head.zero_init = True
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
        base = ntk_base(cfg.rope_base, rd, t, cfg.rope_ntk_seq_len)
        cos, sin = rotary_tables(t, rd, base, input_ids.device)
        x = self.tok_emb(input_ids)
        if self.bigram is not None:
            x = x + self.bigram(input_ids).to(x.dtype)
        x = rms_norm(x)
        if self.smear is not None:
            x = self.smear(x, input_ids)
        x0 = x
        x = (self._recurrent if cfg.recurrent_blocks else self._unet)(x, x0, cos, sin)
        x = rms_norm(x)
        z = F.linear(x, self.tok_emb.weight.to(x.dtype)) if self.lm_head is None else self.lm_head(x)
        c = cfg.logit_softcap
        return c * torch.tanh(z / c)

    def forward(self, input_ids: Tensor, targets: Tensor, reduction: str = "mean") -> Tensor:
        """Cross-entropy in fp32: a scalar mean, or per-token NLL (B, T) with ``reduction='none'``."""
        z = self.logits(input_ids).float()
        nll = F.cross_entropy(z.flatten(0, 1), targets.flatten(), reduction=reduction)
        return nll.view_as(targets) if reduction == "none" else nll


def is_control(name: str) -> bool:
    return any(p in name for p in CONTROL_PATTERNS)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
