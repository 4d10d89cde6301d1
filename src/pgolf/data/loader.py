"""The contest's training stream (seed-techniques §2.5).

Shards are read in sorted order, sequentially, wrapping around forever; no shuffling, no document
alignment. Each call takes ``(local + 1) * world_size`` contiguous tokens; rank r gets the span
``[r (local+1), (r+1)(local+1))`` and uses its first ``local`` tokens as inputs and its last
``local`` as targets. Hence the global batch, and the tokens each micro-batch sees, are the same
for any world size that divides the number of micro-batches.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from pgolf.data.shards import check_token_ids, read_header, read_shard
from pgolf.errors import ShardError


class TokenStream:
    """Contiguous tokens across shards, wrapping; its position is a small resumable state."""

    def __init__(self, files: list[Path], vocab_size: int) -> None:
        if not files:
            raise ShardError("no training shards given")
        self.files = list(files)
        self.vocab_size = vocab_size
        self.total = sum(read_header(f) for f in self.files)
        self.file_idx = 0
        self.pos = 0
        self._tokens = self._load(0)

    def _load(self, idx: int) -> np.ndarray:
        tokens = read_shard(self.files[idx])
        check_token_ids(tokens, self.vocab_size, str(self.files[idx]))
        return tokens

    def take(self, n: int) -> np.ndarray:
        if n > self.total:
            raise ShardError(
                f"need {n} contiguous training tokens per step but the shards hold only {self.total}: "
                "lower train.batch_tokens or train.seq_len, or add data"
            )
        parts = []
        while n > 0:
            avail = len(self._tokens) - self.pos
            if avail == 0:
                self.file_idx = (self.file_idx + 1) % len(self.files)
                self.pos = 0
                self._tokens = self._load(self.file_idx)
                continue
            k = min(n, avail)
            parts.append(np.asarray(self._tokens[self.pos : self.pos + k]))
            self.pos += k
            n -= k
        return np.concatenate(parts) if len(parts) > 1 else parts[0]

    def state(self) -> dict:
        return {"file_idx": self.file_idx, "pos": self.pos}

    def load_state(self, state: dict) -> None:
        self.file_idx, self.pos = int(state["file_idx"]), int(state["pos"])
        self._tokens = self._load(self.file_idx)


class DistributedTokenLoader:
    def __init__(
        self, files: list[Path], *, rank: int, world_size: int, vocab_size: int, device: torch.device
    ) -> None:
        self.stream = TokenStream(files, vocab_size)
        self.rank, self.world_size, self.device = rank, world_size, device

    def next_batch(self, local_tokens: int, seq_len: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Inputs and targets (local_tokens/seq_len, seq_len), int64, on the loader's device."""
        span = local_tokens + 1
        chunk = self.stream.take(span * self.world_size)[self.rank * span : (self.rank + 1) * span]
        t = torch.from_numpy(chunk.astype(np.int64))
        if self.device.type == "cuda":
            t = t.pin_memory().to(self.device, non_blocking=True)
        return t[:-1].view(-1, seq_len), t[1:].view(-1, seq_len)
