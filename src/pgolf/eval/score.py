"""The score-first loop: every target of a window plan scored once, under an eval clock.

For each batch of equal-length windows of this rank's share, the predictor gives normalised
log-probabilities, the scored targets' NLL and bytes are added to float64 sums, and only then is
the predictor told what was scored (``observe``): nothing learns from a token before its score is
final. Ranks take contiguous shares of the plan and all-reduce the sums.
"""

from __future__ import annotations

import contextlib
import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

from pgolf import dist
from pgolf.data.bytes import ByteLUT
from pgolf.eval.bpb import BpbAccumulator, BpbResult
from pgolf.eval.predict import Predictor
from pgolf.eval.windows import Window, check_plan, rank_share


class EvalClock:
    """Seconds per named phase (load, score, ...); their sum is what the track's eval cap judges.
    ``sync`` makes queued device work count before each reading."""

    def __init__(self, sync: Callable[[], None] = lambda: None, now: Callable[[], float] = time.perf_counter):
        self.sync, self.now = sync, now
        self.phases: dict[str, float] = {}

    @contextlib.contextmanager
    def phase(self, name: str):
        self.sync()
        t0 = self.now()
        try:
            yield
        finally:
            self.sync()
            self.phases[name] = self.phases.get(name, 0.0) + self.now() - t0


def _batches(windows: list[Window], per_batch: int):
    """Runs of at most ``per_batch`` consecutive windows of equal length."""
    i = 0
    while i < len(windows):
        j = i + 1
        while j < len(windows) and j - i < per_batch and windows[j].length == windows[i].length:
            j += 1
        yield windows[i:j]
        i = j


def score(
    predictor: Predictor,
    tokens: torch.Tensor,
    lut: ByteLUT,
    windows: list[Window],
    *,
    batch_tokens: int,
    device: torch.device,
) -> BpbResult:
    """Score every target the plan assigns; returns the summed NLL, tokens and bytes over all ranks."""
    check_plan(windows, tokens.numel())
    world = dist.world_size()
    mine = rank_share(windows, dist.rank(), world)
    acc = BpbAccumulator(device)
    lut = lut.to(device)
    seq = max((w.length for w in windows), default=1)
    per_batch = max(1, batch_tokens // (seq * world))
    for batch in _batches(mine, per_batch):
        x, y = _gather(tokens, batch, device)
        logp = predictor.log_probs(x)  # (B, T, V)
        nll = -logp.gather(-1, y.unsqueeze(-1)).squeeze(-1)  # (B, T)
        scored = _scored_mask(batch, x.shape, device)
        if scored is None:  # every position of every window: keep the tensors whole
            acc.add(nll, lut.target_bytes(x, y))
            scored = torch.ones_like(y, dtype=torch.bool)
        else:
            acc.add(nll[scored], lut.target_bytes(x, y)[scored])
        predictor.observe(x, y, scored)
    dist.all_reduce_sum_(acc.sums)
    return acc.result()


def _gather(
    tokens: torch.Tensor, batch: list[Window], device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    t = batch[0].length
    contiguous = all(b.start == a.start + t for a, b in itertools.pairwise(batch))
    if contiguous:  # the plain plan: one slice, as the contest reads it
        chunk = tokens[batch[0].start : batch[-1].start + t + 1].to(device, non_blocking=True)
        return chunk[:-1].view(-1, t), chunk[1:].view(-1, t)
    rows = torch.stack([tokens[w.start : w.start + t + 1] for w in batch]).to(device, non_blocking=True)
    return rows[:, :-1], rows[:, 1:]


def _scored_mask(batch: list[Window], shape: torch.Size, device: torch.device) -> torch.Tensor | None:
    if all(w.score_from == 0 for w in batch):
        return None
    start = torch.tensor([w.score_from for w in batch], device=device)
    return torch.arange(shape[1], device=device)[None, :] >= start[:, None]


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
        }

    def log_lines(self) -> list[str]:
        """The contest's two final lines when official; one line that says it is not, otherwise."""
        r, ms = self.result, 1000 * self.seconds
        if not self.official:
            return [
                f"unofficial_{self.label}_eval val_loss:{r.val_loss:.8f} val_bpb:{r.val_bpb:.8f} "
                f"eval_time:{ms:.0f}ms ({self.note})"
            ]
        return [
            f"final_{self.label}_roundtrip val_loss:{r.val_loss:.4f} val_bpb:{r.val_bpb:.4f} "
            f"eval_time:{ms:.0f}ms",
            f"final_{self.label}_roundtrip_exact val_loss:{r.val_loss:.8f} val_bpb:{r.val_bpb:.8f}",
        ]
