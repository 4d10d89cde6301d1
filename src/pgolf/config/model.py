"""The model's schema: shape and every architectural technique (seed-techniques §5, §7)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from pgolf.checks import non_negative, positive
from pgolf.errors import ConfigError

MLP_ACTIVATIONS = ("relu2", "leaky_relu2", "swiglu")
ATTN_GATES = ("none", "output", "dense", "sparse")


@dataclass(frozen=True, kw_only=True)
class ModelConfig:
    SECTION: ClassVar[str] = "model"

    vocab_size: int = 1024
    """Rows of the token embedding; must be at least the tokenizer's vocabulary size."""
    num_layers: int = 9
    """Transformer blocks; the first half (rounded down) are U-Net encoders, the rest decoders."""
    model_dim: int = 512
    """Width of the residual stream."""
    num_heads: int = 8
    """Query heads; head_dim = model_dim / num_heads and must be even (RoPE)."""
    num_kv_heads: int = 4
    """Key/value heads (grouped-query attention); must divide num_heads."""
    mlp_mult: float = 2.0
    """MLP hidden width = int(mlp_mult * model_dim)."""
    tie_embeddings: bool = True
    """Use the token embedding as the output head."""
    rope_base: float = 10_000.0
    """RoPE base frequency."""
    logit_softcap: float = 30.0
    """Logits are c * tanh(z / c) with this c."""
    qk_gain_init: float = 1.5
    """Initial per-head gain applied to RMS-normalised queries."""
    tied_embed_init_std: float = 0.005
    """Std of the normal init of the (tied) token embedding."""
    mlp_activation: str = "relu2"
    """relu2 (relu(u)^2), leaky_relu2 (LeakyReLU(0.5)(u)^2) or swiglu (hidden = 2/3 of the width, rounded up
    to a multiple of 64, so parameters match relu2 at the same mlp_mult)."""
    smear_gate: bool = False
    """SmearGate: blend each position's normalised embedding with the previous one's (never across BOS)."""
    smear_gate_init: float = 0.0
    """Initial SmearGate logit g; the previous token's weight starts at sigmoid(g) (0.5 at g=0)."""
    bigram_buckets: int = 0
    """BigramHash buckets (0: off): a hashed (previous, current) token embedding added to the input."""
    bigram_dim: int = 128
    """Width of the BigramHash table before its projection to model_dim."""
    ortho_init: bool = False
    """Orthogonal init of non-zero-init Linears with both dims >= 64; '.proj' ones also x 1/sqrt(2L)."""
    xsa_last_n: int = 0
    """Exclusive self-attention in the last N layers: remove each output's component along its own value."""
    rope_dims: int = 0
    """Rotate only the first rope_dims of each head (0: all of head_dim)."""
    ln_scale: bool = False
    """Scale block i's normalised attention/MLP inputs by 1/sqrt(i+1)."""
    rope_ntk_seq_len: int = 0
    """If > 0, sequences longer than this rescale the RoPE base NTK-style: base * s^(d/(d-2)), s = T/this."""
    recurrent_blocks: int = 0
    """If > 0: this many unique blocks looped num_layers/recurrent_blocks times, with per-loop AdaLN."""
    loop_start: int = 0
    """First layer of the looped middle range [loop_start, loop_end) (used when loop_repeats > 0)."""
    loop_end: int = 0
    """End (exclusive) of the looped middle range."""
    loop_repeats: int = 0
    """Extra passes over [loop_start, loop_end) once looping is on (see train.loop_from_frac)."""
    skip_gates: bool = False
    """U-Net skip gates (PR #1394): x <- lerp(w * skip, x, sigmoid(g)), g per dimension, zero-initialised."""
    parallel_from: int = 0
    """Two-lane parallel residuals (PR #1529) in every block from this physical index on (0: off; after
    the loop, so both lanes never re-enter a single-lane block); the output is the lanes' mean."""
    parallel_resid_init: float = 1.1
    """Initial per-sub-layer scale of both lanes in a two-lane block (PR #1529: 1.1)."""
    attn_gate: str = "none"
    """Per-head attention output gate: none, output (2 sigmoid, PR #1667), dense (gated attention,
    PR #1736) or sparse (SparseAttnGate, PR #1787)."""
    attn_gate_dims: int = 12
    """Residual dims the output/sparse gates read (the first N)."""
    attn_gate_scale: float = 0.5
    """The sparse gate's logit scale s (PR #1855: 0.5)."""
    value_embed_dim: int = 0
    """Value embeddings (seed-techniques §7.10): a shared table of this width, projected to the KV
    width and added to v in the last value_embed_layers blocks (0: off)."""
    value_embed_layers: int = 2
    """Blocks (the last N) whose attention adds the value embedding."""
    smear_gate_window: int = 0
    """If > 0 with smear_gate: the input-dependent SmearGate of PR #1667 on the raw embedding,
    x_t + lambda sigmoid(W x_t[:window]) x_(t-1), never across BOS, lambda and W zero-initialised."""
    doc_mask: bool = False
    """Document-aware attention: no position attends across a BOS, in training and in scoring
    (per-document masks; FA3 varlen attention on the records' GPUs)."""
    logit_cap_asym: bool = False
    """Separate learnable caps for positive and negative logits (PR #1923), initialised to
    logit_softcap, frozen in training and adapted only by test-time SGD."""
    micronorm: bool = False
    """MicroNorm (seed 003's proposal): each block's attention and MLP inputs are
    RMS-normalised per block of micronorm_block channels instead of over the whole width, so no block
    of the stream can drown another's scale."""
    micronorm_block: int = 0
    """MicroNorm's channel block (0: head_dim, the attention's own grouping); must divide model_dim."""
    cpmr: bool = False
    """Causal prefix-mean residual (seed 003's proposal): in each block, after the x0 mix and before
    attention, every position adds a learned per-channel share (zero-initialised) of the mean of that
    stream at the positions before it in its document (never across a BOS)."""
    qk_temp_split: bool = False
    """Dichotomous attention temperature (seed 003's proposal): two learned temperatures per head, one
    on the query's positional channels (the rotated ones with partial RoPE, else the faster-rotating
    half of the pairs) and one on the rest, on top of the single per-head q-gain (which scales both alike)."""

    def __post_init__(self) -> None:
        positive(self, "vocab_size", "num_layers", "model_dim", "num_heads", "num_kv_heads")
        non_negative(self, "bigram_buckets", "xsa_last_n", "rope_dims", "rope_ntk_seq_len")
        non_negative(self, "recurrent_blocks", "loop_start", "loop_end", "loop_repeats")
        non_negative(self, "parallel_from", "value_embed_dim", "value_embed_layers", "smear_gate_window")
        non_negative(self, "micronorm_block")
        positive(self, "attn_gate_dims")
        self._check_layers()
        if self.attn_gate not in ATTN_GATES:
            raise ConfigError(f"model.attn_gate={self.attn_gate!r}; expected one of {ATTN_GATES}")
        if self.model_dim % self.num_heads:
            raise ConfigError(
                f"model.num_heads={self.num_heads} must divide model.model_dim={self.model_dim}"
            )
        if self.num_heads % self.num_kv_heads:
            raise ConfigError(
                f"model.num_kv_heads={self.num_kv_heads} must divide model.num_heads={self.num_heads}"
            )
        if (self.model_dim // self.num_heads) % 2:
            raise ConfigError(
                f"head_dim = model.model_dim/model.num_heads = {self.model_dim // self.num_heads} "
                "must be even for RoPE"
            )
        if self.micronorm and self.model_dim % self.micronorm_channels:
            raise ConfigError(
                f"model.micronorm_block={self.micronorm_channels} must divide "
                f"model.model_dim={self.model_dim}"
            )
        if self.micronorm_block and not self.micronorm:
            raise ConfigError("model.micronorm_block needs model.micronorm = true")
        if self.cpmr and self.parallel_from:
            raise ConfigError("model.cpmr cannot be combined with model.parallel_from (two-lane blocks)")
        if self.qk_temp_split and self.head_dim < 4:
            raise ConfigError(f"model.qk_temp_split needs head_dim >= 4, got {self.head_dim}")
        if self.vocab_size > 65_536:
            raise ConfigError(f"model.vocab_size={self.vocab_size} exceeds the uint16 shard format (65536)")
        if int(self.mlp_mult * self.model_dim) < 1:
            raise ConfigError(f"model.mlp_mult={self.mlp_mult} gives an empty MLP")
        if self.logit_softcap <= 0:
            raise ConfigError(f"model.logit_softcap must be > 0, got {self.logit_softcap}")
        if self.mlp_activation not in MLP_ACTIVATIONS:
            raise ConfigError(
                f"model.mlp_activation={self.mlp_activation!r}; expected one of {MLP_ACTIVATIONS}"
            )
        if self.bigram_buckets == 1 or (self.bigram_buckets and self.bigram_dim < 1):
            raise ConfigError("model.bigram_buckets must be 0 or >= 2, with model.bigram_dim >= 1")
        if self.rope_dims % 2 or self.rope_dims > self.head_dim:
            raise ConfigError(
                f"model.rope_dims={self.rope_dims} must be even and <= head_dim={self.head_dim}"
            )
        if self.rope_ntk_seq_len and self.rotary_dims <= 2:
            raise ConfigError("model.rope_ntk_seq_len needs more than 2 rotary dims (exponent d/(d-2))")

    def _check_layers(self) -> None:
        if self.xsa_last_n > self.num_layers:
            raise ConfigError(
                f"model.xsa_last_n={self.xsa_last_n} exceeds model.num_layers={self.num_layers}"
            )
        if self.recurrent_blocks and self.num_layers % self.recurrent_blocks:
            raise ConfigError(
                f"model.recurrent_blocks={self.recurrent_blocks} must divide "
                f"model.num_layers={self.num_layers}"
            )
        if self.loop_repeats:
            if not 0 <= self.loop_start < self.loop_end <= self.num_layers:
                raise ConfigError(
                    f"model.loop_start={self.loop_start} / model.loop_end={self.loop_end} must satisfy "
                    f"0 <= loop_start < loop_end <= model.num_layers={self.num_layers}"
                )
            if self.recurrent_blocks:
                raise ConfigError("model.loop_repeats and model.recurrent_blocks cannot be combined")
        if self.parallel_from:
            if self.recurrent_blocks or not self.num_layers // 2 <= self.parallel_from < self.num_layers:
                raise ConfigError(
                    f"model.parallel_from={self.parallel_from} must be a decoder layer, in "
                    f"[{self.num_layers // 2}, {self.num_layers}), and cannot be combined with "
                    "model.recurrent_blocks"
                )
            if self.loop_repeats and self.parallel_from < self.loop_end:
                raise ConfigError(
                    f"model.parallel_from={self.parallel_from} must be >= model.loop_end={self.loop_end}: "
                    "a looped block cannot run both single- and two-lane"
                )
        if self.smear_gate_window and not self.smear_gate:
            raise ConfigError("model.smear_gate_window needs model.smear_gate = true")
        if self.value_embed_dim and self.recurrent_blocks:
            raise ConfigError("model.value_embed_dim cannot be combined with model.recurrent_blocks")
        if self.value_embed_dim and self.value_embed_layers > self.num_layers:
            raise ConfigError(
                f"model.value_embed_layers={self.value_embed_layers} exceeds "
                f"model.num_layers={self.num_layers}"
            )

    @property
    def head_dim(self) -> int:
        return self.model_dim // self.num_heads

    @property
    def rotary_dims(self) -> int:
        return self.rope_dims or self.head_dim

    @property
    def micronorm_channels(self) -> int:
        return self.micronorm_block or self.head_dim

    @property
    def mlp_hidden(self) -> int:
        if self.mlp_activation == "swiglu":  # seed-techniques §7.2: parameter-matched to relu^2
            return -(-int(2 * self.mlp_mult * self.model_dim / 3) // 64) * 64
        return int(self.mlp_mult * self.model_dim)
