"""Projected evaluation time of a config's eval method (``pgolf plan``).

Forward work is counted exactly from the method's own window plan (``eval.windows``) when the
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

import math
from dataclasses import dataclass, field

import torch

from pgolf.config.run import RunConfig
from pgolf.eval.lora import chunk_windows, deal, phase_segments
from pgolf.eval.windows import Window, doc_spans, plain_windows, plan_windows, sliding_windows
from pgolf.plan.flops import Flops

HOST_SECONDS_AT_2M = {
    "ngram": 2.50,
    "match": 5.17,
    "bigram": 0.72,
    "tilt": 7.13,
    "mixer": 9.76,
    "mixer_eg": 15.5,
}
"""bench_experts.py on 2,000,000 tokens, one core of this project's CPU machine (RESULTS.md); the
exponentiated-gradient mixer's from its measured 1.59x the seed rule's in the same run."""

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
            "method": self.method, "val_tokens": self.val_tokens, "seconds": round(self.seconds, 1),
            "parts": [{"phase": p, "seconds": round(s, 1), "how": h} for p, s, h in self.parts],
        }  # fmt: skip


def method_label(cfg: RunConfig) -> str:
    ev = cfg.eval
    label = ev.method + (f"{ev.stride}" if ev.method != "plain" else "") + f"@{cfg.eval_seq_len}"
    if ev.ttt != "none":
        label += f"+{ev.ttt}"
    if ev.ttt == "lora" and ev.lora_phase_docs:
        label += f"-phased{ev.lora_phases}x{ev.lora_phase_docs}"
    if ev.experts:
        label += f"+{ev.experts.replace(',', '+')}"
    if ev.tilt:
        label += "+tilt"
    return label


def windows_of(cfg: RunConfig, n_tokens: int, tokens: torch.Tensor | None) -> list[Window]:
    ev, seq = cfg.eval, cfg.eval_seq_len
    if tokens is not None:
        return plan_windows(tokens, ev.method, seq, ev.stride)
    if ev.method == "plain":
        return plain_windows(n_tokens, seq)
    return sliding_windows(n_tokens, seq, ev.stride)


def window_flops(flops: Flops, windows: list[Window]) -> float:
    """Forward FLOPs of computing every window in full (the model runs the whole window)."""
    return sum(flops.matmul * w.length + flops.attention_coeff * w.length * (w.length + 1) for w in windows)


def _global_sgd(cfg: RunConfig, flops: Flops, rates: Rates, n_tokens: int, tokens: torch.Tensor | None):
    """The phases' SGD: pieces of the first ``lora_phase_docs`` documents, one epoch."""
    ev, seq = cfg.eval, cfg.eval_seq_len
    if tokens is not None:
        spans = doc_spans(tokens)
        docs, spans = len(spans), spans[: ev.lora_phase_docs]
        lengths = [min(seq, b - x) for a, b in spans for x in range(a, b, seq)]
        how = f"{len(lengths):,} pieces of {len(spans):,} of {docs:,} documents"
    else:  # ~(prefix / seq) full pieces plus one partial piece per document, all padded
        docs = max(1, round(n_tokens / mean_document(cfg)))
        phase_docs = min(ev.lora_phase_docs, docs)
        lengths = [seq] * (math.ceil(phase_docs / docs * n_tokens / seq) + phase_docs)
        how = f"~{len(lengths):,} pieces of {phase_docs:,} of ~{docs:,} documents (no tokens)"
    steps = [lengths[i : i + ev.sgd_batch_seqs] for i in range(0, len(lengths), ev.sgd_batch_seqs)]
    padded = sum(len(s) * max(s) for s in steps)  # each step pads its pieces to the longest
    seconds = padded * flops.train / rates.train_flops + len(steps) * rates.step_ms / 1e3
    return "global_sgd", seconds, f"{how}, {len(steps):,} steps, {padded:,} tokens padded"


def lora_iterations(cfg: RunConfig, n_tokens: int, tokens: torch.Tensor | None, ranks: int) -> LoraWork:
    """LoRA TTT's work on its busiest rank, counted as ``lora.lora_ttt`` deals, sorts and batches the
    documents when the tokens are at hand; else from documents of ``mean_document``'s length, a lower
    bound: each batch runs as many steps as its longest document has chunks."""
    ev, seq = cfg.eval, cfg.eval_seq_len
    if tokens is None:
        mean = mean_document(cfg)
        docs = max(1, round(n_tokens / mean))
        lengths = [min(seq, (c + 1) * ev.stride) for c in range(math.ceil(mean / ev.stride))]
        per_rank = math.ceil(docs / ranks)
        steps = math.ceil(per_rank / ev.lora_batch_docs) * len(lengths)
        return LoraWork(steps, per_rank * sum(lengths), per_rank * sum(t * (t + 1) for t in lengths),
                        f"no tokens: {docs:,} documents of the mean length {mean:,.0f}")  # fmt: skip
    plans = [chunk_windows(b - a, seq, ev.stride) for a, b in doc_spans(tokens)]
    busiest = LoraWork(0, 0, 0, f"{len(plans):,} documents, dealt and batched as lora_ttt does")
    for rank in range(ranks):
        work = LoraWork(0, 0, 0, busiest.how)
        for lo, hi in phase_segments(len(plans), ev.lora_phase_docs, ev.lora_phases):
            mine = deal(plans[lo:hi], rank, ranks)
            if not ev.lora_warm_a:
                mine = sorted(mine, key=len, reverse=True)
            for i in range(0, len(mine), ev.lora_batch_docs):
                batch = mine[i : i + ev.lora_batch_docs]
                for c in range(max(map(len, batch))):
                    rows, t = sum(c < len(p) for p in batch), max(p[c].length for p in batch if c < len(p))
                    work.steps, work.tokens, work.attention = (
                        work.steps + 1, work.tokens + rows * t, work.attention + rows * t * (t + 1)
                    )  # fmt: skip
        busiest = max(busiest, work, key=lambda w: (w.steps, w.tokens))
    return busiest


@dataclass
class LoraWork:
    steps: int
    """Sequential chunk iterations (one per chunk of each batch of documents): a forward, then a
    backward and an adapter step unless it is the batch's last chunk (costed as one all the same)."""
    tokens: int
    """Tokens computed: each chunk's rows padded to its longest window."""
    attention: int
    """Sum over rows of t (t + 1), t the padded length (attention FLOPs are quadratic)."""
    how: str


def project_eval(
    cfg: RunConfig, flops: Flops, rates: Rates, n_tokens: int, tokens: torch.Tensor | None
) -> EvalProjection:
    """The method's time by phase; ``flops`` are counted at the eval window length."""
    ev, seq = cfg.eval, cfg.eval_seq_len
    proj = EvalProjection(method_label(cfg), n_tokens)
    windows = windows_of(cfg, n_tokens, tokens)
    computed = sum(w.length for w in windows)
    how = f"{len(windows):,} windows, {computed:,} tokens computed" + (
        "" if tokens is not None or ev.method != "docs" else " (docs costed as sliding: no tokens)"
    )
    if ev.ttt == "lora":  # one forward per chunk scores it and trains on it: a training step's work
        lw = lora_iterations(cfg, n_tokens, tokens, rates.ranks)
        work = 3 * (flops.matmul * lw.tokens + flops.attention_coeff * lw.attention) * rates.ranks
        proj.parts.append(("score+adapt", work / rates.train_flops + lw.steps * rates.step_ms / 1e3,
                           f"{lw.steps:,} sequential adapter steps on the busiest rank, {lw.tokens:,} tokens "
                           f"computed there ({lw.how}); forward + backward"))  # fmt: skip
    else:
        proj.parts.append(("score", window_flops(flops, windows) / rates.score_flops, how))
    if ev.ttt == "sgd":
        chunks = math.ceil(n_tokens / ev.sgd_chunk_tokens)
        steps = (chunks - 1) * ev.sgd_epochs * math.ceil(ev.sgd_chunk_tokens / (ev.sgd_batch_seqs * seq))
        work = ev.sgd_epochs * (n_tokens - n_tokens / chunks) * flops.train  # the last chunk never trains
        how = f"{ev.sgd_epochs} epochs over {chunks - 1:,} of {chunks:,} chunks, {steps:,} steps"
        proj.parts.append(("adapt", work / rates.train_flops + steps * rates.step_ms / 1e3, how))
    if ev.ttt == "lora" and ev.lora_phase_docs:
        proj.parts.append(_global_sgd(cfg, flops, rates, n_tokens, tokens))
    scale = n_tokens * math.log(max(n_tokens, 2)) / (2e6 * math.log(2e6))
    host = [e for e in ev.experts.split(",") if e]
    if host:
        tables = sum(HOST_SECONDS_AT_2M[e] for e in host) * scale
        shared = 1 if ev.ttt == "lora" else rates.ranks  # after LoRA every rank mixes the whole stream
        mixer = HOST_SECONDS_AT_2M["mixer_eg" if ev.mix_rule == "eg" else "mixer"] * n_tokens / 2e6 / shared
        where = "the whole stream on every rank, after LoRA" if shared == 1 else "each rank's share"
        how = f"host numpy tables (N log N, every rank) + mixer ({where})"
        proj.parts.append(("experts", tables + mixer, how))
    if ev.tilt:
        proj.parts.append(("tilt", HOST_SECONDS_AT_2M["tilt"] * scale, "host numpy hints (N log N)"))
    return proj
