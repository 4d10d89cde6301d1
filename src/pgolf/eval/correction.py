"""The seeds' "error correction table" (contest PRs #108/#232): a validation leak, NOT compliant.

What it is: after training, the validation stream is scored once; the K targets with the largest
NLL are stored as (absolute position, true token) pairs in the artifact. At evaluation, every
scored target whose position is in the table gets +``boost`` (default 20) on the stored token's
logit, after the model's softcap, and the distribution is renormalised. The stored token is the
target itself, so those targets become nearly free.

Why it is not compliant: the table is built from the validation targets and carries them into
the artifact. The prediction for the target at position p then depends on that target (through
the table), not only on the tokens before it and on weights trained without validation data: it
is memorised validation data, and its "gain" says nothing about the model. It is implemented only
because users study it. Every entry point that builds or applies a table refuses to run unless
called with ``val_leak=True`` (for a CLI, a ``--val-leak`` flag), and callers label any score it
touches with ``LEAK_LABEL``; ``pgolf check`` fails a record whose config or meta sets ``val_leak``.

Serialisation v2 ("CRDT"), little-endian::

    b"CRDT"  uint32 N  then N entries, positions ascending:  varint(p_i - p_{i-1})  uint16 token_i

with p_{-1} = 0 and varint = unsigned LEB128 (7 payload bits a byte, high bit = continuation).
Positions are >= 1 and strictly increasing, so every delta is >= 1. Decoding is strict, so a table
has exactly one blob: a truncated blob, a wrong magic, a count that does not match the content (a
count that the body cannot possibly hold is refused before anything of size N is allocated), a
varint longer than 10 bytes, an overlong (zero-padded) varint, a zero delta, a position beyond
int64, a token >= the vocab size and trailing bytes all raise ``ArtifactError``.

Encoding is vectorised with numpy (a handful of array passes; ~35 ms for 1M entries). Decoding is
a plain loop over the entries (each entry's start depends on the previous varint's length): nothing
in an evaluation decodes a table, only the format's round trip does, so it is kept obvious.

As an evaluation method (``run``; only ``pgolf eval --val-leak --eval.correction_bytes N`` runs it):
the validation set is scored once with the model, the worst-scored targets go into a table of at
most N bytes, and the set is scored again with those targets' logits boosted. The score is labelled
a leak, never official, off track, and the table's bytes count in the artifact.
"""

from __future__ import annotations

import numpy as np
import torch

from pgolf.config.eval import EvalConfig
from pgolf.data.valset import ValidationSet
from pgolf.errors import ArtifactError, ConfigError, DataError
from pgolf.eval.bpb import BpbResult
from pgolf.eval.ledger import Ledger
from pgolf.eval.predict import ModelHead, ModelPredictor
from pgolf.eval.score import EvalClock, score
from pgolf.methods.windows import plan_windows

LEAK_LABEL = "val_leak_correction"
DEFAULT_BOOST = 20.0
MAGIC = b"CRDT"
HEADER_BYTES = 8  # magic + uint32 count
MIN_ENTRY_BYTES = 3  # 1-byte varint + uint16 token
MAX_VARINT_BYTES = 10  # an unsigned LEB128 of a 64-bit value
MAX_TOKEN = 0xFFFF  # tokens are stored as uint16
MAX_COUNT = 0xFFFFFFFF  # the header's uint32


def _require_val_leak(val_leak: object, what: str) -> None:
    if val_leak is not True:
        raise ConfigError(
            f"{what}: the correction table stores validation targets; it runs only with --val-leak "
            f"(val_leak=True), and every score it touches is labelled {LEAK_LABEL!r}, not compliant"
        )


def _varint_lengths(deltas: np.ndarray) -> np.ndarray:
    """Bytes of the unsigned LEB128 of each uint64 value (>= 1 each)."""
    n = np.ones(deltas.shape, dtype=np.int64)
    for k in range(1, MAX_VARINT_BYTES):
        n += deltas >= np.uint64(1 << (7 * k))
    return n


def _deltas(positions: np.ndarray) -> np.ndarray:
    return np.diff(positions, prepend=np.int64(0)).astype(np.uint64)


def _encoded_size(positions: np.ndarray) -> int:
    """Size of the blob of a table with these (ascending) positions, without encoding it."""
    return HEADER_BYTES + int(_varint_lengths(_deltas(positions)).sum()) + 2 * len(positions)


class CorrectionTable:
    """Immutable (position, token) pairs, positions strictly increasing and >= 1, tokens uint16."""

    __slots__ = ("_blob", "_on_device", "positions", "tokens")
    __hash__ = None  # type: ignore[assignment]

    def __init__(self, positions, tokens) -> None:
        pos = np.array(positions, dtype=np.int64).reshape(-1)
        tok = np.array(tokens, dtype=np.int64).reshape(-1)
        if pos.shape != tok.shape:
            raise DataError(f"correction table: {len(pos)} positions but {len(tok)} tokens")
        if len(pos) and (pos[0] < 1 or (np.diff(pos) <= 0).any()):
            raise DataError("correction table: positions must be >= 1 and strictly increasing")
        if len(tok) and (tok.min() < 0 or tok.max() > MAX_TOKEN):
            raise DataError(f"correction table: tokens must be in [0, {MAX_TOKEN}] (stored as uint16)")
        pos.flags.writeable = False
        tok = tok.astype(np.uint16)
        tok.flags.writeable = False
        self.positions: np.ndarray = pos
        self.tokens: np.ndarray = tok
        self._blob: bytes | None = None
        self._on_device: dict[torch.device, tuple[torch.Tensor, torch.Tensor]] = {}

    def __len__(self) -> int:
        return len(self.positions)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, CorrectionTable):
            return NotImplemented
        return np.array_equal(self.positions, other.positions) and np.array_equal(self.tokens, other.tokens)

    def __repr__(self) -> str:
        return f"CorrectionTable({len(self)} entries, {self.nbytes} bytes)"

    @property
    def nbytes(self) -> int:
        """Size of the encoded table in bytes (what it costs in the artifact before compression)."""
        return len(self._blob) if self._blob is not None else _encoded_size(self.positions)

    def describe(self) -> str:
        """One line: entries, bytes, bytes per entry, and the leak label."""
        n, b = len(self), self.nbytes
        per = f"{b / n:.2f}" if n else "-"
        return (
            f"correction table ({LEAK_LABEL}, not compliant): {n:,} entries, {b:,} bytes, {per} bytes/entry"
        )

    def tensors(self, device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
        """(positions, tokens) as int64 tensors on ``device``, cached per device."""
        device = torch.device(device)
        if device not in self._on_device:
            self._on_device[device] = (
                torch.from_numpy(self.positions.copy()).to(device),
                torch.from_numpy(self.tokens.astype(np.int64)).to(device),
            )
        return self._on_device[device]

    def encode(self) -> bytes:
        """The v2 ("CRDT") blob; see the module docstring."""
        if self._blob is None:
            self._blob = _encode(self.positions, self.tokens)
        return self._blob

    @classmethod
    def decode(cls, blob: bytes | bytearray | memoryview, vocab_size: int) -> CorrectionTable:
        """Parse a v2 blob strictly; tokens must be < ``vocab_size``. Raises ``ArtifactError``."""
        if not 1 <= vocab_size <= MAX_TOKEN + 1:
            raise ConfigError(f"correction table: vocab_size {vocab_size} not in [1, {MAX_TOKEN + 1}]")
        positions, tokens = _decode(np.frombuffer(blob, dtype=np.uint8), vocab_size)
        table = cls(positions, tokens)
        table._blob = bytes(blob)
        return table


def _encode(positions: np.ndarray, tokens: np.ndarray) -> bytes:
    n = len(positions)
    if n > MAX_COUNT:
        raise ArtifactError(f"correction table: {n} entries do not fit the uint32 count")
    deltas = _deltas(positions)
    vlen = _varint_lengths(deltas)
    entry = vlen + 2
    offsets = HEADER_BYTES + np.cumsum(entry) - entry  # where each entry starts
    out = np.empty(HEADER_BYTES + int(entry.sum()), dtype=np.uint8)
    out[:4] = np.frombuffer(MAGIC, dtype=np.uint8)
    out[4:8] = np.array([n], dtype="<u4").view(np.uint8)
    for k in range(int(vlen.max()) if n else 0):
        sel = np.flatnonzero(vlen > k)
        byte = (deltas[sel] >> np.uint64(7 * k)) & np.uint64(0x7F)
        byte |= np.where(vlen[sel] > k + 1, np.uint64(0x80), np.uint64(0))
        out[offsets[sel] + k] = byte.astype(np.uint8)
    at = offsets + vlen
    out[at] = (tokens & 0xFF).astype(np.uint8)
    out[at + 1] = (tokens >> 8).astype(np.uint8)
    return out.tobytes()


def _decode(buf: np.ndarray, vocab_size: int) -> tuple[np.ndarray, np.ndarray]:
    if len(buf) < HEADER_BYTES:
        raise ArtifactError(
            f"correction table: {len(buf)} bytes, shorter than the {HEADER_BYTES}-byte header"
        )
    if buf[:4].tobytes() != MAGIC:
        raise ArtifactError(f"correction table: magic {buf[:4].tobytes()!r}, expected {MAGIC!r}")
    n = int.from_bytes(buf[4:8].tobytes(), "little")
    body = buf[HEADER_BYTES:]
    if n * MIN_ENTRY_BYTES > len(body):  # checked before anything of size n exists
        raise ArtifactError(
            f"correction table: header counts {n} entries, which need at least {n * MIN_ENTRY_BYTES} "
            f"bytes, but the body has {len(body)}"
        )
    if n == 0:
        if len(body):
            raise ArtifactError(f"correction table: {len(body)} trailing bytes after the 0 entries")
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    positions, tokens = np.empty(n, dtype=np.int64), np.empty(n, dtype=np.int64)
    data, at, pos = body.tobytes(), 0, 0
    for i in range(n):
        if at == len(data):
            raise ArtifactError(f"correction table: header counts {n} entries but the blob holds {i}")
        delta, end = _read_varint(data, at, i)
        pos += delta
        if pos >= 2**63:
            raise ArtifactError(f"correction table: position of entry {i} exceeds int64")
        if end + 2 > len(data):
            raise ArtifactError(
                f"correction table: entry {i} (byte {HEADER_BYTES + at}) is truncated inside its uint16 token"
            )
        token = data[end] | data[end + 1] << 8
        if token >= vocab_size:
            raise ArtifactError(
                f"correction table: entry {i} has token {token}, not below vocab size {vocab_size}"
            )
        positions[i], tokens[i], at = pos, token, end + 2
    if at < len(data):
        raise ArtifactError(
            f"correction table: {len(data) - at} trailing bytes after the {n} entries the header counts"
        )
    return positions, tokens


def _read_varint(data: bytes, at: int, entry: int) -> tuple[int, int]:
    """The delta of the varint at ``at`` and where the entry's token starts; refuses a truncated or
    over-long varint, a zero-padded one, a delta >= 2^63 and a zero delta (one blob per table)."""
    value, k = 0, at
    while True:
        if k - at == MAX_VARINT_BYTES:
            raise ArtifactError(
                f"correction table: entry {entry} (byte {HEADER_BYTES + at}) has a varint longer than "
                f"{MAX_VARINT_BYTES} bytes"
            )
        if k == len(data):
            raise ArtifactError(
                f"correction table: entry {entry} (byte {HEADER_BYTES + at}) is truncated inside its varint"
            )
        byte = data[k]
        value |= (byte & 0x7F) << (7 * (k - at))
        k += 1
        if byte < 0x80:
            break
    if k - at > 1 and data[k - 1] == 0:
        raise ArtifactError(f"correction table: entry {entry} has an overlong (zero-padded) varint")
    if k - at == MAX_VARINT_BYTES:
        raise ArtifactError(f"correction table: entry {entry} has a position delta >= 2^63")
    if value == 0:
        raise ArtifactError(
            f"correction table: entry {entry} has position delta 0 (positions must be >= 1 and rise)"
        )
    return value, k


def _as_numpy(x, name: str) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    a = np.asarray(x)
    if a.ndim != 1:
        raise DataError(f"build_table: {name} must be 1-D, got shape {a.shape}")
    return a


def _largest_fitting(positions: np.ndarray, rank: np.ndarray, budget: int) -> int:
    """Largest K whose table (the K lowest ranks) encodes within ``budget`` bytes, by binary search
    on the actual encoded size. The size is in fact strictly increasing in K: a new entry either
    appends a delta or splits one delta d = a + b into a and b, and len(a) + len(b) >= len(d) for
    LEB128 lengths (a + b has at most one bit more than max(a, b)), plus 2 token bytes. The result
    is still checked against the budget rather than assumed from that argument."""
    if budget < HEADER_BYTES:
        raise ConfigError(f"build_table: budget_bytes {budget} < the {HEADER_BYTES}-byte header")

    def size(k: int) -> int:
        return _encoded_size(positions[rank < k])

    n, room = len(positions), budget - HEADER_BYTES
    lo = min(n, room // (MAX_VARINT_BYTES + 1))  # every entry takes 3..11 bytes
    hi = min(n, room // MIN_ENTRY_BYTES)
    while lo < hi:  # invariant: size(lo) <= budget; the answer is in [lo, hi]
        mid = (lo + hi + 1) // 2
        if size(mid) <= budget:
            lo = mid
        else:
            hi = mid - 1
    if size(lo) > budget:  # cannot happen by the argument above; checked, not assumed
        raise ArtifactError(f"build_table: {lo} entries encode to {size(lo)} > {budget} bytes")
    return lo


def build_table(
    nll,
    positions,
    targets,
    *,
    val_leak: bool = False,
    max_entries: int | None = None,
    budget_bytes: int | None = None,
) -> CorrectionTable:
    """The table of the highest-NLL targets: NOT compliant (stores validation targets).

    ``nll`` (float), ``positions`` (int, strictly increasing, >= 1) and ``targets`` (token ids <
    65536) are 1-D, one entry per scored target (numpy arrays, tensors or sequences). Exactly one of
    ``max_entries`` (keep the K = min(max_entries, n) highest) or ``budget_bytes`` (keep the largest
    K whose blob fits, found by binary search on the actual encoded size, which is strictly
    increasing in K, and checked to fit) is given. Ties in NLL keep the earlier position. Refuses unless
    ``val_leak=True``.
    """
    _require_val_leak(val_leak, "build_table")
    if (max_entries is None) == (budget_bytes is None):
        raise ConfigError("build_table: give exactly one of max_entries and budget_bytes")
    loss = _as_numpy(nll, "nll").astype(np.float64)
    pos = _as_numpy(positions, "positions")
    tgt = _as_numpy(targets, "targets")
    if not (len(loss) == len(pos) == len(tgt)):
        raise DataError(f"build_table: {len(loss)} nll, {len(pos)} positions, {len(tgt)} targets")
    if not (np.issubdtype(pos.dtype, np.integer) and np.issubdtype(tgt.dtype, np.integer)):
        raise DataError("build_table: positions and targets must be integers")
    pos, tgt = pos.astype(np.int64), tgt.astype(np.int64)
    if np.isnan(loss).any():
        raise DataError("build_table: nll contains NaN")
    if len(pos) and (pos[0] < 1 or (np.diff(pos) <= 0).any()):
        raise DataError("build_table: positions must be >= 1 and strictly increasing")
    if len(tgt) and (tgt.min() < 0 or tgt.max() > MAX_TOKEN):
        raise DataError(f"build_table: targets must be in [0, {MAX_TOKEN}] (stored as uint16)")
    order = np.argsort(-loss, kind="stable")
    rank = np.empty(len(order), dtype=np.int64)
    rank[order] = np.arange(len(order))
    if max_entries is not None:
        if max_entries < 0:
            raise ConfigError(f"build_table: max_entries {max_entries} < 0")
        k = min(max_entries, len(pos))
    else:
        k = _largest_fitting(pos, rank, int(budget_bytes))
    keep = rank < k  # positions stay ascending: they were
    return CorrectionTable(pos[keep], tgt[keep])


def apply(
    log_probs_or_logits: torch.Tensor,
    target_positions: torch.Tensor,
    table: CorrectionTable,
    boost: float = DEFAULT_BOOST,
    *,
    val_leak: bool = False,
) -> torch.Tensor:
    """Boost the stored token's logit at every slot whose absolute target position is in the table.

    ``log_probs_or_logits`` is (B, T, V), the model's logits after its softcap (log-probabilities
    work too: a log-softmax of the result is the same either way); ``target_positions`` is (B, T)
    int64, the absolute position of the target each slot predicts. Returns a new tensor with
    ``+boost`` added to ``[b, t, table token]`` where ``target_positions[b, t]`` is in the table and
    every other value unchanged; the caller's log-softmax / cross-entropy renormalises. Look-up is
    ``torch.searchsorted`` on the sorted positions, with no host sync. NOT compliant: refuses unless
    ``val_leak=True``.
    """
    _require_val_leak(val_leak, "apply")
    x, where = log_probs_or_logits, target_positions
    if x.dim() != 3 or tuple(where.shape) != tuple(x.shape[:2]):
        raise DataError(
            f"apply: logits {tuple(x.shape)} and positions {tuple(where.shape)} must be (B, T, V), (B, T)"
        )
    if where.dtype != torch.int64:
        raise DataError(f"apply: target_positions must be int64, got {where.dtype}")
    vocab = x.shape[2]
    if len(table) and int(table.tokens.max()) >= vocab:
        raise ArtifactError(f"apply: table token {int(table.tokens.max())} does not fit vocab size {vocab}")
    out = x.clone(memory_format=torch.contiguous_format)
    if len(table) == 0:
        return out
    pos, tok = table.tensors(x.device)
    idx = torch.searchsorted(pos, where).clamp_(max=len(table) - 1)
    hit = pos[idx] == where
    token = torch.where(hit, tok[idx], 0).reshape(-1, 1)
    add = (hit.to(out.dtype) * boost).reshape(-1, 1)
    out.view(-1, vocab).scatter_add_(1, token, add)  # misses add 0.0 to token 0: unchanged
    return out


# The table as an evaluation method: only ``pgolf eval --val-leak --eval.correction_bytes N`` runs it.


class CorrectionHead:
    """The seeds' correction table applied to the model's distribution (NOT compliant)."""

    def __init__(self, table, boost: float, val_leak: bool) -> None:
        self.table, self.boost, self.val_leak = table, boost, val_leak

    def nll(self, log_probs, batch):
        boosted = apply(log_probs, batch.positions(), self.table, self.boost, val_leak=self.val_leak)
        return -torch.log_softmax(boosted, -1).gather(-1, batch.y.unsqueeze(-1)).squeeze(-1)

    def observe(self, batch, ledger) -> None:
        return None


class _Capture(ModelHead):
    """The model's NLL, remembered per scored target (the correction table's first pass)."""

    def __init__(self) -> None:
        self.parts: list[tuple] = []

    def nll(self, log_probs, batch):
        nll = super().nll(log_probs, batch)
        mask = batch.scored if batch.scored is not None else torch.ones_like(nll, dtype=torch.bool)
        self.parts.append((nll[mask].cpu(), batch.positions()[mask].cpu(), batch.y[mask].cpu()))
        return nll


def correction_table(model, valset: ValidationSet, cfg: EvalConfig, device: torch.device):
    """Score the validation set once and keep its worst targets within cfg.correction_bytes."""
    capture = _Capture()
    _score(model, valset, cfg, device, head=capture)
    nll, pos, tgt = (torch.cat(x) for x in zip(*capture.parts, strict=True))
    order = torch.argsort(pos)
    return build_table(
        nll[order], pos[order], tgt[order], val_leak=cfg.val_leak, budget_bytes=cfg.correction_bytes
    )


def score_with_table(
    model, valset: ValidationSet, cfg: EvalConfig, device: torch.device, ledger: Ledger, clock: EvalClock
) -> tuple[BpbResult, CorrectionTable]:
    with clock.phase("leak_table"):
        table = correction_table(model, valset, cfg, device)
    head = CorrectionHead(table, cfg.correction_boost, cfg.val_leak)
    return _score(model, valset, cfg, device, head=head, ledger=ledger, clock=clock), table


def _score(model, valset: ValidationSet, cfg: EvalConfig, device: torch.device, **kwargs) -> BpbResult:
    """The validation set scored by ``model`` over ``cfg``'s window plan (``kwargs``: score's head,
    ledger and clock)."""
    windows = plan_windows(valset.tokens, cfg.method, cfg.seq_len, cfg.stride)
    predictor = ModelPredictor(model.eval(), device)
    return score(
        predictor,
        valset.tokens,
        valset.target_bytes,
        windows,
        batch_tokens=cfg.batch_tokens,
        device=device,
        **kwargs,
    )


def run(
    model,
    valset: ValidationSet,
    cfg: EvalConfig,
    device: torch.device,
    clock: EvalClock,
    ledger: Ledger,
    head,
) -> object:
    """``run_method``'s hook: the validation set scored once to build the table, then again with it;
    the table's bytes count in the artifact."""
    from pgolf.eval.run import MethodResult

    r, table = score_with_table(model, valset, cfg, device, ledger, clock)
    return MethodResult(r, ledger.summary(), table.nbytes, {"correction_table": table.describe()})
