"""Eval-time statistical experts over a token stream: n-gram backoff, longest match, bigram, tilt hints.

The stream is ``tokens[0..M-1]`` over V ids; target t = 1..M-1 is predicted from ``tokens[:t]`` only.
``tokens[0]`` is revealed, never scored, and counts as seen: it is a unigram of the history and the
context of the pair that ends at position 1. The order-n context at position s is ``tokens[s-n:s]``
(defined for s ≥ n) and its next token is ``tokens[s]``; for target t, c_n(ctx, w) counts the s < t
with that context and next token w, and C_n(ctx) = Σ_w c_n(ctx, w).

* n-gram, order O, α > 0 (PPM-style backoff from low order to high): p ← 1/V;
  p(w) ← (c_0(w) + α p(w)) / (t + α) with unigram counts c_0; then for n = 1..O-1, where the
  context was seen (C_n > 0): p(w) ← (c_n(w) + α p(w)) / (C_n + α).
* match, orders k_min..k_max: the longest k with C_k ≥ min_count gives p(w) = c_k(w) / C_k;
  when no order qualifies there is no prediction.
* bigram: q(w) = max(c_1(w) / C_1, ε) / Z with ε = 1e-8, uniform while C_1 = 0. While C_1 ≤ 1/ε
  every seen w has c_1(w) / C_1 ≥ ε, so Z = 1 + ε (V - d), d = number of distinct w seen.
* tilt hint, order H, threshold θ: the most frequent next token h of the order-H context (smallest id
  on ties) when c_H(h) / C_H ≥ θ, else -1. Tilting a distribution p toward h by β renormalises
  p(w) e^{β [w = h]}: p'(w) = p(w) e^{β [w = h]} / (1 + p(h) (e^β - 1)).

Each expert has a sequential reference class (``update(token)`` reveals a token; ``distribution()`` is
the full distribution of the next one), slow and plainly correct, and a vectorised whole-stream function
giving p(tokens[t]) at every target t (index 0 is NaN). The vectorised functions give every context an
exact integer id, order by order: the order-n context at t is the pair (order-(n-1) id at t,
``tokens[t-n]``). A stable sort by id lists the occurrences of each context in time order, so the rank
of position t in its group is C_n(t), and c_n(ctx_n(t), tokens[t]) is the rank of the order-(n+1)
context at position t + 1. Each order costs one O(M log M) sort.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from itertools import pairwise
from typing import Protocol

import numpy as np
import torch
from torch import Tensor

from pgolf.errors import ConfigError, DataError

BIGRAM_FLOOR = 1e-8
DEFAULT_BETA = 2.625
NO_HINT = -1


class Expert(Protocol):
    def update(self, token: int) -> None:
        """Reveal the next token of the stream."""
        ...

    def distribution(self) -> np.ndarray | None:
        """(V,) float64 distribution of the next token, or None when the expert has no prediction."""
        ...


# ---------------------------------------------------------------- parameters and inputs


def _check_int(name: str, value: int, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < low:
        raise ConfigError(f"{name} must be an integer >= {low}, got {value!r}")
    return int(value)


def _ngram_params(vocab_size: int, order: int, alpha: float | None) -> tuple[int, int, float]:
    vocab_size = _check_int("vocab_size", vocab_size, 1)
    order = _check_int("order", order, 1)
    alpha = 0.5 * order if alpha is None else float(alpha)
    if not (math.isfinite(alpha) and alpha > 0):
        raise ConfigError(f"alpha must be a finite number > 0, got {alpha!r}")
    return vocab_size, order, alpha


def _match_params(vocab_size: int, min_order: int, max_order: int, min_count: int) -> tuple[int, ...]:
    vocab_size = _check_int("vocab_size", vocab_size, 1)
    min_order = _check_int("min_order", min_order, 1)
    max_order = _check_int("max_order", max_order, min_order)
    return vocab_size, min_order, max_order, _check_int("min_count", min_count, 1)


def _tilt_params(order: int, threshold: float) -> tuple[int, float]:
    order = _check_int("order", order, 1)
    threshold = float(threshold)
    if not 0.0 <= threshold <= 1.0:
        raise ConfigError(f"threshold must lie in [0, 1], got {threshold!r}")
    return order, threshold


def _check_tokens(tokens: np.ndarray, vocab_size: int | None) -> np.ndarray:
    arr = np.asarray(tokens)
    if arr.ndim != 1 or arr.size == 0 or arr.dtype.kind not in "iu":
        raise DataError(f"tokens must be a non-empty 1-D integer array, got shape {arr.shape} {arr.dtype}")
    arr = arr.astype(np.int64)
    low, high = int(arr.min()), int(arr.max())
    if low < 0 or (vocab_size is not None and high >= vocab_size):
        raise DataError(f"token ids must lie in [0, {vocab_size or 'inf'}), found {low}..{high}")
    return arr


def _check_token(token: int, vocab_size: int | None) -> int:
    token = int(token)
    if token < 0 or (vocab_size is not None and token >= vocab_size):
        raise DataError(f"token id {token} is outside [0, {vocab_size or 'inf'})")
    return token


# ---------------------------------------------------------------- sequential references


class _ContextTable:
    """Next-token counts of the contexts of the given lengths, over a growing history."""

    def __init__(self, orders: Iterable[int]) -> None:
        self.orders = tuple(orders)
        self.history: list[int] = []
        self.counts: dict[tuple[int, ...], dict[int, int]] = {}

    def update(self, token: int) -> None:
        h = self.history
        for n in self.orders:
            if len(h) >= n:
                following = self.counts.setdefault(tuple(h[len(h) - n :]), {})
                following[token] = following.get(token, 0) + 1
        h.append(token)

    def next_counts(self, n: int) -> dict[int, int] | None:
        """Counts of the tokens that followed the last n tokens before; None if never seen."""
        h = self.history
        return self.counts.get(tuple(h[len(h) - n :])) if len(h) >= n else None


def _vector(counts: dict[int, int], size: int) -> np.ndarray:
    vec = np.zeros(size)
    vec[list(counts)] = list(counts.values())
    return vec


class NgramExpert:
    """Reference n-gram expert with PPM-style backoff (orders 0..order-1, pseudo-count alpha)."""

    def __init__(self, vocab_size: int, order: int = 6, alpha: float | None = None) -> None:
        self.vocab_size, self.order, self.alpha = _ngram_params(vocab_size, order, alpha)
        self._table = _ContextTable(range(self.order))

    def update(self, token: int) -> None:
        self._table.update(_check_token(token, self.vocab_size))

    def distribution(self) -> np.ndarray:
        p = np.full(self.vocab_size, 1.0 / self.vocab_size)
        for n in range(self.order):
            counts = self._table.next_counts(n)
            if counts is not None:  # for n = 0: N_seen = 0 leaves p unchanged anyway
                p = (_vector(counts, self.vocab_size) + self.alpha * p) / (sum(counts.values()) + self.alpha)
        return p


class MatchExpert:
    """Reference longest-suffix-match expert: next-token frequencies of the longest seen context."""

    def __init__(self, vocab_size: int, min_order: int = 4, max_order: int = 12, min_count: int = 1) -> None:
        params = _match_params(vocab_size, min_order, max_order, min_count)
        self.vocab_size, self.min_order, self.max_order, self.min_count = params
        self._table = _ContextTable(range(self.min_order, self.max_order + 1))

    def update(self, token: int) -> None:
        self._table.update(_check_token(token, self.vocab_size))

    def distribution(self) -> np.ndarray | None:
        for k in range(self.max_order, self.min_order - 1, -1):
            counts = self._table.next_counts(k)
            if counts is not None and (total := sum(counts.values())) >= self.min_count:
                return _vector(counts, self.vocab_size) / total
        return None


class BigramExpert:
    """Reference bigram expert: floored next-token frequencies of the previous token, renormalised."""

    def __init__(self, vocab_size: int) -> None:
        self.vocab_size = _check_int("vocab_size", vocab_size, 1)
        self._table = _ContextTable((1,))

    def update(self, token: int) -> None:
        self._table.update(_check_token(token, self.vocab_size))

    def distribution(self) -> np.ndarray:
        counts = self._table.next_counts(1)
        if counts is None:
            return np.full(self.vocab_size, 1.0 / self.vocab_size)
        q = np.maximum(_vector(counts, self.vocab_size) / sum(counts.values()), BIGRAM_FLOOR)
        return q / q.sum()


class TiltHints:
    """Reference tilt hints: the dominant next token of the last ``order`` tokens, or NO_HINT."""

    def __init__(self, order: int = 16, threshold: float = 0.8) -> None:
        self.order, self.threshold = _tilt_params(order, threshold)
        self._table = _ContextTable((self.order,))

    def update(self, token: int) -> None:
        self._table.update(_check_token(token, None))

    def hint(self) -> int:
        counts = self._table.next_counts(self.order)
        if counts is None:
            return NO_HINT
        top = min(counts, key=lambda w: (-counts[w], w))
        return top if counts[top] / sum(counts.values()) >= self.threshold else NO_HINT


def reference_probs(expert: Expert, tokens: np.ndarray) -> np.ndarray:
    """Run a fresh reference expert along the stream: p(tokens[t]) given tokens[:t] for t ≥ 1, NaN at
    index 0 and where the expert has no prediction (the layout of the vectorised functions)."""
    tok = _check_tokens(tokens, None)
    out = np.full(len(tok), np.nan)
    expert.update(int(tok[0]))
    for t in range(1, len(tok)):
        dist = expert.distribution()
        if dist is not None:
            out[t] = dist[tok[t]]
        expert.update(int(tok[t]))
    return out


# ---------------------------------------------------------------- vectorised whole-stream experts


@dataclass(frozen=True)
class _Groups:
    """Keys grouped position by position: ``ids`` dense key ids, ``rank`` the number of earlier
    positions with the same key, ``order`` the stable sort (group after group, each in time order)."""

    ids: np.ndarray
    rank: np.ndarray
    order: np.ndarray


def _group(keys: np.ndarray) -> _Groups:
    order = np.argsort(keys, kind="stable")
    sorted_keys = keys[order]
    starts = np.ones(len(keys), dtype=bool)
    starts[1:] = sorted_keys[1:] != sorted_keys[:-1]
    idx = np.arange(len(keys))
    ids, rank = np.empty_like(idx), np.empty_like(idx)
    ids[order] = np.cumsum(starts) - 1
    rank[order] = idx - np.maximum.accumulate(np.where(starts, idx, 0))
    return _Groups(ids, rank, order)


def _contexts(tokens: np.ndarray, max_order: int) -> Iterator[_Groups]:
    """Group the order-n contexts tokens[t-n:t] at positions t = 0..M, for n = 1..max_order in turn.
    A position t < n has no order-n context: it gets a key of its own (rank 0, never seen)."""
    m = len(tokens)
    base = int(tokens.max()) + 1
    pos = np.arange(m + 1)
    ids = np.zeros(m + 1, dtype=np.int64)  # order 0: the empty context, everywhere
    for n in range(1, max_order + 1):
        keys = -(pos + 1)
        if n <= m:
            keys[n:] = ids[n:] * base + tokens[: m + 1 - n]
        groups = _group(keys)
        yield groups
        ids = groups.ids


def _prior_sum(groups: _Groups, values: np.ndarray) -> np.ndarray:
    """Per position, the sum of ``values`` over the earlier positions of its group."""
    v = values[groups.order]
    before = np.cumsum(v) - v
    group_start = np.arange(len(v)) - groups.rank[groups.order]
    out = np.empty_like(before)
    out[groups.order] = before - before[group_start]
    return out


def ngram_probs(
    tokens: np.ndarray, vocab_size: int, order: int = 6, alpha: float | None = None
) -> np.ndarray:
    """p(tokens[t]) of the n-gram backoff expert (``NgramExpert``) at every t; index 0 is NaN."""
    vocab_size, order, alpha = _ngram_params(vocab_size, order, alpha)
    tok = _check_tokens(tokens, vocab_size)
    m = len(tok)
    p = np.full(m, 1.0 / vocab_size)
    total = np.arange(m + 1)  # C_0(t) = t: every earlier position follows the empty context
    for groups in _contexts(tok, order):  # order n here gives the counts c_{n-1}
        count = groups.rank[1:]
        p = np.where(total[:m] > 0, (count + alpha * p) / (total[:m] + alpha), p)
        total = groups.rank
    p[0] = np.nan
    return p


def match_probs(
    tokens: np.ndarray, vocab_size: int, min_order: int = 4, max_order: int = 12, min_count: int = 1
) -> tuple[np.ndarray, np.ndarray]:
    """(p, hit): p(tokens[t]) of the longest-match expert (``MatchExpert``) and whether some order
    matched; p is NaN where no order matched (always at index 0)."""
    vocab_size, min_order, max_order, min_count = _match_params(vocab_size, min_order, max_order, min_count)
    tok = _check_tokens(tokens, vocab_size)
    m = len(tok)
    p = np.full(m, np.nan)
    hit = np.zeros(m, dtype=bool)
    for k, (context, extended) in enumerate(pairwise(_contexts(tok, max_order + 1)), start=1):
        if k >= min_order:  # longer contexts come later and overwrite
            total = context.rank[:m]
            found = total >= min_count
            p = np.where(found, extended.rank[1:] / np.maximum(total, 1), p)
            hit |= found
    return p, hit


def bigram_probs(tokens: np.ndarray, vocab_size: int) -> np.ndarray:
    """p(tokens[t]) of the floored bigram expert (``BigramExpert``) at every t; index 0 is NaN."""
    vocab_size = _check_int("vocab_size", vocab_size, 1)
    tok = _check_tokens(tokens, vocab_size)
    m = len(tok)
    context, pair = _contexts(tok, 2)
    total, count = context.rank[:m], pair.rank[1:]
    if total.max() > 1 / BIGRAM_FLOOR:
        raise DataError(f"bigram_probs is exact only while a context is seen <= 1e8 times, not {total.max()}")
    first_of_pair = np.zeros(m + 1, dtype=np.int64)
    first_of_pair[1:m] = count[1:] == 0  # the pair ending at s (s >= 1) is new there
    distinct = _prior_sum(context, first_of_pair)[:m]
    share = np.maximum(count / np.maximum(total, 1), BIGRAM_FLOOR)
    p = np.where(total > 0, share / (1.0 + BIGRAM_FLOOR * (vocab_size - distinct)), 1.0 / vocab_size)
    p[0] = np.nan
    return p


def tilt_hints(tokens: np.ndarray, order: int = 16, threshold: float = 0.8) -> np.ndarray:
    """int64 hint at every position t (``TiltHints.hint()`` given tokens[:t]); NO_HINT at index 0.

    In each context's time-ordered group, after occurrence s: top = running max of the post-update
    count of the next token; the leader is the smallest next token that reached that count, a running
    min over the segment since top last rose. Position t reads the state after its predecessor."""
    order, threshold = _tilt_params(order, threshold)
    tok = _check_tokens(tokens, None)
    m = len(tok)
    context, pair = deque(_contexts(tok, order + 1), maxlen=2)
    sort = context.order
    rank, gid = context.rank[sort], context.ids[sort]
    after = np.zeros(m + 1, dtype=np.int64)  # count of (context, tokens[s]) once s is revealed
    after[:m] = pair.rank[1:] + 1
    after = after[sort]
    stride = m + 2  # > any count: keeps the running max inside each group
    top = np.maximum.accumulate(gid * stride + after) - gid * stride
    rises = rank == 0
    rises[1:] |= top[1:] > top[:-1]
    sentinel = int(tok.max()) + 1
    following = np.append(tok, sentinel)[sort]
    shift = (np.cumsum(rises) - 1) * (sentinel + 1)  # earlier segments can never hold the min
    leader = np.minimum.accumulate(np.where(after == top, following, sentinel) - shift) + shift
    later = np.flatnonzero(rank > 0)
    confident = top[later - 1] / rank[later] >= threshold
    hints_sorted = np.full(m + 1, NO_HINT, dtype=np.int64)
    hints_sorted[later[confident]] = leader[later[confident] - 1]
    hints = np.empty_like(hints_sorted)
    hints[sort] = hints_sorted
    return hints[:m]


# ---------------------------------------------------------------- tilting a model distribution


def _tilt_parts(logp: Tensor, hints: Tensor, beta: float) -> tuple[Tensor, Tensor, Tensor]:
    """(has_hint, hint index clamped to >= 0 with a trailing dim, log of the normaliser)."""
    if not math.isfinite(beta):
        raise ConfigError(f"beta must be a finite number, got {beta!r}")
    has = hints >= 0
    index = hints.clamp(min=0).unsqueeze(-1)
    q = logp.gather(-1, index).squeeze(-1).exp()
    log_norm = torch.where(has, torch.log1p(math.expm1(beta) * q), torch.zeros_like(q))
    return has, index, log_norm


def tilt_log_probs(logp: Tensor, hints: Tensor, beta: float = DEFAULT_BETA) -> Tensor:
    """Full tilted log-probs (…, V) of normalised ``logp`` toward ``hints`` (…); NO_HINT: unchanged."""
    has, index, log_norm = _tilt_parts(logp, hints, beta)
    bonus = torch.zeros_like(logp).scatter_(-1, index, (beta * has.to(logp.dtype)).unsqueeze(-1))
    return logp + bonus - log_norm.unsqueeze(-1)


def tilt_target_logprob(logp: Tensor, hints: Tensor, targets: Tensor, beta: float = DEFAULT_BETA) -> Tensor:
    """Tilted log-prob (…) of ``targets`` only: ``tilt_log_probs(...)`` gathered at the targets."""
    _, _, log_norm = _tilt_parts(logp, hints, beta)
    target_logp = logp.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    return target_logp + beta * (targets == hints).to(logp.dtype) - log_norm
