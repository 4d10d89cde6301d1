"""The training run's schema: batch, length, caps, checkpoints, weight averaging."""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from functools import cached_property
from typing import ClassVar

from pgolf.checks import non_negative, positive
from pgolf.errors import ConfigError

AVERAGING = ("none", "ema", "swa")


LOADERS = ("stream", "coprime")
"""Training batch orders (``data.loader``)."""


@dataclass(frozen=True, kw_only=True)
class TrainConfig:
    SECTION: ClassVar[str] = "train"

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
    val_every: int = 0
    """Validate every N steps (0: only at the end). Each pass scores the whole validation set, minutes
    of paid time on FineWeb, so no preset asks for it (the contest's baseline script did every 1000)."""
    windows_diagnostic: str = "auto"
    """When the evaluation method adapts (TTT, experts): also score the round trip with its window plan
    alone, off the eval clock, for the quantisation gap (on, off; auto: on except on the contest track,
    where it is a second full pass of paid time)."""
    log_every: int = 200
    """Log the train loss every N steps."""
    seed: int = 1337
    """Seed of the model initialisation (the data order does not depend on it)."""
    checkpoint_every: int = 0
    """Write a resumable checkpoint every N steps (0: never)."""
    compile: bool = True
    """torch.compile the model and Newton-Schulz on CUDA (on a CPU only with compile_cpu)."""
    compile_cpu: bool = False
    """With compile: torch.compile on a CPU device too (inductor's C++ backend: needs a C++ compiler).
    cpu-best on 2 cores: 1.1-1.2x the eager steps in 300 s (benchmarks/RESULTS.md) after 40-70 s of
    compiling per graph, which warmup_steps should cover (one step per phase of the run)."""
    cpu_bf16: bool = False
    """bf16 autocast of the training steps on a CPU too, where the CPU has AMX (else fp32, with a log
    line): on the 2-core Sapphire Rapids VM, 1.3x cpu-best's compiled steps side by side, 1.15x over a
    300 s run; width 256 at 1.1-1.3x the step of 192 (fp32: 1.6x). Evaluation stays fp32 on a CPU."""
    device: str = "auto"
    """auto (CUDA if available), cuda or cpu."""
    attention: str = "auto"
    """Attention kernel, chosen once and logged (model/kernels.py): auto, fa3, flash, efficient or math;
    auto is FlashAttention-3 on a Hopper GPU where it is installed, else SDPA's flash kernel (its
    memory-efficient one with model.doc_mask). A call the chosen kernel cannot run raises."""
    loop_from_frac: float = 0.0
    """Fraction of the run (wall clock, else steps) after which the model's middle-range loop turns on."""
    loop_pass_fracs: str = ""
    """Progressive recurrence (PR #1412): comma-separated fractions at which extra passes 1, 2, ... of the
    loop turn on, one per model.loop_repeats (e.g. "0.5,0.65"); empty: all at loop_from_frac."""
    seq_len_schedule: str = ""
    """Progressive context (PR #2014): "LEN:UNTIL,..." trains at LEN until that fraction of the run, then
    the next, then at seq_len (e.g. "1024:0.1,2048:0.7" with seq_len 3072); empty: seq_len throughout."""
    loader: str = "stream"
    """Training batches: stream (the contest's: shards in order, contiguous) or coprime (blocks of
    seq_len + 1 from every shard by a coprime stride: each read once before any repeats, neighbours
    from far apart; sota-stack §2.1)."""
    averaging: str = "none"
    """Weight averaging applied to the exported weights: none, ema or swa."""
    ema_decay: float = 0.997
    """EMA: ema <- d * ema + (1 - d) * w after every step (fp32 shadow)."""
    swa_every: int = 50
    """SWA: add a snapshot every N steps once the LR multiplier is below swa_start_lr_mul."""
    swa_start_lr_mul: float = 0.5
    """SWA collects only while the LR multiplier is below this (the second half of the warmdown at 0.5)."""

    def __post_init__(self) -> None:
        positive(self, "seq_len", "batch_tokens", "microbatches", "iterations")
        non_negative(self, "max_wallclock_seconds", "warmup_steps", "val_every", "log_every")
        non_negative(self, "checkpoint_every")
        if self.device not in ("auto", "cpu", "cuda"):
            raise ConfigError(f"train.device={self.device!r}; expected auto, cpu or cuda")
        if self.windows_diagnostic not in ("auto", "on", "off"):
            raise ConfigError(
                f"train.windows_diagnostic={self.windows_diagnostic!r}; expected auto, on or off"
            )
        if self.loader not in LOADERS:
            raise ConfigError(f"train.loader={self.loader!r}; expected one of {LOADERS}")
        if self.averaging not in AVERAGING:
            raise ConfigError(f"train.averaging={self.averaging!r}; expected one of {AVERAGING}")
        if not 0.0 <= self.loop_from_frac <= 1.0 or not 0.0 < self.ema_decay < 1.0:
            raise ConfigError("train.loop_from_frac must be in [0, 1] and train.ema_decay in (0, 1)")
        positive(self, "swa_every")
        fracs = self.pass_fracs  # parses and checks
        if any(b < a for a, b in itertools.pairwise(fracs)):
            raise ConfigError(f"train.loop_pass_fracs={self.loop_pass_fracs!r} must be non-decreasing")
        for length, _ in self.seq_schedule:
            if self.batch_tokens % (self.microbatches * length):
                raise ConfigError(
                    f"train.batch_tokens={self.batch_tokens} must be a multiple of "
                    f"train.microbatches * {length} = {self.microbatches * length} "
                    f"(train.seq_len / train.seq_len_schedule)"
                )

    @cached_property
    def pass_fracs(self) -> tuple[float, ...]:
        """train.loop_pass_fracs parsed: one fraction in [0, 1] per extra pass."""
        return tuple(_fraction("train.loop_pass_fracs", f) for f in _items(self.loop_pass_fracs))

    @cached_property
    def seq_schedule(self) -> tuple[tuple[int, float], ...]:
        """(length, until fraction) pairs, ending with (seq_len, 1.0) (``train.schedule`` follows them)."""
        pairs = []
        for item in _items(self.seq_len_schedule):
            length, sep, until = item.partition(":")
            if not sep or not length.strip().isdigit() or int(length) < 1:
                raise ConfigError(f"train.seq_len_schedule item {item!r}: expected LEN:UNTIL, e.g. 1024:0.1")
            pairs.append((int(length), _fraction("train.seq_len_schedule", until)))
        if any(b[1] <= a[1] for a, b in itertools.pairwise(pairs)) or any(u >= 1.0 for _, u in pairs):
            raise ConfigError(
                f"train.seq_len_schedule={self.seq_len_schedule!r}: fractions must increase and stay "
                "below 1 (train.seq_len follows the last)"
            )
        return (*pairs, (self.seq_len, 1.0))


def _items(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def _fraction(field: str, text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ConfigError(f"{field}: {text.strip()!r} is not a number") from None
    if not 0.0 <= value <= 1.0:
        raise ConfigError(f"{field}: {value} must be in [0, 1]")
    return value
