"""Window plans: which inputs each forward sees and which of its targets it scores.

A window ``w`` reads input tokens ``[w.start, w.start + w.length)`` and predicts the targets one
token later; it scores the targets at positions ``[w.score_from, w.length)``. A plan is valid when
it stays inside the stream and no target is scored by two windows: ``check_plan`` enforces that on
every plan ``eval.score`` is given, and a property test checks that ``plain_windows`` scores every
target of its range exactly once over any number of ranks.

``plain_windows`` is the contest's non-overlapping evaluation (seed-techniques §3.3): the stream of
M tokens is cut into floor((M-1)/T) windows of T; window i predicts tokens [iT+1, (i+1)T], and the
tail that does not fill a window is not scored.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

from pgolf.errors import DataError


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


def check_plan(windows: list[Window], n_tokens: int) -> None:
    """Raise DataError unless every window fits the stream and the scored targets are disjoint."""
    spans = []
    for w in windows:
        if w.start < 0 or w.length < 1 or not 0 <= w.score_from < w.length or w.start + w.length >= n_tokens:
            raise DataError(f"window {w} does not fit a stream of {n_tokens} tokens")
        spans.append((w.start + w.score_from + 1, w.start + w.length))  # scored target positions, inclusive
    spans.sort()
    for (_, end), (start, _) in itertools.pairwise(spans):
        if start <= end:
            raise DataError(f"window plan scores target {start} twice")


def rank_share(windows: list[Window], rank: int, world: int) -> list[Window]:
    """Contiguous share of rank ``rank``; the shares partition ``windows``."""
    n = len(windows)
    return windows[n * rank // world : n * (rank + 1) // world]
