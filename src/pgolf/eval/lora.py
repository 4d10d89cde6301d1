"""Per-document batched LoRA test-time training, score first (seed-techniques §11.1; sota-stack §2.6).

The stream is cut into documents (``doc_spans``: each ends with the next one's BOS as its last
target, so the scored set is the flat stream's). Each rank is dealt every world-th document
(``deal``), longest first, ``lora_batch_docs`` at a time, one rank-r adapter per document on the chosen
projections of every block (q, k, v, o) and on the head: delta(x) = s * B (A x), A ~ U(+-1/sqrt(in)),
B = 0, s = alpha/r (1 when alpha is 0). A document is read in chunks of ``eval.stride`` targets from
its start (``chunk_windows``: the window of at most ``eval.seq_len`` inputs ending at the chunk, no
context from other documents). For chunk index c, every document that has one:

1. one forward with the adapters gives the chunk's distributions; the head turns them into NLL,
   which is added to the sums, and the ledger records the targets as scored;
2. then, for documents whose chunk c is not their last, one Adam step on the sum over documents of
   the chunk's mean NLL (the same forward: the score was recorded before the update).

Adapters and optimiser state are reset for every batch of documents, A from a generator seeded by
the document's start (its score must not depend on the batch it landed in). With ``lora_warm_a``
only B is reset: A keeps what it learned on earlier documents, so batches then follow stream order
(length-sorted batches would let a later document's A score an earlier one: C1). The base model is
frozen, except in phased global SGD (``lora_phase_docs``, sota-stack §2.6): the stream's first N
documents are cut into ``lora_phases`` equal shares (``phase_segments``); once every rank has scored a
share, the base weights train one SGD epoch on it (``global_sgd``), and every later document is
scored with them. Phases cut the stream, not a length-sorted queue (the records' queue lets a later
document train the weights that score an earlier one: C1 in stream order). Eval-time experts mix in
after every target is scored, in a stream-order pass (``MixtureHead.mix_stream``).
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pgolf import dist
from pgolf.config.eval import EvalConfig
from pgolf.errors import DataError
from pgolf.eval.bpb import BpbAccumulator, BpbResult
from pgolf.eval.ledger import Ledger
from pgolf.eval.predict import Batch, Head, ModelHead, padded_batch
from pgolf.eval.score import EvalClock
from pgolf.eval.sgd import sgd_step, trainable
from pgolf.methods.base import CostInputs
from pgolf.methods.windows import Window, check_plan, deal, doc_spans

DEFAULT_LR = 0.01


class BatchedLoRA(nn.Module):
    """One low-rank adapter per document of a batch for a map in_features -> out_features."""

    def __init__(self, docs: int, in_features: int, out_features: int, rank: int, scale: float) -> None:
        super().__init__()
        self.A = nn.Parameter(torch.empty(docs, rank, in_features))
        self.B = nn.Parameter(torch.empty(docs, out_features, rank))
        self.scale = scale
        self.rows: Tensor | None = None
        """Which documents' adapters the current forward's rows use."""
        self.reset(keep_a=False)

    @torch.no_grad()
    def reset(self, keep_a: bool, seeds: list[int] | None = None) -> None:
        """B to zero; A (unless kept) to U(+-1/sqrt(in)) drawn per row from a generator seeded by
        ``seeds[row]`` (the document's start), so a document's initial adapter does not depend on
        which batch or row the document landed in (that depends on later documents' lengths)."""
        self.B.zero_()
        if keep_a:
            return
        bound = 1 / math.sqrt(self.A.size(-1))
        rows = []
        for seed in seeds if seeds is not None else range(self.A.size(0)):
            g = torch.Generator().manual_seed(int(seed))
            rows.append(torch.rand(self.A.shape[1:], generator=g, dtype=torch.float32) * 2 * bound - bound)
        self.A[: len(rows)].copy_(torch.stack(rows))  # one host-to-device copy per adapter

    def forward(self, x: Tensor) -> Tensor:
        a, b = self.A[self.rows], self.B[self.rows]
        return self.scale * torch.einsum("btr,bor->bto", torch.einsum("bti,bri->btr", x.float(), a), b)


class Adapters:
    """Adapters for ``cfg.lora_targets``, hooked into the model while attached: hooks on the q, k, v
    and o projections of every block, and the model's ``head_delta`` for the head."""

    def __init__(self, model: nn.Module, cfg: EvalConfig, docs: int, device: torch.device) -> None:
        scale = cfg.lora_alpha / cfg.lora_rank if cfg.lora_alpha else 1.0
        names = {"q": "c_q", "k": "c_k", "v": "c_v", "o": "proj"}
        self.model, self.head, self.hooked, self.handles = model, None, [], []
        for target in cfg.lora_target_list:
            if target == "head":
                d, v = model.cfg.model_dim, model.cfg.vocab_size
                self.head = BatchedLoRA(docs, d, v, cfg.lora_rank, scale).to(device)
                continue
            for block in model.blocks:
                lin = getattr(block.attn, names[target])
                lora = BatchedLoRA(docs, lin.in_features, lin.out_features, cfg.lora_rank, scale).to(device)
                self.hooked.append((lin, lora))
        self.modules = [lora for _, lora in self.hooked] + ([self.head] if self.head is not None else [])

    def attach(self) -> None:
        self.model.head_delta = self.head
        for lin, lora in self.hooked:
            hook = lambda m, args, out, lora=lora: out + lora(args[0]).to(out.dtype)  # noqa: E731
            self.handles.append(lin.register_forward_hook(hook))

    def detach(self) -> None:
        self.model.head_delta = None
        for h in self.handles:
            h.remove()
        self.handles = []


def chunk_windows(n_targets: int, seq_len: int, chunk: int) -> list[Window]:
    """One document's test-time-training plan (seed-techniques §11.1): chunk c scores its targets
    [cK, min((c+1)K, n)), so every chunk is a separate forward an adapter can learn from before the
    next one. Its window starts at max(0, (c+1)K - seq_len) even when the document ends inside the
    chunk: the seed's start max(0, min((c+1)K, n) - seq_len) gives the last chunk's targets more or
    less context depending on where the document ends, i.e. on whether a later token is a BOS."""
    if not 1 <= chunk <= seq_len:
        raise DataError(f"eval.stride={chunk} (the TTT chunk) must be between 1 and the window {seq_len}")
    windows = []
    for lo in range(0, n_targets, chunk):
        ws = max(0, lo + chunk - seq_len)
        windows.append(Window(ws, min(lo + chunk, n_targets) - ws, lo - ws))
    return windows


def doc_plan(a: int, b: int, seq_len: int, chunk: int) -> list[Window]:
    """``chunk_windows`` of the document of inputs [a, b), at its place in the stream."""
    return [Window(a + w.start, w.length, w.score_from) for w in chunk_windows(b - a, seq_len, chunk)]


def phase_segments(n_docs: int, phase_docs: int, phases: int) -> list[tuple[int, int]]:
    """Documents [lo, hi) of the stream scored between two phases of global SGD: the first
    ``phase_docs`` documents cut into ``phases`` equal shares, then the rest (one segment of all
    documents when ``phase_docs`` is 0). The cuts depend on ``phase_docs`` alone, clipped to the
    stream, never on how many documents follow (a later BOS must not move an earlier cut). Empty
    shares are dropped."""
    cuts = [0, *(min(phase_docs * k // phases, n_docs) for k in range(1, phases + 1) if phase_docs), n_docs]
    return [(lo, hi) for lo, hi in itertools.pairwise(cuts) if hi > lo]


@dataclass
class LoraWork:
    steps: int
    """Sequential chunk iterations (one per chunk of each batch of documents): a forward, then a
    backward and an adapter step unless it is the batch's last chunk (costed as one all the same)."""
    tokens: int
    """Tokens computed: each chunk's rows padded to its longest window."""
    attention: int
    """Sum over rows of t (t + 1), t the padded length (attention FLOPs are quadratic)."""
    how: str


def iterations(cfg, n_tokens: int, tokens, ranks: int, seq: int, mean: float) -> LoraWork:
    """LoRA TTT's work on its busiest rank, counted as ``eval.lora`` deals, sorts and batches the
    documents when the tokens are at hand; else from documents of ``mean`` tokens, a lower bound:
    each batch runs as many steps as its longest document has chunks."""
    if tokens is None:
        docs = max(1, round(n_tokens / mean))
        lengths = [min(seq, (c + 1) * cfg.stride) for c in range(math.ceil(mean / cfg.stride))]
        per_rank = math.ceil(docs / ranks)
        steps = math.ceil(per_rank / cfg.lora_batch_docs) * len(lengths)
        return LoraWork(
            steps,
            per_rank * sum(lengths),
            per_rank * sum(t * (t + 1) for t in lengths),
            f"no tokens: {docs:,} documents of the mean length {mean:,.0f}",
        )
    plans = [chunk_windows(b - a, seq, cfg.stride) for a, b in doc_spans(tokens)]
    busiest = LoraWork(0, 0, 0, f"{len(plans):,} documents, dealt and batched as lora_ttt does")
    for rank in range(ranks):
        work = LoraWork(0, 0, 0, busiest.how)
        for lo, hi in phase_segments(len(plans), cfg.lora_phase_docs, cfg.lora_phases):
            mine = deal(plans[lo:hi], rank, ranks)
            if not cfg.lora_warm_a:
                mine = sorted(mine, key=len, reverse=True)
            for i in range(0, len(mine), cfg.lora_batch_docs):
                batch = mine[i : i + cfg.lora_batch_docs]
                for c in range(max(map(len, batch))):
                    rows, t = sum(c < len(p) for p in batch), max(p[c].length for p in batch if c < len(p))
                    work.steps, work.tokens, work.attention = (
                        work.steps + 1,
                        work.tokens + rows * t,
                        work.attention + rows * t * (t + 1),
                    )
        busiest = max(busiest, work, key=lambda w: (w.steps, w.tokens))
    return busiest


def global_sgd_cost(cfg: EvalConfig, work: CostInputs) -> tuple[str, float, str]:
    """The phases' SGD: pieces of the first ``lora_phase_docs`` documents, one epoch, each step padded
    to its longest piece; counted from the documents when the tokens are at hand."""
    seq, n_tokens = work.seq_len, work.n_tokens
    if work.tokens is not None:
        spans = doc_spans(work.tokens)
        docs, spans = len(spans), spans[: cfg.lora_phase_docs]
        lengths = [min(seq, b - x) for a, b in spans for x in range(a, b, seq)]
        how = f"{len(lengths):,} pieces of {len(spans):,} of {docs:,} documents"
    else:  # ~(prefix / seq) full pieces plus one partial piece per document, all padded
        docs = max(1, round(n_tokens / work.mean_document))
        phase_docs = min(cfg.lora_phase_docs, docs)
        lengths = [seq] * (math.ceil(phase_docs / docs * n_tokens / seq) + phase_docs)
        how = f"~{len(lengths):,} pieces of {phase_docs:,} of ~{docs:,} documents (no tokens)"
    steps = [lengths[i : i + cfg.sgd_batch_seqs] for i in range(0, len(lengths), cfg.sgd_batch_seqs)]
    padded = sum(len(s) * max(s) for s in steps)
    seconds = padded * work.flops.train / work.rates.train_flops + len(steps) * work.rates.step_ms / 1e3
    return "global_sgd", seconds, f"{how}, {len(steps):,} steps, {padded:,} tokens padded"


def cost(cfg: EvalConfig, work: CostInputs) -> list[tuple[str, float, str]]:
    """``pgolf plan``'s projection (``Lora.cost``): one forward per chunk scores it and trains on it, a
    training step's work, costed at 3 x forward; then the phases' global SGD."""
    f, r = work.flops, work.rates
    lw = iterations(cfg, work.n_tokens, work.tokens, r.ranks, work.seq_len, work.mean_document)
    flops = 3 * (f.matmul * lw.tokens + f.attention_coeff * lw.attention) * r.ranks
    how = (
        f"{lw.steps:,} sequential adapter steps on the busiest rank, {lw.tokens:,} tokens computed "
        f"there ({lw.how}); forward + backward"
    )
    parts = [("score+adapt", flops / r.train_flops + lw.steps * r.step_ms / 1e3, how)]
    return parts + ([global_sgd_cost(cfg, work)] if cfg.lora_phase_docs else [])


def lora_ttt(
    model: nn.Module,
    tokens: Tensor,
    target_bytes: Tensor,
    cfg: EvalConfig,
    seq_len: int,
    device: torch.device,
    *,
    head: Head | None = None,
    ledger: Ledger | None = None,
    clock: EvalClock | None = None,
) -> BpbResult:
    """Score the stream with per-document LoRA TTT (and phased global SGD when
    ``cfg.lora_phase_docs``); the summed NLL, tokens and bytes over all ranks. Scoring and adapter
    steps go to the clock's ``score+adapt`` phase, global SGD to ``global_sgd``."""
    head, ledger, clock = head or ModelHead(), ledger or Ledger(tokens.numel()), clock or EvalClock()
    with clock.phase("score+adapt"):
        acc, target_bytes, stream = BpbAccumulator(device), target_bytes.to(device), tokens.to(device)
        spans = doc_spans(tokens)
        docs = [doc_plan(a, b, seq_len, cfg.stride) for a, b in spans]
        expected = check_plan([w for plan in docs for w in plan], tokens.numel())
        segments = phase_segments(len(docs), cfg.lora_phase_docs, cfg.lora_phases)
        for p in model.parameters():
            p.requires_grad_(False)
        model.eval()
        adapters = Adapters(model, cfg, cfg.lora_batch_docs, device)
        params = [p for a in adapters.modules for p in a.parameters()]
    batches, done, world, pending = 0, 0, dist.world_size(), ""
    clock.progress(0, expected)

    def progress(n: int) -> None:  # ranks' shares are near even: close enough to project
        nonlocal done
        done += n * world
        clock.progress(done, expected, pending)

    for s, (lo, hi) in enumerate(segments):
        phases_left = len(segments) - 1 - s if cfg.lora_phase_docs else 0
        pending = _still_to_come(phases_left, head)
        mine = deal(docs[lo:hi], dist.rank(), world)
        if not cfg.lora_warm_a:  # independent documents: longest first packs batches tightly
            mine = sorted(mine, key=len, reverse=True)
        adapters.attach()
        try:
            with clock.phase("score+adapt"):
                for i in range(0, len(mine), cfg.lora_batch_docs):
                    seeds = [plan[0].start for plan in mine[i : i + cfg.lora_batch_docs]]
                    for k, a in enumerate(adapters.modules):
                        a.reset(
                            keep_a=cfg.lora_warm_a and batches > 0, seeds=[1_000_003 * k + x for x in seeds]
                        )
                    _adapt_batch(
                        model,
                        mine[i : i + cfg.lora_batch_docs],
                        adapters.modules,
                        _optimizer(params, cfg),
                        stream,
                        target_bytes,
                        head,
                        ledger,
                        acc,
                        device,
                        progress,
                    )
                    batches += 1
        finally:
            adapters.detach()
        if phases_left:
            with clock.phase("global_sgd"):
                global_sgd(model, tokens, spans[lo:hi], cfg, seq_len, device, ledger)
    with clock.phase("score+adapt"):
        ledger.finish(expected, device)
        dist.all_reduce_sum_(acc.sums)
    result = acc.result()
    if getattr(head, "deferred", False):
        with clock.phase("mix"):
            nll = head.mix_stream(ledger, device, clock.echo)
        result = dataclasses.replace(result, loss_sum=float(nll[1:].sum()))
    return result


def _optimizer(params: list[Tensor], cfg: EvalConfig) -> torch.optim.Optimizer:
    """A fresh AdamW for one batch of documents' adapters."""
    betas = (cfg.lora_beta1, cfg.lora_beta2)
    return torch.optim.AdamW(
        params, lr=cfg.ttt_lr or DEFAULT_LR, betas=betas, eps=1e-10, weight_decay=cfg.lora_wd
    )


def _still_to_come(phases_left: int, head: Head) -> str:
    """What the progress line's projection adds after this phase's scoring."""
    later = [f"{phases_left} global SGD phase(s)"] * bool(phases_left)
    return ", ".join(later + ["the stream-order mixer"] * bool(getattr(head, "deferred", False)))


def global_sgd(
    model: nn.Module,
    tokens: Tensor,
    spans: list[tuple[int, int]],
    cfg: EvalConfig,
    seq_len: int,
    device: torch.device,
    ledger: Ledger,
) -> None:
    """One phase (sota-stack §2.6, PR #1610/#1626): once every rank has scored the documents
    ``spans`` (``doc_spans``: inputs [a, b), targets (a, b]), one epoch of SGD on the base weights
    over them, in stream order. Each document is cut into pieces of at most ``seq_len`` inputs (no
    piece crosses a BOS); ``sgd_batch_seqs`` pieces a step, shared over ranks; the loss is the mean
    NLL over the step's targets."""
    ledger.sync(spans[0][0], spans[-1][1] + 1, device)
    pieces = [(x, min(x + seq_len, b)) for a, b in spans for x in range(a, b, seq_len)]
    ledger.learn(np.concatenate([np.arange(a, b + 1) for a, b in pieces]))  # what the pieces read
    params = trainable(model, cfg.sgd_freeze_blocks)
    opt = torch.optim.SGD(params, lr=cfg.lora_phase_lr, momentum=cfg.sgd_momentum)
    world, rank, per_step = dist.world_size(), dist.rank(), cfg.sgd_batch_seqs
    steps = range(0, len(pieces), per_step)
    for p in params:
        p.requires_grad_(True)
    model.train()
    try:
        for n, i in enumerate(steps):
            for group in opt.param_groups:
                group["lr"] = cfg.lora_phase_lr * 0.5 * (1 + math.cos(math.pi * n / len(steps)))
            step = pieces[i : i + per_step]
            mine = step[rank::world]
            targets = sum(b - a for a, b in step)

            def loss(mine=mine, targets=targets) -> Tensor:
                batch = padded_batch(tokens, [Window(a, b - a) for a, b in mine], device)
                with dist.autocast_for(device):
                    z = model(batch.x)
                y = batch.y.masked_fill(~batch.scored, -100)
                nll = F.cross_entropy(
                    z.float().flatten(0, 1), y.flatten(), ignore_index=-100, reduction="sum"
                )
                return nll * world / targets

            sgd_step(params, opt, loss if mine else None, cfg.sgd_clip)
    finally:
        model.eval()
        for p in params:
            p.requires_grad_(False)
            p.grad = None


def _seen(doc_start: int, w: Window) -> np.ndarray:
    """Stream positions a step on window ``w`` reads, less the document's first token: that BOS is
    the plan's cut (every document starts with one), it tells the adapter nothing about the stream,
    and its own score (the previous document's last target) comes from another adapter."""
    return np.arange(max(w.start, doc_start + 1), w.start + w.length + 1)


class ChunkBatches:
    """The chunk batches of one batch of documents, built on the device from the stream already there:
    the plans' integers go over in one copy per batch of documents, so a chunk costs no host-to-device
    copy and no sync (``padded_batch``'s rows, equal to it token for token). Row i of chunk c is the
    i-th document (of ``plans``) that still has a chunk c; ``batch(c)`` says which adapter row that is."""

    def __init__(self, plans: list[list[Window]], stream: Tensor) -> None:
        self.plans, self.stream = plans, stream
        self.active = [
            [j for j, plan in enumerate(plans) if c < len(plan)] for c in range(max(map(len, plans)))
        ]
        self.learn = [[c < len(plans[j]) - 1 for j in act] for c, act in enumerate(self.active)]
        self.length = [max(plans[j][c].length for j in act) for c, act in enumerate(self.active)]
        table = np.zeros((5, len(self.active), len(plans)), dtype=np.int64)  # numpy: no tensor per entry
        for c, act in enumerate(self.active):
            for i, j in enumerate(act):
                w = plans[j][c]
                table[:, c, i] = j, w.start, w.length, w.score_from, self.learn[c][i]
        self.table = torch.from_numpy(table).to(stream.device, non_blocking=True)
        self.steps = torch.arange(max(self.length) + 1, device=stream.device)

    def __len__(self) -> int:
        return len(self.active)

    def batch(self, c: int) -> tuple[Batch, Tensor, Tensor]:
        """Chunk ``c``: the padded batch, the adapter rows (k,) and which rows learn from it (k,) float."""
        k, t = len(self.active[c]), self.length[c]
        rows, starts, lengths, score_from, learn = self.table[:, c, :k]
        at = self.steps[: t + 1][None, :]
        ids = (starts[:, None] + at).clamp_(max=self.stream.numel() - 1)
        tokens = torch.where(at <= lengths[:, None], self.stream[ids], 0)  # (k, t + 1), zero padding
        scored = (at[:, :t] >= score_from[:, None]) & (at[:, :t] < lengths[:, None])
        windows = [self.plans[j][c] for j in self.active[c]]
        return Batch(tokens[:, :t], tokens[:, 1:], starts, scored, windows), rows, learn.float()


def _adapt_batch(model, plans, adapters, opt, stream, nbytes, head, ledger, acc, device, progress) -> None:
    chunks = ChunkBatches(plans, stream)
    for c in range(len(chunks)):
        batch, rows, learn = chunks.batch(c)
        for a in adapters:
            a.rows = rows
        with dist.autocast_for(device):
            z = model(batch.x)
        logp = F.log_softmax(z.float(), dim=-1)
        nll = -logp.gather(-1, batch.y.unsqueeze(-1)).squeeze(-1)  # (B, T), with gradients
        scored_nll = head.nll(logp.detach(), batch)
        positions = batch.scored_positions()
        acc.add_masked(scored_nll, batch.target_bytes(nbytes), batch.scored, positions.size)
        ledger.score(positions)
        head.observe(batch, ledger)
        progress(positions.size)
        if not any(chunks.learn[c]):
            continue
        docs = zip(chunks.active[c], batch.windows, chunks.learn[c], strict=True)
        ledger.learn(np.concatenate([_seen(plans[j][0].start, w) for j, w, on in docs if on]))
        mask = batch.scored.float()
        loss = ((nll * mask).sum(1) / mask.sum(1) * learn).sum()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()


def run(
    model: nn.Module,
    valset,
    cfg: EvalConfig,
    device: torch.device,
    clock: EvalClock,
    ledger: Ledger,
    head: Head,
):
    """``run_method``'s hook: LoRA TTT over the validation stream with the method's head."""
    from pgolf.eval.run import MethodResult, details

    tokens, nbytes = valset.tokens, valset.target_bytes
    r = lora_ttt(model, tokens, nbytes, cfg, cfg.seq_len, device, head=head, ledger=ledger, clock=clock)
    return MethodResult(r, ledger.summary(), details=details(head))
