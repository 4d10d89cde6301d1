"""The contest's baseline GPT (seed-techniques §5).

Embedding -> RMSNorm -> x0; U-Net: the first floor(L/2) blocks push their outputs, the remaining
blocks pop them (LIFO) and add ``skip_weights[j] * skip`` before running; final RMSNorm; tied head;
logit softcap c*tanh(z/c). Each block mixes its input with x0 (``resid_mix``), then adds scaled
attention and relu^2 MLP outputs. Attention RMS-normalises q and k per head (no gain), applies RoPE
(half-split convention) and a learned per-head query gain, and uses grouped-query SDPA.

Parameter names follow the contest's script, so export rules written against those names apply.
All parameters are fp32; on CUDA the forward runs under bf16 autocast.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pgolf.config import ModelConfig

CONTROL_PATTERNS = ("attn_scale", "mlp_scale", "resid_mix", "q_gain", "skip_weight")
"""Name fragments of control tensors: Adam "scalar" group, kept fp32 at export (§5.4, §9.1)."""


def rms_norm(x: Tensor) -> Tensor:
    return F.rms_norm(x, (x.size(-1),))


def rotary_tables(seq_len: int, head_dim: int, base: float, device: torch.device) -> tuple[Tensor, Tensor]:
    """cos, sin of shape (T, head_dim/2): theta[t, j] = t * base^(-2j/head_dim)."""
    inv_freq = base ** (-torch.arange(0, head_dim, 2, dtype=torch.float32, device=device) / head_dim)
    angles = torch.outer(torch.arange(seq_len, dtype=torch.float32, device=device), inv_freq)
    return angles.cos(), angles.sin()


def apply_rotary(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Half-split RoPE on x of shape (B, H, T, D): [x1 cos + x2 sin, -x1 sin + x2 cos]."""
    half = x.size(-1) // 2
    x1, x2 = x[..., :half], x[..., half:]
    cos, sin = cos.to(x.dtype), sin.to(x.dtype)
    return torch.cat((x1 * cos + x2 * sin, x2 * cos - x1 * sin), dim=-1)


class Attention(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.num_heads, self.num_kv_heads, self.head_dim = cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
        kv_dim = cfg.num_kv_heads * cfg.head_dim
        self.c_q = nn.Linear(cfg.model_dim, cfg.model_dim, bias=False)
        self.c_k = nn.Linear(cfg.model_dim, kv_dim, bias=False)
        self.c_v = nn.Linear(cfg.model_dim, kv_dim, bias=False)
        self.proj = nn.Linear(cfg.model_dim, cfg.model_dim, bias=False)
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
        return self.proj(y.transpose(1, 2).reshape(b, t, d))


class MLP(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.fc = nn.Linear(cfg.model_dim, cfg.mlp_hidden, bias=False)
        self.proj = nn.Linear(cfg.mlp_hidden, cfg.model_dim, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.proj(F.relu(self.fc(x)).square())


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.attn = Attention(cfg)
        self.mlp = MLP(cfg)
        self.attn_scale = nn.Parameter(torch.ones(cfg.model_dim))
        self.mlp_scale = nn.Parameter(torch.ones(cfg.model_dim))
        self.resid_mix = nn.Parameter(torch.stack((torch.ones(cfg.model_dim), torch.zeros(cfg.model_dim))))

    def forward(self, x: Tensor, x0: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
        mix = self.resid_mix.to(x.dtype)
        x = mix[0] * x + mix[1] * x0
        x = x + self.attn_scale.to(x.dtype) * self.attn(rms_norm(x), cos, sin)
        return x + self.mlp_scale.to(x.dtype) * self.mlp(rms_norm(x))


class GPT(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.num_encoder = cfg.num_layers // 2
        self.num_decoder = cfg.num_layers - self.num_encoder
        self.tok_emb = nn.Embedding(cfg.vocab_size, cfg.model_dim)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.num_layers))
        self.skip_weights = nn.Parameter(torch.ones(min(self.num_encoder, self.num_decoder), cfg.model_dim))
        self.lm_head = None if cfg.tie_embeddings else nn.Linear(cfg.model_dim, cfg.vocab_size, bias=False)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Contest init: N(0, tied_embed_init_std) embedding; zero output projections (and untied
        head); every other Linear keeps PyTorch's default (kaiming-uniform)."""
        nn.init.normal_(self.tok_emb.weight, std=self.cfg.tied_embed_init_std)
        for block in self.blocks:
            nn.init.zeros_(block.attn.proj.weight)
            nn.init.zeros_(block.mlp.proj.weight)
        if self.lm_head is not None:
            nn.init.zeros_(self.lm_head.weight)

    def logits(self, input_ids: Tensor) -> Tensor:
        """Softcapped logits (B, T, V) for input ids (B, T)."""
        t = input_ids.size(1)
        cos, sin = rotary_tables(t, self.cfg.head_dim, self.cfg.rope_base, input_ids.device)
        x = rms_norm(self.tok_emb(input_ids))
        x0 = x
        skips: list[Tensor] = []
        for block in self.blocks[: self.num_encoder]:
            x = block(x, x0, cos, sin)
            skips.append(x)
        for j, block in enumerate(self.blocks[self.num_encoder :]):
            if skips:
                x = x + self.skip_weights[j].to(x.dtype) * skips.pop()
            x = block(x, x0, cos, sin)
        x = rms_norm(x)
        z = F.linear(x, self.tok_emb.weight.to(x.dtype)) if self.lm_head is None else self.lm_head(x)
        c = self.cfg.logit_softcap
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
