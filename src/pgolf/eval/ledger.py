"""Score-before-update, checked while it happens.

Every evaluation keeps a ledger over the validation stream's positions: which targets have been
scored, and which tokens any update (a test-time-training step, a mixer's weights) has seen. Two
rules are enforced on every call, not sampled:

* a target is scored at most once, and never after an update has seen it (C3/C4 of the contest's
  field guide: the score is fixed before anything learns from the token), and at the end every
  target of the plan has been scored (``finish``);
* an update may see only tokens already scored, or the stream's first token, which is given as
  context and never scored.

Between them, for every scored token the set of tokens every earlier update had seen is known
(``learned`` at that moment), and a violation raises at once with the positions involved. The
ledger is per rank: ``sync`` merges the scored flags of a range across ranks before an update that
every rank makes from tokens other ranks scored (chunked SGD TTT).
"""

from __future__ import annotations

import numpy as np
import torch

from pgolf import dist
from pgolf.errors import PgolfError


class ScoreOrderError(PgolfError):
    """An evaluation scored a token twice, scored one an update had seen, or learned from an unscored one."""


class Ledger:
    def __init__(self, n_tokens: int) -> None:
        self.n_tokens = n_tokens
        self.scored = np.zeros(n_tokens, dtype=bool)
        self.learned = np.zeros(n_tokens, dtype=bool)
        self.updates = 0
        self.own = 0
        """Targets this rank scored (``scored`` also holds other ranks' flags merged by ``sync``)."""

    @staticmethod
    def _positions(positions: torch.Tensor | np.ndarray) -> np.ndarray:
        if isinstance(positions, torch.Tensor):
            positions = positions.detach().cpu().numpy()
        return np.sort(np.asarray(positions, dtype=np.int64).ravel())

    def score(self, positions: torch.Tensor | np.ndarray) -> None:
        """Record scored target positions; raise if one was scored before (in this call too) or an
        update had seen it."""
        p = self._positions(positions)
        if p.size and (p[0] < 1 or p[-1] >= self.n_tokens):
            raise ScoreOrderError(f"scored position outside targets 1..{self.n_tokens - 1}")
        twice = np.concatenate([p[self.scored[p]], p[1:][p[1:] == p[:-1]]])
        seen = p[self.learned[p]]
        if seen.size:
            raise ScoreOrderError(
                f"{seen.size} token(s) scored after an update had seen them (first at position {seen[0]})"
            )
        if twice.size:
            raise ScoreOrderError(f"{twice.size} target(s) scored twice (first at position {twice[0]})")
        self.scored[p] = True
        self.own += p.size

    def finish(self, expected: int, device: torch.device) -> None:
        """After the last batch: every rank's scored targets together must be the plan's ``expected``
        count (a skipped window would otherwise go unnoticed)."""
        n = dist.all_reduce_sum_(torch.tensor([self.own], dtype=torch.int64, device=device))
        if int(n) != expected:
            raise ScoreOrderError(f"the plan has {expected} targets, {int(n)} were scored")

    def learn(self, positions: torch.Tensor | np.ndarray) -> None:
        """Record the tokens an update is about to see (inputs and targets); raise unless every one was
        scored already (position 0, the given first token, excepted)."""
        p = self._positions(positions)
        unscored = p[(p > 0) & ~self.scored[p]]
        if unscored.size:
            raise ScoreOrderError(
                f"an update would see {unscored.size} unscored token(s) (first at position {unscored[0]})"
            )
        self.learned[p] = True
        self.updates += 1

    def sync(self, lo: int, hi: int, device: torch.device) -> None:
        """Merge the scored flags of positions [lo, hi) over ranks (a no-op on one process)."""
        if dist.world_size() == 1:
            return
        flags = torch.from_numpy(self.scored[lo:hi].astype(np.int32)).to(device)
        dist.all_reduce_sum_(flags)
        self.scored[lo:hi] = flags.cpu().numpy() > 0

    def summary(self) -> dict:
        return {
            "score_first_verified": True,
            "updates": self.updates,
            "tokens_learned": int(self.learned.sum()),
        }
