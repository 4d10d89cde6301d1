"""The score-first loop: every target of a window plan scored once, under an eval clock.

The plan is cut into chunks by each window's first scored target (one chunk unless the predictor
adapts, e.g. chunked SGD TTT). Inside a chunk, each batch of equal-length windows of this rank's
share gets normalised log-probabilities from the predictor; the head turns them into the scored
targets' NLL (the model's own, or a mixture with eval-time experts), which is added with the bytes
to float64 sums, and the ledger records the scored positions; only then may the head learn from
them (``observe``). After a chunk every rank's scored flags for it are merged and the predictor may
adapt on its tokens (``end_chunk``), never after the last chunk. The ledger raises the moment a
token would be scored twice, scored after an update saw it, or learned before it was scored.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

from pgolf import dist
from pgolf.eval.bpb import BpbAccumulator, BpbResult
from pgolf.eval.ledger import Ledger
from pgolf.eval.predict import Batch, Head, ModelHead, Predictor, padded_batch
from pgolf.methods.windows import Window, check_plan, deal
from pgolf.runlog import Ticker

LUMP_PHASES = ("global_sgd",)
"""Clock phases whose time does not grow with the targets scored: the projection adds them as spent,
not as a rate."""


class EvalClock:
    """Seconds per named phase (load, warmup, score, ...); their sum is what the track's eval cap
    judges. ``sync`` makes queued device work count before each reading. With ``echo``, the first
    ``progress`` report after ``project_after_s`` seconds of scoring prints a projected total (and
    whether it breaks ``cap_s``), so a long evaluation says early where it is heading; then a line of
    targets scored every ~30 s (``Ticker``)."""

    def __init__(
        self,
        sync: Callable[[], None] = lambda: None,
        now: Callable[[], float] = time.perf_counter,
        *,
        echo: Callable[[str], None] | None = None,
        cap_s: float = 0.0,
        project_after_s: float = 10.0,
    ) -> None:
        self.sync, self.now = sync, now
        self.phases: dict[str, float] = {}
        self.echo, self.cap_s, self.project_after_s = echo, cap_s, project_after_s
        self._open: float | None = None
        self._scoring_from: float | None = None
        self.projection: float | None = None
        """The projected total seconds, once printed."""

    @contextlib.contextmanager
    def phase(self, name: str):
        self.sync()
        t0 = self._open = self.now()
        try:
            yield
        finally:
            self.sync()
            self._open = None
            self.phases[name] = self.phases.get(name, 0.0) + self.now() - t0

    def elapsed(self) -> float:
        """Seconds on the clock so far, the open phase included."""
        return sum(self.phases.values()) + (self.now() - self._open if self._open is not None else 0.0)

    def progress(self, done: int, total: int, pending: str = "") -> None:
        """``done`` of ``total`` targets scored (0 marks where scoring starts); ``pending`` names
        work still to come that does not scale with targets (e.g. global SGD phases)."""
        if self._scoring_from is None:
            self._scoring_from = self.elapsed()
            self.tick = Ticker(self.echo, "eval_targets", total, now=self.now)
            return
        self.tick(done)
        if self.echo is None or self.projection is not None or not 0 < done < total:
            return
        lumps = sum(self.phases.get(name, 0.0) for name in LUMP_PHASES)
        spent = self.elapsed() - self._scoring_from - lumps
        if spent < self.project_after_s:
            return
        self.projection = self._scoring_from + lumps + spent * total / done
        over = ""
        if self.cap_s:
            breach = self.projection > self.cap_s
            over = f", OVER the {self.cap_s:g} s cap" if breach else f" (cap {self.cap_s:g} s)"
        more = f", plus {pending}" if pending else ""
        self.echo(
            f"eval_projection: {done}/{total} targets in {spent:.1f} s of scoring; projected total "
            f"{self.projection:.1f} s{more}{over}"
        )


def _batches(windows: list[Window], per_batch: int, pad: bool):
    """This rank's batches: runs of at most ``per_batch`` consecutive windows of equal length, in plan
    order; or, when the head takes padding (``ModelHead``), the windows longest first, each batch
    padded to its first and holding as many tokens as ``per_batch`` of the longest, so that short
    documents share a forward instead of taking one each (a head that learns needs the plan's order)."""
    if not windows:
        return
    budget = per_batch * max(w.length for w in windows)
    if pad:
        windows = sorted(windows, key=lambda w: w.length, reverse=True)
    i = 0
    while i < len(windows):
        j, most = i + 1, max(1, budget // windows[i].length) if pad else per_batch
        while j < len(windows) and j - i < most and (pad or windows[j].length == windows[i].length):
            j += 1
        yield windows[i:j]
        i = j


def first_target(w: Window) -> int:
    return w.start + w.score_from + 1


def chunk_plan(windows: list[Window], chunk_tokens: int) -> list[list[Window]]:
    """Consecutive windows grouped by the chunk of their first scored target (targets 1..K are chunk
    0, K+1..2K chunk 1, ...); one chunk when ``chunk_tokens`` is 0."""
    if not chunk_tokens:
        return [windows]
    return [list(g) for _, g in itertools.groupby(windows, lambda w: (first_target(w) - 1) // chunk_tokens)]


def score(
    predictor: Predictor,
    tokens: torch.Tensor,
    target_bytes: torch.Tensor,
    windows: list[Window],
    *,
    batch_tokens: int,
    device: torch.device,
    head: Head | None = None,
    chunk_tokens: int = 0,
    ledger: Ledger | None = None,
    clock: EvalClock | None = None,
) -> BpbResult:
    """Score every target the plan assigns; returns the summed NLL, tokens and bytes (``target_bytes``:
    the bytes of the target at each stream position) over all ranks.
    Scoring time goes to the clock's ``score`` phase, adaptation to ``adapt``."""
    head = head or ModelHead()
    ledger = ledger or Ledger(tokens.numel())
    clock = clock or EvalClock()
    with clock.phase("score"):
        expected = check_plan(windows, tokens.numel())
    world = dist.world_size()
    acc = BpbAccumulator(device)
    target_bytes = target_bytes.to(device)
    seq = max((w.length for w in windows), default=1)
    per_batch, pad = max(1, batch_tokens // (seq * world)), getattr(head, "takes_padding", False)
    chunks = chunk_plan(windows, chunk_tokens)
    clock.progress(0, expected)
    done = 0
    for c, chunk in enumerate(chunks):
        with clock.phase("score"):
            for group in _batches(deal(chunk, dist.rank(), world), per_batch, pad):
                batch = _gather(tokens, group, device)
                nll = head.nll(predictor.log_probs(batch.x), batch)  # (B, T)
                positions = batch.scored_positions()
                if batch.scored is None:  # every position of every window: keep the tensors whole
                    acc.add(nll, batch.target_bytes(target_bytes))
                else:  # no boolean indexing: it would wait for the device to count the positions
                    acc.add_masked(nll, batch.target_bytes(target_bytes), batch.scored, positions.size)
                ledger.score(positions)
                head.observe(batch, ledger)
                done += positions.size * world  # shares are even to a window: close enough to project
                clock.progress(done, expected)
        if c < len(chunks) - 1:
            lo, hi = first_target(chunk[0]) - 1, chunk[-1].start + chunk[-1].length
            with clock.phase("adapt"):
                ledger.sync(lo, hi + 1, device)
                predictor.end_chunk(tokens, lo, hi, ledger)
    with clock.phase("score"):
        ledger.finish(expected, device)
        dist.all_reduce_sum_(acc.sums)
    return acc.result()


def _gather(tokens: torch.Tensor, group: list[Window], device: torch.device) -> Batch:
    t = group[0].length
    if any(w.length != t for w in group):
        return padded_batch(tokens, group, device)
    starts = torch.tensor([w.start for w in group], device=device)
    scored = None
    if any(w.score_from for w in group):
        first = torch.tensor([w.score_from for w in group], device=device)
        scored = torch.arange(t, device=device)[None, :] >= first[:, None]
    if all(b.start == a.start + t for a, b in itertools.pairwise(group)):  # one slice, as the contest reads
        chunk = tokens[group[0].start : group[-1].start + t + 1].to(device, non_blocking=True)
        return Batch(chunk[:-1].view(-1, t), chunk[1:].view(-1, t), starts, scored, group)
    rows = torch.stack([tokens[w.start : w.start + t + 1] for w in group]).to(device, non_blocking=True)
    return Batch(rows[:, :-1], rows[:, 1:], starts, scored, group)


@dataclass(frozen=True)
class ScoreReport:
    """A scored evaluation: the sums, the eval clock's phases, and whether it is the official score
    of the artifact (its recorded validation data and window length; the track is judged apart)."""

    result: BpbResult
    phases: dict[str, float]
    label: str
    """The export scheme, e.g. ``int8_zlib``."""
    official: bool = True
    note: str = ""
    """Why the score is not official, when it is not."""
    ledger: dict = dataclasses.field(default_factory=dict)
    """The score-before-update check's summary (``Ledger.summary``)."""
    details: dict = dataclasses.field(default_factory=dict)
    """What the method reports besides the score (mixer weights, tilt hints, a leak table)."""
    val_leak: bool = False
    """The method read validation targets (eval.val_leak): never official, always off track."""
    split: str = "val"
    """What was scored: ``val``, or ``dev`` (``data.score_split``; never official)."""

    @property
    def seconds(self) -> float:
        return sum(self.phases.values())

    def to_dict(self) -> dict:
        r = self.result
        return {
            "val_loss": r.val_loss,
            "val_bpb": r.val_bpb,
            "val_tokens": r.tokens,
            "val_bytes": r.bytes,
            "eval_seconds": round(self.seconds, 3),
            "eval_phases": {k: round(v, 3) for k, v in self.phases.items()},
            "official_score": self.official,
            "split": self.split,
            **({"val_leak": True} if self.val_leak else {}),
            **({"score_first": self.ledger} if self.ledger else {}),
            **({"method_details": self.details} if self.details else {}),
        }

    def log_lines(self) -> list[str]:
        """The contest's two final lines when official; one line that says it is not, otherwise."""
        r, ms, s = self.result, 1000 * self.seconds, self.split
        if not self.official:
            return [
                f"unofficial_{self.label}_eval {s}_loss:{r.val_loss:.8f} {s}_bpb:{r.val_bpb:.8f} "
                f"eval_time:{ms:.0f}ms ({self.note})"
            ]
        return [
            f"final_{self.label}_roundtrip val_loss:{r.val_loss:.4f} val_bpb:{r.val_bpb:.4f} "
            f"eval_time:{ms:.0f}ms",
            f"final_{self.label}_roundtrip_exact val_loss:{r.val_loss:.8f} val_bpb:{r.val_bpb:.8f}",
        ]
