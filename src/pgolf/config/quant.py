"""The quantisation schema: which storage format each tensor role gets, the clip rule, GPTQ and QAT
(seed-techniques §9, sota-stack §2.5)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from pgolf.checks import non_negative, positive
from pgolf.errors import ConfigError

FORMATS = ("fp32", "fp16", "int8-contest", "int8", "int7", "int6", "int5", "int4")
CLIPS = ("percentile", "max", "search", "sdclip")
ALLOCS = ("role", "fisher")
QAT_SCOPES = ("all", "shared")


@dataclass(frozen=True, kw_only=True)
class QuantConfig:
    SECTION: ClassVar[str] = "quant"

    matrix: str = "int8-contest"
    """Format of the 2-D block weights outside the MLP (attention, BigramHash projection): fp32, fp16,
    int8-contest (the contest's exact int8), or int8/int7/int6/int5/int4 (symmetric per-row grids)."""
    mlp: str = ""
    """Format of the MLP matrices ('' = the matrix format)."""
    embed: str = "int8-contest"
    """Format of the token embedding, the BigramHash table and an untied head."""
    clip: str = "percentile"
    """Row clip of the intN grids: percentile (clip_quantile of |w|), max, search (GPTQ-lite: per row, the
    candidate quantile with the least squared error) or sdclip (clip_k x the row's RMS)."""
    clip_quantile: float = 0.9999984
    """Quantile of |w| used as the clip by int8-contest and by the percentile rule."""
    clip_k: float = 12.85
    """SDClip: a matrix row's clip is k x its RMS (sota-stack §2.5: 12.85 at int6). The step is
    k x RMS / qmax, so keep k proportional to the range when changing bits (int5: ~6 for int6's step)."""
    embed_clip_k: float = 20.0
    """SDClip k of the embedding role (sota-stack §2.5: 20 at int8)."""
    alloc: str = "role"
    """How each intN row's step is chosen: role (the clip rule above, one k per role) or fisher (every
    row's step from its measured sensitivity on training batches, step_r = fisher_step x (c_r / median
    c)^-1/2, so bytes go where the loss needs them; quant/fisher.py). The formats still set each
    container's range: use int8 for all with fisher, and let fisher_step set the rate."""
    fisher_step: float = 0.1
    """Fisher allocation: the grid step of a row of median sensitivity, in weight units (0.1-0.12 put
    the 1.6M-parameter CPU model at 3.4-3.6 bits per parameter: benchmarks/RESULTS.md)."""
    fisher_max_rms: float = 2.0
    """Fisher allocation: a row's step is at most this many times its RMS (rows the calibration never
    exercises, e.g. embeddings of unseen tokens, would otherwise get an unbounded step)."""
    fisher_batches: int = 16
    """Fisher allocation: calibration micro-batches of training data (forward and backward), on the
    training clock after GPTQ's."""
    fisher_count_batches: int = 256
    """Fisher allocation: further micro-batches whose input ids are only counted (no forward), to
    share the token embedding's input term out by token frequency."""
    keep_float_max_numel: int = 65_536
    """Float tensors with at most this many elements are stored unquantised (fp32 for control tensors,
    fp16 otherwise)."""
    keep_fp16: str = ""
    """Comma-separated name fragments of tensors kept fp16 whatever their size (e.g. 'blocks.8.attn.c_k')."""
    gptq: bool = False
    """Full-Hessian GPTQ rounding of the intN matrices and the embedding, calibrated on training batches
    inside the training clock."""
    gptq_batches: int = 16
    """Calibration micro-batches of training data (each train.batch_tokens / train.microbatches tokens)."""
    gptq_damp: float = 0.01
    """GPTQ damping: this fraction of the mean diagonal of H is added to its diagonal."""
    gptq_block: int = 128
    """GPTQ column block size."""
    gptq_reserve_seconds: float = 0.0
    """Training stops this many seconds before the cap, so calibration (GPTQ's and the Fisher
    allocation's) ends inside it."""
    qat: bool = False
    """Straight-through fake quantisation of the quantised Linear weights during training, with the
    export's exact grid per tensor."""
    qat_from_frac: float = 0.5
    """Fraction of the run (wall clock, else steps) after which QAT is on."""
    qat_noise: bool = False
    """Noisy QAT (seed-techniques §7.11, from depth recurrence): instead of straight-through rounding,
    the training forward adds uniform noise of one export grid step per row, W + (U - 0.5) * step_row,
    the step (the export's row scale) taken without gradient; the gradient is the identity's."""
    qat_scope: str = "all"
    """Which grid-quantised Linears QAT covers: ``all``, or ``shared``: those of the blocks that run
    more than once per forward (every recurrent block, or the looped range [loop_start, loop_end))."""
    nekp: float = 0.0
    """NEKP, normal-excess kurtosis penalty (seed 003's proposal): this weight x the mean over the rows
    of every grid-quantised Linear in quant.qat_scope of max(0, kurtosis - nekp_target), added to the
    training loss (the logged train_loss leaves it out), to curb the outlier weights that a row's grid
    either stretches its step for (max, percentile clips) or clips away (sdclip) (0: off)."""
    nekp_target: float = 3.0
    """NEKP's free kurtosis: a row at or below it (3: a normal distribution's) is not penalised."""

    def __post_init__(self) -> None:
        for name in ("matrix", "embed"):
            if getattr(self, name) not in FORMATS:
                raise ConfigError(f"quant.{name}={getattr(self, name)!r}; expected one of {FORMATS}")
        if self.mlp and self.mlp not in FORMATS:
            raise ConfigError(f"quant.mlp={self.mlp!r}; expected '' or one of {FORMATS}")
        if self.clip not in CLIPS:
            raise ConfigError(f"quant.clip={self.clip!r}; expected one of {CLIPS}")
        if self.alloc not in ALLOCS:
            raise ConfigError(f"quant.alloc={self.alloc!r}; expected one of {ALLOCS}")
        contest = [f"quant.{n}" for n in ("matrix", "mlp", "embed") if getattr(self, n) == "int8-contest"]
        if self.alloc == "fisher" and contest:
            raise ConfigError(
                f"quant.alloc=fisher with {', '.join(contest)}=int8-contest: its 1/127 step floor would "
                "override the allocated steps; use int8 (e.g. --quant.matrix int8 --quant.embed int8)"
            )
        if self.alloc == "fisher" and self.qat:
            raise ConfigError(
                "quant.qat=true with quant.alloc=fisher: QAT trains on the role grids, which the Fisher "
                "allocation replaces after training; use one of them"
            )
        if not 0.0 < self.clip_quantile <= 1.0:
            raise ConfigError(f"quant.clip_quantile must be in (0, 1], got {self.clip_quantile}")
        positive(self, "clip_k", "embed_clip_k", "gptq_batches", "gptq_block")
        positive(self, "fisher_step", "fisher_max_rms", "fisher_batches")
        non_negative(self, "fisher_count_batches")
        non_negative(self, "keep_float_max_numel", "gptq_damp", "gptq_reserve_seconds")
        non_negative(self, "nekp", "nekp_target")
        if self.qat_scope not in QAT_SCOPES:
            raise ConfigError(f"quant.qat_scope={self.qat_scope!r}; expected one of {QAT_SCOPES}")
        if not 0.0 <= self.qat_from_frac <= 1.0:
            raise ConfigError(f"quant.qat_from_frac must be in [0, 1], got {self.qat_from_frac}")

    @property
    def calibrates(self) -> bool:
        """Whether training ends with a calibration pass on training batches (GPTQ, Fisher)."""
        return self.gptq or self.alloc == "fisher"

    @property
    def mlp_format(self) -> str:
        return self.mlp or self.matrix

    @property
    def fp16_names(self) -> tuple[str, ...]:
        return tuple(s.strip() for s in self.keep_fp16.split(",") if s.strip())
