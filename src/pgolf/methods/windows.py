"""Window plans: which inputs each forward sees and which of its targets it scores.

A window ``w`` reads input tokens ``[w.start, w.start + w.length)`` and predicts the targets one
token later; it scores the targets at positions ``[w.score_from, w.length)``. A plan is valid when
it stays inside the stream and no target is scored by two windows: ``check_plan`` enforces that on
every plan ``eval.score`` is given, and a property test checks that ``plain_windows`` scores every
target of its range exactly once over any number of ranks.

``plain_windows`` is the contest's non-overlapping evaluation (seed-techniques §3.3): the stream of
M tokens is cut into floor((M-1)/T) windows of T; window i predicts tokens [iT+1, (i+1)T], and the
tail that does not fill a window is not scored.

``sliding_windows`` is seed-techniques §4.2, exactly: with N = M - 1 targets, windows of L tokens
start every S tokens (ws = 0, S, 2S, ... while ws + L - S < N; ws = 0 always), the window at ws reads
min(ws + L, N) - ws tokens and scores its positions from L - S on (the first window from 0). The
scored ranges partition all N targets, the tail included: every target but the first window's sees
at least L - S tokens of context. The seed records' rule (score start max(wlen - S, 0) over every ws
< N) scores the last S targets about L/S times over (§4.3); this one never does.

``doc_windows`` isolates documents: the stream is cut before every BOS, and each piece (a document
and, as its last target, the next document's BOS) gets its own sliding plan, so no context crosses
a document boundary; together they still score every target once.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import torch

from pgolf.checks import non_negative, positive
from pgolf.errors import ConfigError, DataError
from pgolf.methods.base import CostInputs, Method
from pgolf.vocab import BOS_ID


@dataclass(frozen=True)
class Window:
    start: int
    length: int
    score_from: int = 0


def plain_windows(n_tokens: int, seq_len: int) -> list[Window]:
    n = (n_tokens - 1) // seq_len
    if n <= 0:
        raise DataError(
            f"validation data ({n_tokens} tokens) is shorter than one window of seq_len={seq_len} + 1"
        )
    return [Window(i * seq_len, seq_len) for i in range(n)]


def sliding_windows(n_tokens: int, seq_len: int, stride: int) -> list[Window]:
    n = n_tokens - 1
    if n < 1:
        raise DataError(f"validation data ({n_tokens} tokens) has no target to score")
    if not 1 <= stride <= seq_len:
        raise DataError(f"eval.stride={stride} must be between 1 and the window length {seq_len}")
    context = seq_len - stride
    return [
        Window(ws, min(ws + seq_len, n) - ws, 0 if ws == 0 else context)
        for ws in range(0, n, stride)
        if ws == 0 or ws + context < n
    ]


def doc_spans(tokens: torch.Tensor) -> list[tuple[int, int]]:
    """Documents as (a, b): inputs [a, b), targets (a, b], cut before every BOS after the first token
    (a document's last target is the next one's BOS; the stream's ends close the first and last)."""
    n = tokens.numel() - 1
    cuts = [0, *(p for p in torch.nonzero(tokens[1:n] == BOS_ID).flatten().add(1).tolist()), n]
    return list(itertools.pairwise(sorted(set(cuts))))


def doc_windows(tokens: torch.Tensor, seq_len: int, stride: int) -> list[Window]:
    """Sliding windows inside each document (``doc_spans``): no context crosses a BOS."""
    return [
        Window(a + w.start, w.length, w.score_from)
        for a, b in doc_spans(tokens)
        for w in sliding_windows(b - a + 1, seq_len, stride)
    ]


METHODS = ("plain", "sliding", "docs")


def plan_windows(tokens: torch.Tensor, method: str, seq_len: int, stride: int) -> list[Window]:
    """The window plan of an evaluation method over the stream ``tokens``."""
    if method == "plain":
        return plain_windows(tokens.numel(), seq_len)
    if method == "sliding":
        return sliding_windows(tokens.numel(), seq_len, stride)
    if method == "docs":
        return doc_windows(tokens, seq_len, stride)
    raise DataError(f"eval.method={method!r}; expected one of {METHODS}")


def check_plan(windows: list[Window], n_tokens: int) -> int:
    """Raise DataError unless every window fits the stream and the scored targets are disjoint and
    contiguous from target 1 (a plan with a gap would score a subset and report it as the whole);
    returns how many targets the plan scores."""
    spans = []
    for w in windows:
        if w.start < 0 or w.length < 1 or not 0 <= w.score_from < w.length or w.start + w.length >= n_tokens:
            raise DataError(f"window {w} does not fit a stream of {n_tokens} tokens")
        spans.append((w.start + w.score_from + 1, w.start + w.length))  # scored target positions, inclusive
    spans.sort()
    if spans and spans[0][0] != 1:
        raise DataError(f"window plan starts scoring at target {spans[0][0]}, not 1")
    for (_, end), (start, _) in itertools.pairwise(spans):
        if start <= end:
            raise DataError(f"window plan scores target {start} twice")
        if start > end + 1:
            raise DataError(f"window plan skips targets {end + 1}..{start - 1}")
    return spans[-1][1] if spans else 0


def deal(items: list, rank: int, world: int) -> list:
    """Rank ``rank``'s share of ``items`` (windows, documents), dealt round robin by index: the one
    rule for how targets, documents and adaptive state are dealt to ranks. An item's index depends
    only on the tokens before it, so which rank (and which rank's adaptive state: an expert mixer,
    a LoRA batch) handles it never depends on a later token. Contiguous shares did: their bounds move
    with the number of items, which a later BOS changes in the ``docs`` plan (issue 32)."""
    return items[rank::world]


@dataclass(frozen=True, kw_only=True)
class WindowsSection:
    seq_len: int = 0
    """Evaluation window length (0: the training sequence length)."""
    method: str = "plain"
    """plain (the contest's non-overlapping windows; the tail is not scored), sliding (windows
    every eval.stride tokens, each scoring its last stride targets with the rest as context) or docs
    (sliding windows inside each document: context never crosses a BOS)."""
    stride: int = 64
    """Sliding and docs windows: tokens between window starts (1 to the window length); with
    eval.ttt=lora, the chunk each adapter step scores and then learns from."""
    ntk_seq_len: int = 0
    """If > 0, windows longer than this rescale the RoPE base NTK-style (evaluating past the trained
    length); 0 keeps the artifact's own model.rope_ntk_seq_len."""


class Windows(Method):
    """The window plan every other method scores through (always used)."""

    name, Section = "windows", WindowsSection

    def used(self, cfg) -> bool:
        return True

    def check(self, cfg) -> None:
        positive(cfg, "stride")
        non_negative(cfg, "seq_len", "ntk_seq_len")
        if cfg.method not in METHODS:
            raise ConfigError(f"eval.method={cfg.method!r}; expected one of {', '.join(METHODS)}")
        if cfg.method != "plain" and cfg.seq_len and cfg.stride > cfg.seq_len:
            raise ConfigError(f"eval.stride={cfg.stride} is longer than eval.seq_len={cfg.seq_len}")

    def label(self, cfg) -> str:
        parts = [] if cfg.method == "plain" else [f"{cfg.method}{cfg.stride}"]
        return "_".join(parts + ([f"ntk{cfg.ntk_seq_len}"] if cfg.ntk_seq_len else []))

    def needs_bos(self, cfg) -> bool:
        return cfg.method == "docs"

    def cost(self, cfg, work: CostInputs) -> list[tuple[str, float, str]]:
        computed = sum(w.length for w in work.windows)
        how = f"{len(work.windows):,} windows, {computed:,} tokens computed" + (
            "" if work.tokens is not None or cfg.method != "docs" else " (docs costed as sliding: no tokens)"
        )
        return [("score", window_flops(work.flops, work.windows) / work.rates.score_flops, how)]

    def probe(self, cfg, tokens, n_docs: int) -> dict:
        """Windows of at most 128 tokens: several windows, chunks and SGD pieces per document."""
        seq_len = min(cfg.seq_len, 128)
        return {"seq_len": seq_len, "stride": max(1, min(cfg.stride, seq_len // 4))}


def window_flops(flops, windows: list[Window]) -> float:
    """Forward FLOPs of computing every window in full (the model runs the whole window): each window
    of L tokens costs ``matmul x L + 2 d layers L (L+1)``."""
    return sum(flops.matmul * w.length + flops.attention_coeff * w.length * (w.length + 1) for w in windows)
