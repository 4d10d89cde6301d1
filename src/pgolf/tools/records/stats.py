"""Is a new result better than an old one? One-sided Welch t-tests on per-seed scores (scipy).

The contest's README rule: a new record must beat the previous one by 0.005 nats at p < 0.01; the
practice reviewers enforced: p < 0.25 against the previous frontier with no margin (sota-stack §3).
Lower scores are better; ``welch`` tests H1: mean(new) < mean(old) - margin.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass

import numpy as np
from scipy import stats

from pgolf.errors import PgolfError
from pgolf.tools.records.logs import RunScore

RULES = {"readme": (0.005, 0.01), "practice": (0.0, 0.25)}
"""name -> (margin in nats, alpha)."""


@dataclass(frozen=True)
class Welch:
    mean_old: float
    mean_new: float
    std_old: float
    std_new: float
    n_old: int
    n_new: int
    margin: float
    alpha: float
    t: float
    df: float
    p: float
    seeds_needed: int | None
    """Seeds per side at which the observed means and spreads would pass (None: never, or unknown)."""

    @property
    def delta(self) -> float:
        """mean(new) - mean(old): negative is an improvement."""
        return self.mean_new - self.mean_old

    @property
    def passes(self) -> bool:
        return self.p < self.alpha

    def to_dict(self) -> dict:
        return {**self.__dict__, "delta": self.delta, "passes": self.passes}


def _welch_t(old: np.ndarray, new: np.ndarray, margin: float) -> tuple[float, float, float]:
    """(t, df, one-sided p) of H1: mean(new) < mean(old) - margin, as scipy computes it."""
    r = stats.ttest_ind(new, old - margin, equal_var=False, alternative="less")
    return float(r.statistic), float(r.df), float(r.pvalue)


def seeds_needed(
    old: np.ndarray, new: np.ndarray, margin: float, alpha: float, limit: int = 1000
) -> int | None:
    """Smallest n (seeds on each side) at which the observed means and standard deviations would give
    p < alpha; None if the observed difference does not beat the margin or n would exceed ``limit``."""
    d = old.mean() - margin - new.mean()
    var = old.var(ddof=1) + new.var(ddof=1)
    if d <= 0:
        return None
    if var == 0:
        return 2
    for n in range(2, limit + 1):
        se = math.sqrt(var / n)
        vo, vn = old.var(ddof=1) / n, new.var(ddof=1) / n
        df = (vo + vn) ** 2 / (vo**2 / (n - 1) + vn**2 / (n - 1))
        if stats.t.sf(d / se, df) < alpha:
            return n
    return None


def welch(old: list[float], new: list[float], *, margin: float = 0.0, alpha: float = 0.25) -> Welch:
    """One-sided Welch test of ``new`` beating ``old`` by more than ``margin`` (same units)."""
    a, b = np.asarray(old, dtype=np.float64), np.asarray(new, dtype=np.float64)
    if len(a) < 2 or len(b) < 2:
        raise PgolfError(f"a Welch test needs at least 2 seeds on each side (got {len(a)} and {len(b)})")
    t, df, p = _welch_t(a, b, margin)
    if math.isnan(p):  # both sides without spread: the difference is exact
        p = 0.0 if b.mean() < a.mean() - margin else 1.0
    return Welch(
        mean_old=float(a.mean()), mean_new=float(b.mean()), std_old=float(a.std(ddof=1)),
        std_new=float(b.std(ddof=1)), n_old=len(a), n_new=len(b), margin=margin, alpha=alpha,
        t=t, df=df, p=p, seeds_needed=seeds_needed(a, b, margin, alpha),
    )


@dataclass(frozen=True)
class Comparison:
    """``new`` against ``old``, in nats per token and in bits per byte; the bpb margin is the nats
    margin at the reference's bits-per-nat ratio (tokens per byte / ln 2). Nats per token compare
    only on one tokenizer: when the two sides tokenize differently the verdict is bpb's."""

    nats: Welch
    bpb: Welch
    same_tokens: bool = True

    @property
    def verdict(self) -> Welch:
        return self.nats if self.same_tokens else self.bpb

    def lines(self, old_name: str, new_name: str) -> list[str]:
        out = []
        for unit, w in (("nats", self.nats), ("bpb", self.bpb)):
            verdict = "PASS" if w.passes else "fail"
            need = f"{w.seeds_needed} seeds/side" if w.seeds_needed else "no seed count (no margin beaten)"
            out.append(
                f"{unit:4s} old {w.mean_old:.6f}±{w.std_old:.6f} (n={w.n_old})  "
                f"new {w.mean_new:.6f}±{w.std_new:.6f} (n={w.n_new})  delta {w.delta:+.6f}  "
                f"margin {w.margin:.6f}  t {w.t:.3f} df {w.df:.1f} "
                f"p {w.p:.4g} < {w.alpha:g}? {verdict}  (at this spread: {need})"
            )
        unit = "nats" if self.same_tokens else "bpb (different tokenizations: nats per token do not compare)"
        return [f"old: {old_name}", f"new: {new_name}", *out, f"verdict in {unit}: "
                f"{'PASS' if self.verdict.passes else 'fail'}"]

    def to_dict(self) -> dict:
        return {"nats": self.nats.to_dict(), "bpb": self.bpb.to_dict(), "same_tokens": self.same_tokens,
                "passes": self.verdict.passes}


def same_tokenizer(old: list[tuple[float, float]], new: list[tuple[float, float]], tol: float = 0.02) -> bool:
    """Whether both sides' bits-per-nat ratios (tokens per byte / ln 2) agree within ``tol``: the
    same tokenizer on the same text gives the same ratio (window plans move it by far less than
    1%); SP1024 against SP8192 moves it by ~25%."""
    r_old = np.mean([b / n for n, b in old])
    r_new = np.mean([b / n for n, b in new])
    return bool(abs(r_old / r_new - 1) < tol)


def compare(
    old: list[tuple[float, float]],
    new: list[tuple[float, float]],
    *,
    margin_nats: float,
    alpha: float,
    same_tokens: bool = True,
) -> Comparison:
    """``old``/``new``: per-seed (val_loss, val_bpb)."""
    ratio = np.mean([b / n for n, b in old])
    return Comparison(
        nats=welch([n for n, _ in old], [n for n, _ in new], margin=margin_nats, alpha=alpha),
        bpb=welch([b for _, b in old], [b for _, b in new], margin=margin_nats * float(ratio), alpha=alpha),
        same_tokens=same_tokens,
    )


def _repeats(scores: list[RunScore], key: str) -> dict[str, list[str]]:
    seen: dict[str, list[str]] = defaultdict(list)
    for s in scores:
        if getattr(s, key) is not None:
            seen[str(getattr(s, key))].append(s.source)
    return {k: v for k, v in seen.items() if len(v) > 1}


def admissible(
    scores: list[RunScore], side: str, *, mixed_configs: bool = False, reference: bool = False
) -> tuple[list[RunScore], list[str]]:
    """The scores of one side that a Welch test may pool, and a line for each thing it should know.
    A run off its track (over a cap, a validation leak) is left out, with the reason, unless the side
    is a ``reference`` to measure against: there a run over a cap can only be stronger, so keeping it
    is conservative (said too). Refused: one seed twice, or one artifact twice (copies of a run are
    not independent samples: six copies of a seed give n=6 with no spread); runs of different
    configurations (``logs.config_digest``: seed, data root and preset name aside) unless
    ``mixed_configs``."""
    what = "kept (a reference off its track can only be stronger)" if reference else "left out"
    notes = [f"{side}: {what} {s.source}: {'; '.join(s.off_track)}" for s in scores if s.off_track]
    kept = [s for s in scores if reference or not s.off_track]
    if not kept:
        raise PgolfError(f"{side}: every run is off its track; nothing to compare")
    for key, what in (("seed", "seed"), ("artifact_sha256", "artifact sha256")):
        if twins := _repeats(kept, key):
            value, sources = next(iter(twins.items()))
            raise PgolfError(
                f"{side}: {what} {value[:16]} appears {len(sources)} times ({', '.join(sources)}): copies of "
                "one run are not seeds; keep one run per seed"
            )
    groups: dict[str, list[str]] = defaultdict(list)
    for s in kept:
        if s.config_digest:
            groups[s.config_digest].append(s.source)
    if len(groups) > 1:
        listed = "; ".join(f"config {d[:12]}: {len(v)} run(s), e.g. {v[0]}" for d, v in groups.items())
        if not mixed_configs:
            raise PgolfError(
                f"{side}: runs of {len(groups)} configurations ({listed}): compare one configuration per "
                "side, or pass --mixed-configs to pool them"
            )
        notes.append(f"{side}: pooling {len(groups)} configurations (--mixed-configs): {listed}")
    unknown = sum(1 for s in kept if not s.config_digest)
    if unknown and groups:
        notes.append(f"{side}: {unknown} log(s) carry no configuration: not checked against the others")
    return kept, notes


def check_sides(old: list[RunScore], new: list[RunScore]) -> None:
    """Refuse a comparison whose sides share an artifact: a run compared with itself."""
    shared = {s.artifact_sha256 for s in old} & {s.artifact_sha256 for s in new} - {None}
    if shared:
        raise PgolfError(
            f"A and B share {len(shared)} artifact(s) (sha256 {sorted(shared)[0][:16]}...): a run compared "
            "with itself"
        )
