"""The evaluation's schema: the window plan, test-time training, eval-time experts and the tilt."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import ClassVar

from pgolf.config.base import non_negative, positive
from pgolf.errors import ConfigError

METHODS = ("plain", "sliding", "docs")
TTT_KINDS = ("none", "sgd", "lora")
EXPERTS = ("ngram", "match", "bigram")
LORA_TARGETS = ("q", "k", "v", "o", "head")
PLUGINS = ("pgolf.eval.ttt", "pgolf.eval.lora", "pgolf.eval.mixture", "pgolf.eval.leak")
"""Optional evaluation modules, loaded by name (``eval.methods.plugin``) and counted only in a config
that uses them (``plugin_modules``)."""


@dataclass(frozen=True, kw_only=True)
class EvalConfig:
    SECTION: ClassVar[str] = "eval"

    batch_tokens: int = 524_288
    """Validation tokens per forward batch, summed over ranks."""
    seq_len: int = 0
    """Evaluation window length (0: the training sequence length)."""
    method: str = "plain"
    """plain (the contest's non-overlapping windows; the tail is not scored), sliding (windows
    every eval.stride tokens, each scoring its last stride targets with the rest as context) or docs
    (sliding windows inside each document: context never crosses a BOS)."""
    stride: int = 64
    """Sliding and docs windows: tokens between window starts (1 to the window length); with
    eval.ttt=lora, the chunk each adapter step scores and then learns from."""
    val_docs: int = 0
    """If > 0, score only the first N validation documents, for quick local iteration: the score is
    labelled unofficial everywhere and ``pgolf check`` refuses it (0: the whole set, the only
    official score). The artifact's own eval settings always keep 0."""
    ntk_seq_len: int = 0
    """If > 0, windows longer than this rescale the RoPE base NTK-style (evaluating past the trained
    length); 0 keeps the artifact's own model.rope_ntk_seq_len."""

    ttt: str = "none"
    """Score-first test-time training: none, sgd (chunked full-weight SGD, persisting over the
    stream) or lora (per-document batched LoRA adapters, reset per batch; needs eval.method=docs)."""
    ttt_lr: float = 0.0
    """TTT learning rate (0: the method's default, sgd 0.002 (cosine over chunks), lora 0.01)."""
    sgd_chunk_tokens: int = 32_768
    """SGD TTT: targets per chunk; each chunk is scored, then trained on (the last one never)."""
    sgd_epochs: int = 3
    """SGD TTT: passes over each scored chunk."""
    sgd_momentum: float = 0.9
    """SGD TTT: momentum of the SGD optimiser."""
    sgd_batch_seqs: int = 32
    """SGD TTT: sequences (of eval.seq_len) per step, over all ranks."""
    sgd_freeze_blocks: int = 0
    """SGD TTT: the first N blocks (and the embeddings with them, when N > 0) stay frozen."""
    sgd_clip: float = 1.0
    """SGD TTT: gradient-norm clip (0: none)."""
    lora_rank: int = 8
    """LoRA TTT: rank r of each adapter."""
    lora_targets: str = "q,v,head"
    """LoRA TTT: comma list of q, k, v, o (attention projections of every block) and head."""
    lora_alpha: float = 0.0
    """LoRA TTT: scale each delta by alpha/rank (0: unscaled, as the seed records)."""
    lora_batch_docs: int = 64
    """LoRA TTT: documents adapted side by side (one adapter each)."""
    lora_beta1: float = 0.9
    """LoRA TTT: Adam beta1 (the frontier uses 0)."""
    lora_beta2: float = 0.95
    """LoRA TTT: Adam beta2."""
    lora_wd: float = 0.0
    """LoRA TTT: AdamW weight decay of the adapters."""
    lora_warm_a: bool = False
    """LoRA TTT: keep the A matrices across document batches (only B is reset; frontier warm start)."""

    lora_phase_docs: int = 0
    """LoRA TTT with phased global SGD (sota-stack §2.6): the base weights also train on the first N
    documents of the stream, once they are scored (0: off). Phases follow the stream: every
    document after a phase is scored with the base weights it trained."""
    lora_phases: int = 1
    """Phased global SGD: pauses at equal shares of the first lora_phase_docs documents; each trains
    one epoch on the documents scored since the previous pause."""
    lora_phase_lr: float = 0.001
    """Phased global SGD: learning rate, cosine over each phase's steps (SGD with eval.sgd_momentum,
    clip eval.sgd_clip, the first eval.sgd_freeze_blocks blocks frozen; a step takes
    eval.sgd_batch_seqs pieces of at most eval.seq_len tokens, none crossing a document)."""

    experts: str = ""
    """Eval-time experts mixed with the model, learning from scored tokens only: comma list of
    ngram (PPM-style backoff), match (longest suffix match) and bigram; empty for none."""
    mix: str = "linear"
    """How experts are pooled: linear (sum of w_i p_i) or log (softmax of sum w_i log p_i)."""
    mix_rule: str = "bayes"
    """How the mixer's weights learn after each scored target y: bayes (the seed's exponential
    weights, w_i <- w_i * p_i(y)^eta: they converge on the best single expert) or eg (exponentiated
    gradient, w_i <- w_i * exp(mix_lr * p_i(y) / P(y)): they converge on the best mixture)."""
    mix_eta: float = 1.0
    """Exponential-weights learning rate (mix_rule=bayes): w_i <- w_i * p_i(y)^eta."""
    mix_lr: float = 0.005
    """Exponentiated-gradient learning rate (mix_rule=eg)."""
    mix_floor: float = 0.01
    """Each mixer weight is floored at this before renormalising (fixed-share-like switching)."""
    mix_fixed_share: bool = False
    """Normalise the updated weights before flooring them (fixed share); the seed floors the raw
    products, which resets every weight to the floor after a target all experts found unlikely."""
    ngram_order: int = 6
    """N-gram expert: contexts of 0 .. order-1 tokens."""
    ngram_alpha: float = 0.0
    """N-gram expert: PPM escape mass alpha (0: order/2)."""
    tilt: bool = False
    """Causal token n-gram tilt: boost the hinted token's logit by tilt_beta, renormalised."""
    tilt_order: int = 16
    """Tilt: tokens of context whose earlier continuations give the hint."""
    tilt_threshold: float = 0.8
    """Tilt: hint only when the context's most frequent next token has at least this share."""
    tilt_beta: float = 2.625
    """Tilt: logit boost of the hinted token."""
    val_leak: bool = False
    """Allow methods that read validation targets (NOT compliant; never in a preset; ``pgolf
    check`` fails any record that sets it). Required by eval.correction_bytes."""
    correction_bytes: int = 0
    """The seeds' error-correction table (seed-techniques §13): score the validation set once, store
    the worst-scored targets in a table of at most this many bytes, counted in the artifact, and
    boost them by correction_boost when scoring. A validation leak: needs eval.val_leak."""
    correction_boost: float = 20.0
    """Correction table: logit boost of a stored target (after the softcap)."""

    def __post_init__(self) -> None:
        positive(self, "batch_tokens", "stride", "sgd_chunk_tokens", "sgd_epochs", "sgd_batch_seqs")
        positive(self, "lora_rank", "lora_batch_docs", "mix_eta", "mix_lr", "ngram_order", "tilt_order")
        positive(self, "lora_phases", "lora_phase_lr")
        non_negative(self, "lora_phase_docs")
        non_negative(self, "seq_len", "ntk_seq_len", "ttt_lr", "sgd_momentum", "sgd_freeze_blocks")
        non_negative(self, "sgd_clip", "lora_alpha", "lora_wd", "ngram_alpha", "tilt_beta")
        non_negative(self, "correction_bytes", "correction_boost", "val_docs")
        if self.correction_bytes and self.val_leak is not True:
            raise ConfigError(
                "eval.correction_bytes: the correction table stores validation targets; it runs only "
                "with eval.val_leak=true (pgolf eval --val-leak), is never official and fails pgolf check"
            )
        for name, value, allowed in (
            ("method", self.method, METHODS),
            ("ttt", self.ttt, TTT_KINDS),
            ("mix", self.mix, ("linear", "log")),
            ("mix_rule", self.mix_rule, ("bayes", "eg")),
        ):
            if value not in allowed:
                raise ConfigError(f"eval.{name}={value!r}; expected one of {', '.join(allowed)}")
        if not math.isfinite(self.mix_lr):
            raise ConfigError(f"eval.mix_lr must be finite, got {self.mix_lr}")
        if self.mix_rule == "eg" and (self.mix != "linear" or self.mix_fixed_share):
            raise ConfigError(
                "eval.mix_rule=eg is the linear pool's gradient and always normalises: it takes "
                "eval.mix=linear and eval.mix_fixed_share=false"
            )
        for name, items, allowed in (
            ("experts", self.expert_list, EXPERTS),
            ("lora_targets", self.lora_target_list, LORA_TARGETS),
        ):
            bad = [x for x in items if x not in allowed] or (len(set(items)) < len(items) and ["(repeated)"])
            if bad:
                raise ConfigError(f"eval.{name}={getattr(self, name)!r}: {bad[0]} is not one of {allowed}")
        if self.method != "plain" and self.seq_len and self.stride > self.seq_len:
            raise ConfigError(f"eval.stride={self.stride} is longer than eval.seq_len={self.seq_len}")
        if self.ttt == "lora" and self.method != "docs":
            raise ConfigError("eval.ttt=lora adapts per document: it needs eval.method=docs")
        if self.ttt == "lora" and self.expert_list and self.mix != "linear":
            raise ConfigError(
                "eval.experts with eval.ttt=lora mix in a stream-order pass after scoring (LoRA scores "
                "documents in batches), which keeps each target's probability only: eval.mix=linear"
            )
        if self.lora_phase_docs and self.ttt != "lora":
            raise ConfigError("eval.lora_phase_docs: phased global SGD runs inside LoRA TTT (eval.ttt=lora)")
        if self.ttt == "lora" and not self.lora_target_list:
            raise ConfigError("eval.lora_targets is empty: name at least one of q, k, v, o, head")
        if not 0 < self.mix_floor < 1 or not 0 < self.tilt_threshold <= 1:
            raise ConfigError("eval.mix_floor must be in (0, 1) and eval.tilt_threshold in (0, 1]")
        for name in ("lora_beta1", "lora_beta2"):
            if not 0 <= getattr(self, name) < 1:
                raise ConfigError(f"eval.{name}={getattr(self, name)} must be in [0, 1)")

    @property
    def expert_list(self) -> list[str]:
        return [x.strip() for x in self.experts.split(",") if x.strip()]

    @property
    def lora_target_list(self) -> list[str]:
        return [x.strip() for x in self.lora_targets.split(",") if x.strip()]

    @property
    def adapts(self) -> bool:
        """Whether anything learns during the evaluation (TTT, experts, tilt)."""
        return self.ttt != "none" or bool(self.expert_list) or self.tilt

    @property
    def tag(self) -> str:
        """The method in a score's label: empty for plain without anything else, e.g. ``sliding64``,
        ``docs48_lora``, ``sliding256_sgd_ngram+match-linear_tilt``."""
        parts = [] if self.method == "plain" else [f"{self.method}{self.stride}"]
        if self.ntk_seq_len:
            parts.append(f"ntk{self.ntk_seq_len}")
        if self.ttt != "none":
            parts.append(self.ttt + ("-warm" if self.ttt == "lora" and self.lora_warm_a else ""))
            if self.ttt == "lora" and self.lora_phase_docs:
                parts[-1] += f"-phased{self.lora_phases}x{self.lora_phase_docs}"
        if self.expert_list:
            parts.append(
                "+".join(self.expert_list)
                + f"-{self.mix}"
                + ("-share" if self.mix_fixed_share else "")
                + ("-eg" if self.mix_rule == "eg" else "")
            )
        if self.tilt:
            parts.append("tilt")
        if self.correction_bytes:
            parts.append("val_leak_correction")
        if parts and self.method == "plain":
            parts.insert(0, "plain")
        return "_".join(parts)

    @property
    def windows_only(self) -> EvalConfig:
        """The same window plan with nothing adapting: what the pre-quant score of a run measures,
        so the quantisation gap compares like with like."""
        return dataclasses.replace(
            self, ttt="none", lora_phase_docs=0, experts="", tilt=False, correction_bytes=0, val_leak=False
        )

    @property
    def plugin_modules(self) -> tuple[str, ...]:
        """The optional eval modules this config runs: counted code includes them only when used
        (``pack.size.counted_modules``), so a submission's bytes are the code it runs."""
        needed = {
            "pgolf.eval.ttt": self.ttt == "sgd",
            "pgolf.eval.lora": self.ttt == "lora",
            "pgolf.eval.mixture": bool(self.expert_list) or self.tilt,
            "pgolf.eval.leak": bool(self.correction_bytes),
        }
        return tuple(name for name, used in needed.items() if used)

    def settings(self) -> dict:
        """Every field that changes a score but batch_tokens and val_docs (which changes the data,
        not the method, and makes any score unofficial): two evaluations with equal settings on the
        same artifact and data are the same method."""
        return {k: v for k, v in dataclasses.asdict(self).items() if k not in ("batch_tokens", "val_docs")}
