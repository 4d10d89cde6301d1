"""Typed, frozen run configuration.

One ``@dataclass(frozen=True, kw_only=True)`` per concern, composed into ``RunConfig``. Every field
carries an attribute docstring (read by :func:`field_docs` for ``--help``); cross-field checks live
in ``__post_init__`` and raise ``ValueError`` naming the field. Defaults reproduce the contest's
naive baseline (seed-techniques §5). Overrides are dotted keys: ``model.num_layers=11``.
"""

from __future__ import annotations

import ast
import dataclasses
import difflib
import inspect
import itertools
import json
import textwrap
import types
import typing
from dataclasses import dataclass, field
from functools import cache
from typing import Any

from pgolf.tracks import ConfigError, get_track

MLP_ACTIVATIONS = ("relu2", "leaky_relu2", "swiglu")
AVERAGING = ("none", "ema", "swa")


@dataclass(frozen=True, kw_only=True)
class ModelConfig:
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

    def __post_init__(self) -> None:
        _positive(self, "vocab_size", "num_layers", "model_dim", "num_heads", "num_kv_heads")
        _non_negative(self, "bigram_buckets", "xsa_last_n", "rope_dims", "rope_ntk_seq_len")
        _non_negative(self, "recurrent_blocks", "loop_start", "loop_end", "loop_repeats")
        self._check_layers()
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

    @property
    def head_dim(self) -> int:
        return self.model_dim // self.num_heads

    @property
    def rotary_dims(self) -> int:
        return self.rope_dims or self.head_dim

    @property
    def mlp_hidden(self) -> int:
        if self.mlp_activation == "swiglu":  # seed-techniques §7.2: parameter-matched to relu^2
            return -(-int(2 * self.mlp_mult * self.model_dim / 3) // 64) * 64
        return int(self.mlp_mult * self.model_dim)


@dataclass(frozen=True, kw_only=True)
class DataConfig:
    root: str = ""
    """Data root; empty means $PGOLF_DATA, else ./data. Relative dataset/tokenizer paths resolve here."""
    dataset: str = "datasets/fineweb10B_sp1024"
    """Folder with the train and val shards (contest layout)."""
    tokenizer: str = "tokenizers/fineweb_1024_bpe.model"
    """SentencePiece model used to build the byte tables for val_bpb."""
    train_pattern: str = "fineweb_train_*.bin"
    """Glob of training shards inside the dataset folder, read in sorted order."""
    val_pattern: str = "fineweb_val_*.bin"
    """Glob of validation shards inside the dataset folder."""


@dataclass(frozen=True, kw_only=True)
class TrainConfig:
    seq_len: int = 1024
    """Training sequence length in tokens."""
    batch_tokens: int = 524_288
    """Tokens per optimizer step, summed over all ranks and micro-batches."""
    microbatches: int = 8
    """Micro-batches per step over all ranks; each rank accumulates microbatches / world_size."""
    iterations: int = 20_000
    """Maximum optimizer steps."""
    max_wallclock_seconds: float = 600.0
    """Training-time cap in seconds (validation excluded); 0 disables it."""
    warmup_steps: int = 20
    """Untimed priming steps (torch.compile warm-up) whose effect is undone before timing starts."""
    val_every: int = 1000
    """Validate every N steps (0: only at the end)."""
    log_every: int = 200
    """Log the train loss every N steps."""
    seed: int = 1337
    """Seed of the model initialisation (the data order does not depend on it)."""
    checkpoint_every: int = 0
    """Write a resumable checkpoint every N steps (0: never)."""
    compile: bool = True
    """torch.compile the model and Newton-Schulz on CUDA (ignored on CPU, which runs eager)."""
    device: str = "auto"
    """auto (CUDA if available), cuda or cpu."""
    loop_from_frac: float = 0.0
    """Fraction of the run (wall clock, else steps) after which the model's middle-range loop turns on."""
    averaging: str = "none"
    """Weight averaging applied to the exported weights: none, ema or swa."""
    ema_decay: float = 0.997
    """EMA: ema <- d * ema + (1 - d) * w after every step (fp32 shadow)."""
    swa_every: int = 50
    """SWA: add a snapshot every N steps once the LR multiplier is below swa_start_lr_mul."""
    swa_start_lr_mul: float = 0.5
    """SWA collects only while the LR multiplier is below this (the second half of the warmdown at 0.5)."""

    def __post_init__(self) -> None:
        _positive(self, "seq_len", "batch_tokens", "microbatches", "iterations")
        _non_negative(self, "max_wallclock_seconds", "warmup_steps", "val_every", "log_every")
        _non_negative(self, "checkpoint_every")
        if self.device not in ("auto", "cpu", "cuda"):
            raise ConfigError(f"train.device={self.device!r}; expected auto, cpu or cuda")
        if self.averaging not in AVERAGING:
            raise ConfigError(f"train.averaging={self.averaging!r}; expected one of {AVERAGING}")
        if not 0.0 <= self.loop_from_frac <= 1.0 or not 0.0 < self.ema_decay < 1.0:
            raise ConfigError("train.loop_from_frac must be in [0, 1] and train.ema_decay in (0, 1)")
        _positive(self, "swa_every")
        if self.batch_tokens % (self.microbatches * self.seq_len):
            raise ConfigError(
                f"train.batch_tokens={self.batch_tokens} must be a multiple of "
                f"train.microbatches * train.seq_len = {self.microbatches * self.seq_len}"
            )


@dataclass(frozen=True, kw_only=True)
class OptimConfig:
    matrix_lr: float = 0.04
    """Muon learning rate for the 2-D block matrices."""
    scalar_lr: float = 0.04
    """Adam learning rate for vectors, scalars and control tensors."""
    tied_embed_lr: float = 0.05
    """Adam learning rate of the embedding when it is tied to the head."""
    embed_lr: float = 0.6
    """Adam learning rate of the embedding when untied."""
    head_lr: float = 0.008
    """Adam learning rate of the untied output head."""
    beta1: float = 0.9
    """Adam beta1."""
    beta2: float = 0.95
    """Adam beta2."""
    adam_eps: float = 1e-8
    """Adam epsilon."""
    muon_momentum: float = 0.95
    """Muon momentum after warm-up."""
    muon_momentum_warmup_start: float = 0.85
    """Muon momentum at step 0, raised linearly to muon_momentum."""
    muon_momentum_warmup_steps: int = 500
    """Steps of the Muon momentum warm-up."""
    muon_backend_steps: int = 5
    """Newton-Schulz iterations."""
    grad_clip_norm: float = 0.0
    """Global L2 gradient clip (0: off)."""
    muon_weight_decay: float = 0.0
    """Decoupled weight decay of Muon matrices: W <- W (1 - lr_t * wd) before each update."""
    adam_weight_decay: float = 0.0
    """Decoupled (AdamW) weight decay of the embedding, head and scalar groups."""
    warmdown_iters: int = 1200
    """Linear LR decay to 0 over the last N steps (in wall-clock mode: N times the mean step time)."""
    warmdown_frac: float = 0.0
    """If > 0, decay over this fraction of the budget (time or steps) instead of warmdown_iters."""

    def __post_init__(self) -> None:
        _non_negative(self, "warmdown_iters", "grad_clip_norm", "muon_momentum_warmup_steps")
        _non_negative(self, "muon_weight_decay", "adam_weight_decay")
        _positive(self, "muon_backend_steps")
        if not 0.0 <= self.warmdown_frac <= 1.0:
            raise ConfigError(f"optim.warmdown_frac must be in [0, 1], got {self.warmdown_frac}")
        for name in ("muon_momentum", "muon_momentum_warmup_start", "beta1", "beta2"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ConfigError(f"optim.{name} must be in [0, 1), got {getattr(self, name)}")


@dataclass(frozen=True, kw_only=True)
class EvalConfig:
    batch_tokens: int = 524_288
    """Validation tokens per forward batch, summed over ranks."""
    seq_len: int = 0
    """Evaluation window length (0: the training sequence length)."""

    def __post_init__(self) -> None:
        _positive(self, "batch_tokens")
        _non_negative(self, "seq_len")


COMPRESSORS = ("zlib",)


@dataclass(frozen=True, kw_only=True)
class ExportConfig:
    compressor: str = "zlib"
    """Compressor of the artifact payload."""
    level: int = 9
    """Compression level."""
    keep_float_max_numel: int = 65_536
    """Float tensors with at most this many elements are stored unquantised (fp16, or fp32 for
    control tensors)."""
    clip_quantile: float = 0.9999984
    """Per-row quantile of |w| used as the int8 clip value (seed-techniques §9.1)."""

    def __post_init__(self) -> None:
        if self.compressor not in COMPRESSORS:
            raise ConfigError(f"export.compressor={self.compressor!r}; expected one of {COMPRESSORS}")
        if not 0.0 < self.clip_quantile <= 1.0:
            raise ConfigError(f"export.clip_quantile must be in (0, 1], got {self.clip_quantile}")


@dataclass(frozen=True, kw_only=True)
class RunConfig:
    preset: str = "baseline"
    """Name of the preset this config came from (informational)."""
    track: str = "10min-16mb"
    """Track whose caps the run is judged by."""
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    export: ExportConfig = field(default_factory=ExportConfig)

    def __post_init__(self) -> None:
        get_track(self.track)

    @property
    def eval_seq_len(self) -> int:
        return self.eval.seq_len or self.train.seq_len

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)


SECTIONS = ("model", "data", "train", "optim", "eval", "export")


def config_from_dict(d: dict[str, Any]) -> RunConfig:
    """Inverse of ``RunConfig.to_dict``; unknown keys are errors."""
    section_types = {f.name: f.type for f in dataclasses.fields(RunConfig)}
    kwargs: dict[str, Any] = {}
    for key, value in d.items():
        if key not in section_types:
            raise ConfigError(f"unknown config key {key!r}")
        if key in SECTIONS:
            cls = _section_class(key)
            known = {f.name for f in dataclasses.fields(cls)}
            extra = set(value) - known
            if extra:
                raise ConfigError(f"unknown config keys in {key}: {sorted(extra)}")
            kwargs[key] = cls(**value)
        else:
            kwargs[key] = value
    return RunConfig(**kwargs)


def _section_class(name: str) -> type:
    hints = typing.get_type_hints(RunConfig)
    return hints[name]


def all_fields() -> list[str]:
    """Every dotted config key, in declaration order."""
    out = []
    for f in dataclasses.fields(RunConfig):
        if f.name in SECTIONS:
            out += [f"{f.name}.{g.name}" for g in dataclasses.fields(_section_class(f.name))]
        else:
            out.append(f.name)
    return out


def field_type(key: str) -> type:
    section, _, name = key.rpartition(".")
    cls = _section_class(section) if section else RunConfig
    hint = typing.get_type_hints(cls)[name]
    if isinstance(hint, types.UnionType):
        raise TypeError(f"unsupported union type for {key}")
    return hint


def parse_value(key: str, text: str) -> Any:
    """Parse ``text`` as the declared type of config field ``key``."""
    kind = field_type(key)
    try:
        if kind is bool:
            low = text.strip().lower()
            if low in ("1", "true", "yes", "on"):
                return True
            if low in ("0", "false", "no", "off"):
                return False
            raise ValueError(text)
        if kind is int:
            return int(text.replace("_", ""))
        if kind is float:
            return float(text)
        return kind(text)
    except ValueError:
        raise ConfigError(f"--{key}: expected {kind.__name__}, got {text!r}") from None


def apply_overrides(cfg: RunConfig, overrides: dict[str, Any]) -> RunConfig:
    """Return ``cfg`` with dotted keys replaced; string values are parsed as the field's type."""
    keys = all_fields()
    per_section: dict[str, dict[str, Any]] = {}
    top: dict[str, Any] = {}
    for key, value in overrides.items():
        if key not in keys:
            close = difflib.get_close_matches(key, keys, n=3)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise ConfigError(f"unknown config key {key!r}{hint}")
        if isinstance(value, str) and field_type(key) is not str:
            value = parse_value(key, value)
        section, _, name = key.rpartition(".")
        if section:
            per_section.setdefault(section, {})[name] = value
        else:
            top[name] = value
    for section, values in per_section.items():
        top[section] = dataclasses.replace(getattr(cfg, section), **values)
    return dataclasses.replace(cfg, **top)


@cache
def _class_field_docs(cls: type) -> dict[str, str]:
    tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    body = tree.body[0].body  # type: ignore[attr-defined]
    docs: dict[str, str] = {}
    for prev, node in itertools.pairwise(body):
        if (
            isinstance(prev, ast.AnnAssign)
            and isinstance(prev.target, ast.Name)
            and isinstance(node, ast.Expr)
            and isinstance(node.value, ast.Constant)
            and isinstance(node.value.value, str)
        ):
            docs[prev.target.id] = " ".join(node.value.value.split())
    return docs


def field_docs() -> dict[str, str]:
    """Dotted key -> attribute docstring, for --help."""
    out = {}
    for key in all_fields():
        section, _, name = key.rpartition(".")
        cls = _section_class(section) if section else RunConfig
        out[key] = _class_field_docs(cls).get(name, "")
    return out


def format_config(cfg: RunConfig) -> str:
    """``key: value`` lines, one per dotted field (the log's Hyperparameters block)."""
    lines = []
    for key in all_fields():
        section, _, name = key.rpartition(".")
        obj = getattr(cfg, section) if section else cfg
        lines.append(f"{key}: {getattr(obj, name)}")
    return "\n".join(lines)


def _positive(obj: Any, *names: str) -> None:
    for name in names:
        if getattr(obj, name) <= 0:
            raise ConfigError(f"{_section_of(obj)}.{name} must be > 0, got {getattr(obj, name)}")


def _non_negative(obj: Any, *names: str) -> None:
    for name in names:
        if getattr(obj, name) < 0:
            raise ConfigError(f"{_section_of(obj)}.{name} must be >= 0, got {getattr(obj, name)}")


def _section_of(obj: Any) -> str:
    return {
        ModelConfig: "model",
        DataConfig: "data",
        TrainConfig: "train",
        OptimConfig: "optim",
        EvalConfig: "eval",
        ExportConfig: "export",
    }.get(type(obj), type(obj).__name__)
