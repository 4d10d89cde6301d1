"""Training batches: the contest's stream, or shuffled blocks from every shard.

``stream`` (seed-techniques §2.5): shards are read in sorted order, sequentially, wrapping around
forever; no shuffling, no document alignment. Each call takes ``(local + 1) * world_size``
contiguous tokens; rank r gets the span ``[r (local+1), (r+1)(local+1))`` and uses its first
``local`` tokens as inputs and its last ``local`` as targets.

``coprime`` (sota-stack §2.1, PR #726 -> #1060): every shard is cut into blocks of ``seq_len + 1``
tokens (a block's last token is the next block's first), all blocks of all shards are numbered
in sorted shard order, and the k-th sequence of the run is block ``(offset + k * stride) mod N`` with
``stride`` coprime to N near N times the golden ratio: every block is read once before any repeats,
and neighbouring sequences come from far apart (other shards, other documents). Stride and offset
depend on the sequence length and N only. A step's global batch is its sequences in order; rank r takes
its contiguous share. A change of sequence length renumbers the blocks (N changes); the counter
carries on. The order is fixed like the stream's: it does not depend on train.seed.

Either way the global batch, and the tokens each micro-batch sees, are the same for any world size
that divides the number of micro-batches, and the position is a small resumable state.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from pgolf.config.train import LOADERS
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
        if state.get("kind", "stream") != "stream":
            raise ShardError(f"checkpoint holds a {state['kind']} loader position, not stream")
        self.file_idx, self.pos = int(state["file_idx"]), int(state["pos"])
        self._tokens = self._load(self.file_idx)


class CoprimeBlocks:
    """Sequences drawn from every shard by a coprime stride over all their blocks (module docstring)."""

    def __init__(self, files: list[Path], vocab_size: int) -> None:
        if not files:
            raise ShardError("no training shards given")
        self.files, self.vocab_size = list(files), vocab_size
        self.sizes = np.array([read_header(f) for f in self.files], dtype=np.int64)
        self.total = int(self.sizes.sum())
        self.count = 0
        self._open: dict[int, np.ndarray] = {}
        self._plan: tuple[int, np.ndarray, int, int] | None = None

    def _shard(self, i: int) -> np.ndarray:
        if i not in self._open:
            self._open[i] = read_shard(self.files[i])  # memory-mapped; ids are checked per batch
        return self._open[i]

    def plan(self, seq_len: int) -> tuple[np.ndarray, int, int]:
        """(first global block of each shard, stride, offset) for blocks of seq_len + 1 tokens."""
        if self._plan is None or self._plan[0] != seq_len:
            per = np.maximum(self.sizes - 1, 0) // seq_len
            n = int(per.sum())
            if n == 0:
                raise ShardError(f"no shard holds one block of train.seq_len + 1 = {seq_len + 1} tokens")
            rng = np.random.default_rng([seq_len, n])
            stride = max(1, round(n * 0.6180339887) + int(rng.integers(0, max(1, n // 16))))
            while math.gcd(stride, n) != 1:
                stride += 1
            starts = np.concatenate([[0], np.cumsum(per)])
            self._plan = (seq_len, starts, stride % n or 1, int(rng.integers(n)))
        return self._plan[1:]

    def take(self, rows: int, seq_len: int) -> np.ndarray:
        """The next ``rows`` sequences, (rows, seq_len + 1)."""
        starts, stride, offset = self.plan(seq_len)
        n = int(starts[-1])
        blocks = (offset + (self.count + np.arange(rows, dtype=np.int64)) * stride) % n
        self.count += rows
        shard = np.searchsorted(starts, blocks, side="right") - 1
        out = np.empty((rows, seq_len + 1), dtype=np.uint16)
        for r, (s, b) in enumerate(zip(shard.tolist(), blocks.tolist(), strict=True)):
            a = (b - int(starts[s])) * seq_len
            out[r] = self._shard(s)[a : a + seq_len + 1]
        check_token_ids(out, self.vocab_size, f"training shards {self.files[0].parent}")
        return out

    def state(self) -> dict:
        return {"kind": "coprime", "count": self.count, "total": self.total}

    def load_state(self, state: dict) -> None:
        if state.get("kind") != "coprime":
            raise ShardError(f"checkpoint holds a {state.get('kind', 'stream')} loader position, not coprime")
        if int(state["total"]) != self.total:
            raise ShardError(
                f"the training shards hold {self.total} tokens, the checkpoint's {state['total']}: the data "
                "changed, so the block order would too"
            )
        self.count = int(state["count"])


class DistributedTokenLoader:
    def __init__(
        self,
        files: list[Path],
        *,
        rank: int,
        world_size: int,
        vocab_size: int,
        device: torch.device,
        kind: str = "stream",
    ) -> None:
        if kind not in LOADERS:
            raise ShardError(f"train.loader={kind!r}; expected one of {LOADERS}")
        self.kind = kind
        self.stream = TokenStream(files, vocab_size) if kind == "stream" else CoprimeBlocks(files, vocab_size)
        self.rank, self.world_size, self.device = rank, world_size, device

    def next_batch(self, local_tokens: int, seq_len: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Inputs and targets (local_tokens/seq_len, seq_len), int64, on the loader's device."""
        if self.kind == "coprime":
            per_rank = local_tokens // seq_len
            rows = self.stream.take(per_rank * self.world_size, seq_len)
            t = torch.from_numpy(rows[self.rank * per_rank : (self.rank + 1) * per_rank].astype(np.int64))
            x, y = t[:, :-1], t[:, 1:]
        else:
            span = local_tokens + 1
            chunk = self.stream.take(span * self.world_size)[self.rank * span : (self.rank + 1) * span]
            t = torch.from_numpy(chunk.astype(np.int64))
            x, y = t[:-1].view(-1, seq_len), t[1:].view(-1, seq_len)
        if self.device.type == "cuda":
            x = x.pin_memory().to(self.device, non_blocking=True)
            y = y.pin_memory().to(self.device, non_blocking=True)
        return x, y
