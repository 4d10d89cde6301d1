"""The model mixed with eval-time experts (seed-techniques §12.4) and the causal n-gram tilt
(sota-stack §2.6), as a head of the score loop.

Each expert (``eval.experts``) predicts target t from tokens[:t] only (``eval.experts``'s module
proves its vectorised values equal a sequential reference). The model's distribution, tilted first
when ``eval.tilt`` is on (the hinted token's logit + beta, renormalised in closed form), is the
neural expert. The exponential-weights mixer pools them:

* linear: P(y) = sum_i w_i P_i(y), a normalised distribution because each P_i is and sum_i w_i = 1
  (only the target's value is computed);
* log: P = softmax(sum_i w_i log max(P_i, 1e-30)) over the whole vocabulary, from the experts' full
  reference distributions replayed in stream order (slow: the CPU track's sizes).

A match expert without a match uses the model's distribution in its slot. Initial weights n-gram
0.03, match 0.1, bigram 0.02, the model the rest. The weights are fixed over each window's scored
targets and then updated, target by target in stream order: w_i <- w_i * max(P_i(y), 1e-10)^eta,
floored at ``mix_floor`` and renormalised, as the seed does, so after a target every expert found
unlikely all weights sit on the floor and the mixer restarts from uniform; ``mix_fixed_share``
normalises before flooring instead (fixed share: the leader keeps its weight). Neither wins on both
corpora (benchmarks/RESULTS.md). Both converge on the best single expert, which is the model, so an
expert that helps on a tenth of the targets keeps a weight near the floor. ``mix_rule=eg``
(exponentiated gradient, the online portfolio's rule) converges on the best fixed mixture instead:
w_i <- w_i * exp(mix_lr * P_i(y) / P(y)), normalised and floored, where P(y) is the mixture under
the running weights (sequential EG: within a stride they score with the stride's start weights and
learn target by target); a target every expert gives the same probability moves them only through
the floor. Linear pool only. The updates only use targets already scored (windows earlier in the
batch, in plan order), and ``observe`` records them in the ledger.

With LoRA TTT (``deferred``) documents are scored in batches, not in stream order, so the mixer
cannot learn as they come (a later document's targets would move an earlier one's weights: C1).
There ``nll`` only records each target's (tilted) model probability, which depends on its own
document's prefix and on the documents before it (phased SGD cuts the stream); once every target is
scored, ``mix_stream`` gathers them from every rank and runs the mixer over the whole stream in order,
``eval.stride`` targets at a time with fixed weights, as the windows do. Each target's mixture then
depends only on the tokens before it: the experts' tables, the model's probability and the weights.
Linear pool only (the log pool would need every full distribution kept until the end).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor

from pgolf import dist
from pgolf.config.eval import EvalConfig
from pgolf.errors import ConfigError
from pgolf.eval import experts as ex
from pgolf.eval.ledger import Ledger, ScoreOrderError
from pgolf.eval.predict import Batch
from pgolf.methods.base import CostInputs
from pgolf.runlog import Ticker

INITIAL_WEIGHT = {"ngram": 0.03, "match": 0.1, "bigram": 0.02}
P_FLOOR, LOG_FLOOR = 1e-10, 1e-30


class MixtureHead:
    def __init__(self, cfg: EvalConfig, tokens: Tensor, vocab_size: int, *, deferred: bool = False) -> None:
        self.cfg, self.names = cfg, cfg.expert_list
        stream = tokens.cpu().numpy().astype(np.int64)
        self.stream, self.vocab = stream, vocab_size
        alpha = cfg.ngram_alpha or None
        table = {
            "ngram": lambda: ex.ngram_probs(stream, vocab_size, cfg.ngram_order, alpha),
            "match": lambda: ex.match_probs(stream, vocab_size)[0],
            "bigram": lambda: ex.bigram_probs(stream, vocab_size),
        }
        self.target_p = np.stack([table[n]() for n in self.names]) if self.names else None
        self.hint_ids = ex.tilt_hints(stream, cfg.tilt_order, cfg.tilt_threshold) if cfg.tilt else None
        self.hints: Tensor | None = None
        """``hint_ids`` on the scoring device, moved there once."""
        initial = [INITIAL_WEIGHT[n] for n in self.names]
        self.w = self._floor(np.array([1 - sum(initial), *initial]))
        self.refs: list | None = None
        self.ref_next = 1
        """Log pool: the next target position the reference experts are ready to predict."""
        self.hint_count = 0
        self.last_target = 0
        """The last target a window of this head scored: windows must come in stream order."""
        self.deferred = deferred and bool(self.names)
        if self.deferred and cfg.mix != "linear":
            raise ConfigError("eval.mix=log cannot be deferred to a stream-order pass (eval.ttt=lora)")
        self.model_p: Tensor | None = None
        """Deferred: each target's model probability, and how many times it was recorded (float64,
        on the scoring device: recording it needs no sync)."""

    def _floor(self, w: np.ndarray) -> np.ndarray:
        w = np.maximum(w, self.cfg.mix_floor)
        return w / w.sum()

    def _model_logp(self, logp: Tensor, batch: Batch, full: bool) -> Tensor:
        """The neural expert: the model's log-probs (full (B, T, V) or at the targets), tilted."""
        if self.hint_ids is None:
            return logp if full else logp.gather(-1, batch.y.unsqueeze(-1)).squeeze(-1)
        if self.hints is None:
            self.hints = torch.from_numpy(self.hint_ids).to(logp.device)
        hints = self.hints[batch.positions().clamp(max=len(self.hints) - 1)]  # padded rows read past the end
        if full:
            return ex.tilt_log_probs(logp, hints, self.cfg.tilt_beta)
        return ex.tilt_target_logprob(logp, hints, batch.y, self.cfg.tilt_beta)

    def nll(self, log_probs: Tensor, batch: Batch) -> Tensor:
        if self.hint_ids is not None:  # on the host, from the plan: no device sync
            self.hint_count += int((self.hint_ids[batch.scored_positions()] >= 0).sum())
        if not self.names:
            return -self._model_logp(log_probs, batch, full=False)
        if self.deferred:
            logp = self._model_logp(log_probs, batch, full=False)
            if self.model_p is None:
                self.model_p = torch.zeros(2, len(self.stream), dtype=torch.float64, device=logp.device)
            pos = torch.from_numpy(batch.scored_positions()).to(logp.device)  # row-major, as the mask reads
            self.model_p[0, pos] = logp[batch.scored].double().exp()
            self.model_p[1].index_add_(0, pos, torch.ones_like(pos, dtype=torch.float64))
            return -logp  # replaced by ``mix_stream``'s scores
        for w in batch.windows:  # the weights learn window by window: they must follow the stream
            if w.start + w.score_from + 1 <= self.last_target:
                raise ConfigError("eval.experts need windows in stream order (not eval.ttt=lora)")
            self.last_target = w.start + w.length
        if self.cfg.mix == "log":
            return self._log_pool(log_probs, batch)
        model_p = self._model_logp(log_probs, batch, full=False).double().exp().cpu().numpy()
        pos = batch.positions().cpu().numpy()
        out = -np.log(model_p)
        for i, w in enumerate(batch.windows):
            cols = slice(w.score_from, w.length)
            p = self._expert_matrix(model_p[i, cols], pos[i, cols])  # (K+1, n)
            out[i, cols] = -np.log(self.w @ p)
            self._update(p)
        return torch.from_numpy(out).to(log_probs.device, torch.float32)

    def mix_stream(
        self, ledger: Ledger, device: torch.device, echo: Callable[[str], None] | None = None
    ) -> np.ndarray:
        """Deferred: once every rank has scored every target, each target's NLL under the mixture,
        the mixer run over the stream in order (index 0, never a target, is NaN); ``echo`` gets a
        line of positions mixed every ~30 s."""
        none = torch.zeros(2, len(self.stream), dtype=torch.float64)  # a rank without documents
        both = (self.model_p if self.model_p is not None else none).to(device)
        dist.all_reduce_sum_(both)
        model_p, count = both.cpu().numpy()
        if (count[1:] != 1).any():
            bad = int(np.flatnonzero(count[1:] != 1)[0]) + 1
            raise ScoreOrderError(f"the mixer needs each target scored once: {bad} was {count[bad]:.0f}x")
        ledger.sync(0, len(count), device)
        ledger.learn(np.arange(1, len(count)))  # one update after every score; its order is by construction
        out = np.full(len(count), np.nan)
        step, tick = max(1, self.cfg.stride), Ticker(echo, "eval_mix", len(count))
        for lo in range(1, len(count), step):
            tick(lo)
            pos = np.arange(lo, min(lo + step, len(count)))
            p = self._expert_matrix(model_p[pos], pos)
            out[pos] = -np.log(self.w @ p)
            self._update(p)
        return out

    def _expert_matrix(self, model_p: np.ndarray, pos: np.ndarray) -> np.ndarray:
        """(K+1, n) probabilities of the targets: the model's, then each expert's (the model's where
        an expert has no prediction)."""
        experts = self.target_p[:, pos]
        return np.vstack([model_p[None, :], np.where(np.isnan(experts), model_p[None, :], experts)])

    def _update(self, p: np.ndarray) -> None:
        """After a window is scored: the weights learn from its targets, one by one in stream order."""
        w, floor, share = self.w.tolist(), self.cfg.mix_floor, self.cfg.mix_fixed_share
        eg, lr = self.cfg.mix_rule == "eg", self.cfg.mix_lr
        p = np.maximum(p, P_FLOOR)
        for col in (p if eg else p**self.cfg.mix_eta).T.tolist():
            if eg:  # the gradient of log P(y) in w is p_i / P(y); shifted by its max, exp cannot overflow
                mixed = sum(a * b for a, b in zip(w, col, strict=True))
                grad = [lr * b / mixed for b in col]
                top = max(grad)
                w = [a * math.exp(g - top) for a, g in zip(w, grad, strict=True)]
            else:
                w = [a * b for a, b in zip(w, col, strict=True)]
            if share or eg:
                total = sum(w)
                w = [a / total for a in w]
            w = [max(a, floor) for a in w]
            total = sum(w)
            w = [a / total for a in w]
        self.w = np.array(w)

    def _log_pool(self, log_probs: Tensor, batch: Batch) -> Tensor:
        """softmax(sum_i w_i log P_i) over the vocabulary, window by window, in stream order."""
        model = self._model_logp(log_probs, batch, full=True).double().cpu().numpy()
        y = batch.y.cpu().numpy()
        out = -np.take_along_axis(model, y[..., None], -1)[..., 0]
        for i, w in enumerate(batch.windows):
            self._advance(w.start + w.score_from + 1)
            dists, probs = [], []
            for j in range(w.score_from, w.length):
                d = self._reference_dists(model[i, j])  # (K+1, V), reveals the target afterwards
                dists.append(d)
                probs.append(d[:, y[i, j]])
            logs = np.log(np.maximum(np.stack(dists), LOG_FLOOR))  # (n, K+1, V)
            z = np.einsum("k,nkv->nv", self.w, logs)
            z_max = z.max(-1, keepdims=True)
            lse = (z_max + np.log(np.exp(z - z_max).sum(-1, keepdims=True)))[:, 0]
            out[i, w.score_from : w.length] = lse - z[np.arange(len(z)), y[i, w.score_from : w.length]]
            self._update(np.stack(probs, axis=1))
        return torch.from_numpy(out).to(log_probs.device, torch.float32)

    def _advance(self, position: int) -> None:
        if self.refs is None:
            v, cfg = self.vocab, self.cfg
            make = {
                "ngram": lambda: ex.NgramExpert(v, cfg.ngram_order, cfg.ngram_alpha or None),
                "match": lambda: ex.MatchExpert(v),
                "bigram": lambda: ex.BigramExpert(v),
            }
            self.refs = [make[n]() for n in self.names]
            for r in self.refs:
                r.update(int(self.stream[0]))
        while self.ref_next < position:
            self._reveal()

    def _reveal(self) -> None:
        for r in self.refs:
            r.update(int(self.stream[self.ref_next]))
        self.ref_next += 1

    def _reference_dists(self, model_logp: np.ndarray) -> np.ndarray:
        model = np.exp(model_logp)
        rows = [model] + [d if (d := r.distribution()) is not None else model for r in self.refs]
        self._reveal()
        return np.stack(rows)

    def observe(self, batch: Batch, ledger: Ledger) -> None:
        if self.names and not self.deferred:
            ledger.learn(batch.scored_positions())

    def summary(self) -> dict:
        weights = (round(float(x), 4) for x in self.w)
        out = {"weights": dict(zip(["model", *self.names], weights, strict=True))}
        if self.hint_ids is not None:
            out["tilt_hinted_targets"] = self.hint_count
        return out


HOST_SECONDS_AT_2M = {
    "ngram": 2.50,
    "match": 5.17,
    "bigram": 0.72,
    "tilt": 7.13,
    "mixer": 9.76,
    "mixer_eg": 15.5,
}
"""bench_experts.py on 2,000,000 tokens, one core of this project's CPU machine (RESULTS.md,
2026-12-01); the exponentiated-gradient mixer's from its measured 1.59x the seed rule's. The tables
are host-side numpy whatever the accelerator: scaled as N log N (built on every rank), the mixer as N
/ ranks."""


def host_scale(n_tokens: int) -> float:
    """N log N relative to the 2M tokens ``HOST_SECONDS_AT_2M`` were measured on."""
    return n_tokens * math.log(max(n_tokens, 2)) / (2e6 * math.log(2e6))


def cost(cfg: EvalConfig, work: CostInputs) -> list[tuple[str, float, str]]:
    """``pgolf plan``'s projection of the experts' tables and the mixer (``Experts.cost``)."""
    tables = sum(HOST_SECONDS_AT_2M[e] for e in cfg.expert_list) * host_scale(work.n_tokens)
    shared = 1 if cfg.ttt == "lora" else work.rates.ranks  # after LoRA every rank mixes the whole stream
    mixer = HOST_SECONDS_AT_2M["mixer_eg" if cfg.mix_rule == "eg" else "mixer"] * work.n_tokens / 2e6 / shared
    where = "the whole stream on every rank, after LoRA" if shared == 1 else "each rank's share"
    return [("experts", tables + mixer, f"host numpy tables (N log N, every rank) + mixer ({where})")]


def tilt_cost(cfg: EvalConfig, work: CostInputs) -> list[tuple[str, float, str]]:
    """``pgolf plan``'s projection of the tilt's hints (``Tilt.cost``)."""
    return [("tilt", HOST_SECONDS_AT_2M["tilt"] * host_scale(work.n_tokens), "host numpy hints (N log N)")]
