"""The baseline transformer's layers (seed-techniques §5) and their technique options (§7).

Attention RMS-normalises q and k per head (no gain), applies RoPE (half-split convention) and a
learned per-head query gain, and uses grouped-query SDPA; the MLP is relu² unless configured
otherwise; a block mixes its input with x0 (``resid_mix``), then adds scaled attention and MLP
outputs. All parameters are fp32; on CUDA the forward runs under bf16 autocast.

Frontier options (sota-stack §2.2): a per-head gate on the attention output (``attn_gate``: output,
dense or sparse), value embeddings added to v (``ve``), and the two-lane form of a block
(``Block.forward_lanes``: attention reads lane 0, the MLP lane 1, both write into both lanes).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pgolf.config.model import ModelConfig
from pgolf.model.kernels import Sdpa
from pgolf.model.params import declare
from pgolf.vocab import BOS_ID


def rms_norm(x: Tensor) -> Tensor:
    return F.rms_norm(x, (x.size(-1),))


def micro_norm(x: Tensor, block: int) -> Tensor:
    """MicroNorm: RMS normalisation over each contiguous block of ``block`` channels on its own."""
    return F.rms_norm(x.unflatten(-1, (-1, block)), (block,)).flatten(-2)


def document_starts(ids: Tensor) -> Tensor:
    """(B, T) long: the index of the first position of each position's document in its row (a BOS
    starts a document and belongs to it; a row's first position starts one whatever its token)."""
    t = ids.size(1)
    pos = torch.arange(t, device=ids.device).expand_as(ids)
    starts = torch.where(ids == BOS_ID, pos, torch.zeros_like(pos))
    return starts.cummax(1).values


def prefix_mean(x: Tensor, starts: Tensor) -> Tensor:
    """CPMR's input: at each position the mean of x (B, T, d) over the positions strictly before it
    in its document (``document_starts``), zero at a document's first position. The sums run in
    float64 (a difference of two running sums: in fp32 a long earlier document with large values
    would reach a later one's mean through rounding)."""
    xf = x.double()
    before = torch.cat((torch.zeros_like(xf[:, :1]), xf.cumsum(1)[:, :-1]), dim=1)  # sum of x[:t]
    at_start = before.gather(1, starts.unsqueeze(-1).expand_as(before))
    count = torch.arange(x.size(1), device=x.device) - starts  # positions before t in its document
    mean = (before - at_start) / count.clamp(min=1).unsqueeze(-1).to(xf.dtype)
    return mean.to(x.dtype)


def positional_channels(head_dim: int, rot_dims: int) -> Tensor:
    """(head_dim,) bool: the channels the dichotomous temperature counts as positional. With partial
    RoPE the rotated ones; with full RoPE the floor(pairs/2) fastest-rotating pairs (pair j is channels
    j and j + rot_dims/2, angle t * base^(-2j/rot_dims), so the low j)."""
    pos = torch.zeros(head_dim, dtype=torch.bool)
    if rot_dims < head_dim:
        pos[:rot_dims] = True
    else:
        half, fast = rot_dims // 2, rot_dims // 4
        pos[:fast] = True
        pos[half : half + fast] = True
    return pos


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


def document_mask(ids: Tensor) -> Tensor:
    """(B, 1, T, T) bool, True where position i may attend to j: j <= i and both in the same document
    (a BOS starts a document and belongs to it), so attention never crosses a BOS (sota-stack §2.1;
    the CPU twin of FA3 varlen attention over per-document cu_seqlens)."""
    doc = (ids == BOS_ID).cumsum(1)
    t = ids.size(1)
    causal = torch.ones(t, t, dtype=torch.bool, device=ids.device).tril()
    return ((doc[:, :, None] == doc[:, None, :]) & causal).unsqueeze(1)


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


class Linear(nn.Linear):
    """A bias-free nn.Linear whose weight passes through ``weight_fn`` in the training forward: QAT's
    fake quantisation, set from outside (the model imports no quant code); None is the plain weight,
    and eval mode always uses the plain weight. The hook is an attribute, not a module or buffer, so
    the state dict is nn.Linear's. The weight's role (``params``) is ``role``."""

    def __init__(self, in_features: int, out_features: int, role: str = "matrix") -> None:
        super().__init__(in_features, out_features, bias=False)
        declare(self, weight=role)
        self.weight_fn = None

    def forward(self, x: Tensor) -> Tensor:
        if self.weight_fn is None or not self.training:
            return F.linear(x, self.weight)
        return F.linear(x, self.weight_fn(self.weight))


class AttentionGate(nn.Module):
    """A per-head multiplier of the attention output before the output projection (sota-stack §2.2):

    * ``output`` (PR #1667): g = 2 sigmoid(W x[:w]), W zero-initialised, so g = 1 at init;
    * ``dense`` (gated attention, PR #1736): g = sigmoid(W x), W ~ N(0, 0.005^2) over all of x;
    * ``sparse`` (SparseAttnGate, PR #1787/#1855): g = sigmoid(s W x[:w]), W zero (g = 0.5 at init).

    x is the attention's (normalised) input; w = ``attn_gate_dims``, s = ``attn_gate_scale``."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.kind, self.scale = cfg.attn_gate, cfg.attn_gate_scale
        self.dims = cfg.model_dim if self.kind == "dense" else min(cfg.attn_gate_dims, cfg.model_dim)
        self.weight = nn.Parameter(torch.zeros(cfg.num_heads, self.dims))
        declare(self, weight="control")  # a 2-D gate, yet Adam-trained and kept fp32 (PR #1667)
        if self.kind == "dense":
            nn.init.normal_(self.weight, std=0.005)

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        """x: (B, T, d) the attention input; y: (B, H, T, D) the heads' outputs."""
        z = F.linear(x[..., : self.dims], self.weight.to(x.dtype))  # (B, T, H)
        if self.kind == "output":
            g = 2 * torch.sigmoid(z)
        else:
            g = torch.sigmoid(self.scale * z if self.kind == "sparse" else z)
        return y * g.transpose(1, 2).unsqueeze(-1)


class Attention(nn.Module):
    def __init__(self, cfg: ModelConfig, xsa: bool = False, value_embed: bool = False) -> None:
        super().__init__()
        self.xsa = xsa
        self.num_heads, self.num_kv_heads, self.head_dim = cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
        kv_dim = cfg.num_kv_heads * cfg.head_dim
        self.c_q = Linear(cfg.model_dim, cfg.model_dim)
        self.c_k = Linear(cfg.model_dim, kv_dim)
        self.c_v = Linear(cfg.model_dim, kv_dim)
        self.proj = Linear(cfg.model_dim, cfg.model_dim)
        self.proj.zero_init = True
        self.q_gain = nn.Parameter(torch.full((cfg.num_heads,), cfg.qk_gain_init))
        self.q_temp = nn.Parameter(torch.ones(2, cfg.num_heads)) if cfg.qk_temp_split else None
        """The dichotomous temperature: row 0 on the positional channels, row 1 on the rest."""
        if self.q_temp is not None:
            pos = positional_channels(cfg.head_dim, cfg.rotary_dims)
            self.register_buffer("q_temp_pos", pos.float(), persistent=False)
        self.gate = AttentionGate(cfg) if cfg.attn_gate != "none" else None
        self.ve_gain = nn.Parameter(torch.ones(())) if value_embed else None
        """This layer's scalar on the shared value embedding (seed-techniques §7.10)."""
        declare(self, q_gain="control", ve_gain="control", q_temp="control")
        self.kernel = Sdpa()
        """The attention kernel (``kernels``; SDPA's own choice until ``GPT.use_attention`` pins one)."""

    def forward(
        self, x: Tensor, cos: Tensor, sin: Tensor, ve: Tensor | None = None, mask: Tensor | None = None
    ) -> Tensor:
        """x: (B, T, d); ve: the value embedding (B, T, kv_dim), used if this layer takes it; mask:
        ``document_mask`` (None: plain causal attention)."""
        b, t, d = x.shape
        q = self.c_q(x).view(b, t, self.num_heads, self.head_dim).transpose(1, 2)  # (B, H, T, D)
        k = self.c_k(x).view(b, t, self.num_kv_heads, self.head_dim).transpose(1, 2)  # (B, KV, T, D)
        v = self.c_v(x)
        if self.ve_gain is not None and ve is not None:
            v = v + self.ve_gain.to(v.dtype) * ve.to(v.dtype)
        v = v.view(b, t, self.num_kv_heads, self.head_dim).transpose(1, 2)
        q = apply_rotary(rms_norm(q), cos, sin) * self.q_gain.to(q.dtype)[None, :, None, None]
        if self.q_temp is not None:  # (H, D): temp[0] where positional, temp[1] elsewhere
            temp = torch.lerp(self.q_temp[1, :, None], self.q_temp[0, :, None], self.q_temp_pos)
            q = q * temp.to(q.dtype)[None, :, None, :]
        k = apply_rotary(rms_norm(k), cos, sin)
        y = self.kernel(q, k, v, mask)
        if self.xsa:
            y = exclusive_self_attention(y, v)
        if self.gate is not None:
            y = self.gate(x, y)
        return self.proj(y.transpose(1, 2).reshape(b, t, d))


class MLP(nn.Module):
    """relu2: relu(u)^2 (baseline); leaky_relu2: LeakyReLU(0.5)(u)^2 (records 2026-03-23);
    swiglu: proj(silu(gate x) * up x) (swapp1990). u = fc x; proj is zero-initialised."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.kind = cfg.mlp_activation
        if self.kind == "swiglu":
            self.gate = Linear(cfg.model_dim, cfg.mlp_hidden)
            self.up = Linear(cfg.model_dim, cfg.mlp_hidden)
        else:
            self.fc = Linear(cfg.model_dim, cfg.mlp_hidden)
        self.proj = Linear(cfg.mlp_hidden, cfg.model_dim)
        self.proj.zero_init = True

    def forward(self, x: Tensor) -> Tensor:
        if self.kind == "swiglu":
            return self.proj(F.silu(self.gate(x)) * self.up(x))
        u = self.fc(x)
        h = F.relu(u) if self.kind == "relu2" else F.leaky_relu(u, 0.5)
        return self.proj(h.square())


class Block(nn.Module):
    def __init__(
        self, cfg: ModelConfig, index: int = 0, xsa: bool = False, value_embed: bool = False
    ) -> None:
        super().__init__()
        # LN scale (records 2026-03-21): block i's normalised inputs x 1/sqrt(i+1)
        self.ln_mult = 1 / math.sqrt(index + 1) if cfg.ln_scale else 1.0
        self.norm_block = cfg.micronorm_channels if cfg.micronorm else 0
        self.attn = Attention(cfg, xsa, value_embed)
        self.mlp = MLP(cfg)
        self.attn_scale = nn.Parameter(torch.ones(cfg.model_dim))
        self.mlp_scale = nn.Parameter(torch.ones(cfg.model_dim))
        self.resid_mix = nn.Parameter(torch.stack((torch.ones(cfg.model_dim), torch.zeros(cfg.model_dim))))
        self.cpmr_gain = nn.Parameter(torch.zeros(cfg.model_dim)) if cfg.cpmr else None
        declare(self, attn_scale="control", mlp_scale="control", resid_mix="control", cpmr_gain="control")
        self.two_lane = bool(cfg.parallel_from) and index >= cfg.parallel_from
        if self.two_lane:  # PR #1529: post[i, j] = sub-layer i (attn, mlp) into lane j; resid[j] per lane
            self.lane_post = nn.Parameter(torch.ones(2, 2))
            self.lane_resid = nn.Parameter(torch.full((2,), cfg.parallel_resid_init))
            declare(self, lane_post="control", lane_resid="control")

    def norm(self, x: Tensor) -> Tensor:
        """A sub-layer's input: RMS-normalised (per channel block with MicroNorm), times the LN scale."""
        return (micro_norm(x, self.norm_block) if self.norm_block else rms_norm(x)) * self.ln_mult

    def forward(
        self,
        x: Tensor,
        x0: Tensor,
        cos: Tensor,
        sin: Tensor,
        ve: Tensor | None = None,
        mask: Tensor | None = None,
        starts: Tensor | None = None,
    ) -> Tensor:
        """``starts``: ``document_starts`` of the input ids (needed with CPMR)."""
        mix = self.resid_mix.to(x.dtype)
        x = mix[0] * x + mix[1] * x0
        if self.cpmr_gain is not None:
            x = x + self.cpmr_gain.to(x.dtype) * prefix_mean(x, starts)
        x = x + self.attn_scale.to(x.dtype) * self.attn(self.norm(x), cos, sin, ve, mask)
        return x + self.mlp_scale.to(x.dtype) * self.mlp(self.norm(x))

    def forward_lanes(
        self,
        lanes: tuple[Tensor, Tensor],
        x0: Tensor,
        cos: Tensor,
        sin: Tensor,
        ve: Tensor | None = None,
        mask: Tensor | None = None,
    ) -> tuple[Tensor, Tensor]:
        """Two-lane parallel residuals (PR #1529's final form): attention reads lane 0 mixed with x0,
        the MLP reads lane 1, both from the block's input (GPT-J style); lane j becomes
        resid[j] lane_j + post[0, j] attn + post[1, j] mlp."""
        lane0, lane1 = lanes
        mix, post, resid = (t.to(lane0.dtype) for t in (self.resid_mix, self.lane_post, self.lane_resid))
        a_in = mix[0] * lane0 + mix[1] * x0
        a = self.attn_scale.to(a_in.dtype) * self.attn(self.norm(a_in), cos, sin, ve, mask)
        m = self.mlp_scale.to(lane1.dtype) * self.mlp(self.norm(lane1))
        return (
            resid[0] * lane0 + post[0, 0] * a + post[1, 0] * m,
            resid[1] * lane1 + post[0, 1] * a + post[1, 1] * m,
        )
