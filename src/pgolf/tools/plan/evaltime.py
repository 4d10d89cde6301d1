"""Projected evaluation time of a config's eval method (``pgolf plan``).

Each registered method costs its own part (``Method.cost`` in its module of ``pgolf.methods``);
this module supplies the stream, the window plan and the rates, and sums the parts.
Forward work is counted exactly from the method's own window plan (``methods.windows``) when the
validation tokens are at hand, or from the stream length for plain and sliding windows (documents
need the tokens; without them ``docs`` is costed as sliding, an upper bound). Each window of L
tokens costs ``matmul x L + 2 d layers L (L+1)`` forward FLOPs. LoRA TTT's one forward per chunk
both scores and trains; its backward needs input gradients only (~1 x forward by FLOPs), but on
this CPU a chunk took a training step's time, so it is costed at 3 x forward. SGD TTT adds its
epochs over every chunk; the phased global SGD one epoch over the pieces ``lora.global_sgd`` cuts
(at most ``seq_len`` tokens each, never across a document, padded to the longest of a step),
counted exactly from the documents when the tokens are at hand.

Rates. On a GPU, scoring is fitted on the records' measured sliding pass (``hardware.EVAL_POINTS``,
March-era code; later records' sliding passes at 2,048 context took 65-121 s where this rate
projects ~245 s for xsa-ema at 2,048: sota-stack §4), so scoring times are likely upper bounds;
adaptation runs at the training fit's rate plus its fixed cost per optimizer step, which is
optimistic for small-batch adaptation (LoRA TTT on swapp-xsa-swiglu projects to 110 s where the
records' batched LoRA measured 213-340 s). On the CPU both rates are timed; ``pgolf eval`` on this
CPU is compared in benchmarks/RESULTS.md. The experts' and the tilt's tables are host-side
Python/numpy whatever the accelerator: their cost is the one ``bench_experts.py`` measured on 2M
tokens (RESULTS.md, 2026-12-01), scaled as N log N (tables, built on every rank) and N / ranks (the
mixer).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from pgolf.config.run import RunConfig
from pgolf.methods import used
from pgolf.methods.base import CostInputs
from pgolf.methods.windows import Window, plain_windows, plan_windows, sliding_windows
from pgolf.tools.plan.flops import Flops

CONTEST_VAL_TOKENS = {
    "fineweb10B_sp1024": 62_021_632,
    "fineweb10B_sp8192": 40_540_160,
    "fineweb10B_sp8192_lossless_caps_caseops_v1_reserved": 47_851_520,
}
"""The contest's validation stream (its first 50,000 FineWeb documents) per published export (the
dataset folder's name), from the records' logs (seed-techniques §4.3; sota-stack §1 and §3.3 for
SP8192 and CaseOps SP8192); ``pgolf plan --val-tokens`` or local data for any other."""
CONTEST_VAL_DOCS = 50_000


def mean_document(cfg: RunConfig) -> float:
    """Tokens per validation document when the tokens are not at hand: the contest's (its 50,000
    documents of this export, else of SP1024's stream)."""
    known = contest_val_tokens(cfg.data.dataset) or CONTEST_VAL_TOKENS["fineweb10B_sp1024"]
    return known / CONTEST_VAL_DOCS


def contest_val_tokens(dataset: str) -> int | None:
    """The validation stream's length of a known export (``data.dataset``), else None."""
    return CONTEST_VAL_TOKENS.get(dataset.rstrip("/").rsplit("/", 1)[-1])


@dataclass(frozen=True)
class Rates:
    score_flops: float
    """Forward FLOPs per second when scoring (the whole machine)."""
    train_flops: float
    """Training FLOPs per second (forward + backward, the whole machine)."""
    step_ms: float
    """Fixed cost per optimizer step of an adaptation."""
    ranks: int


@dataclass
class EvalProjection:
    method: str
    val_tokens: int
    parts: list[tuple[str, float, str]] = field(default_factory=list)
    """(phase, seconds, how it was counted)."""

    @property
    def seconds(self) -> float:
        return sum(s for _, s, _ in self.parts)

    def to_dict(self) -> dict:
        return {
            "method": self.method,
            "val_tokens": self.val_tokens,
            "seconds": round(self.seconds, 1),
            "parts": [{"phase": p, "seconds": round(s, 1), "how": h} for p, s, h in self.parts],
        }


def method_label(cfg: RunConfig) -> str:
    """The method's label (``EvalConfig.tag``) at its window length."""
    return f"{cfg.eval.tag or 'plain'}@{cfg.eval_seq_len}"


def windows_of(cfg: RunConfig, n_tokens: int, tokens: torch.Tensor | None) -> list[Window]:
    ev, seq = cfg.eval, cfg.eval_seq_len
    if tokens is not None:
        return plan_windows(tokens, ev.method, seq, ev.stride)
    if ev.method == "plain":
        return plain_windows(n_tokens, seq)
    return sliding_windows(n_tokens, seq, ev.stride)


def project_eval(
    cfg: RunConfig, flops: Flops, rates: Rates, n_tokens: int, tokens: torch.Tensor | None
) -> EvalProjection:
    """The method's time by phase, each registered method costing its own part (``Method.cost``);
    ``flops`` are counted at the eval window length. A method that scores the stream itself
    replaces the window scorer's pass."""
    methods = used(cfg.eval)
    work = CostInputs(
        flops,
        rates,
        n_tokens,
        tokens,
        windows_of(cfg, n_tokens, tokens),
        cfg.eval_seq_len,
        mean_document(cfg),
    )
    proj = EvalProjection(method_label(cfg), n_tokens)
    replaced = any(m.scores for m in methods)
    for m in methods:
        if not (replaced and m.name == "windows"):
            proj.parts += m.cost(cfg.eval, work)
    return proj
