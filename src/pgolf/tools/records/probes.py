"""Legality probes on a predictor (any ``eval.predict.Predictor``): what ``pgolf check`` re-runs on
an artifact. Each returns the largest violation it saw, so a report can print how far from the
tolerance it was.

- **normalisation**: every position's distribution sums to 1 (logsumexp of the log-probabilities
  within ``tol`` of 0);
- **causality**: changing the token at t+1 (and everything after it) never changes the distribution
  at positions <= t.

- **the method** (``method_causality_error``): the artifact's whole evaluation method (windows,
  TTT, phases, experts, tilt) on a synthetic stream, its score-first ledger checked, then each
  document's middle token changed (to another token, and to a BOS) and every score before it
  compared. It runs in any number of processes (each rank's scores gathered): ``python -m
  pgolf.tools.records.probes ARTIFACT OUT.json`` under ``torchrun`` is how ``pgolf check`` runs it in two,
  where the way targets and adaptive state are dealt to ranks could let a later token in.
"""

from __future__ import annotations

import copy
import dataclasses
from pathlib import Path

import torch
from torch import nn

from pgolf import dist
from pgolf.config.eval import EvalConfig
from pgolf.data.bytes import ByteLUT
from pgolf.data.valset import ValidationSet
from pgolf.eval.predict import Batch, Head, Predictor
from pgolf.eval.run import run_method
from pgolf.eval.score import EvalClock
from pgolf.methods import used
from pgolf.methods.windows import doc_spans
from pgolf.vocab import BOS_ID


def uniform_lut(vocab_size: int) -> ByteLUT:
    """One byte per token: probes compare NLLs, not bytes."""
    return ByteLUT(
        base_bytes=torch.ones(vocab_size, dtype=torch.int16),
        has_leading_space=torch.zeros(vocab_size, dtype=torch.bool),
        is_boundary=torch.zeros(vocab_size, dtype=torch.bool),
    )


def sample_inputs(vocab_size: int, length: int, batch: int = 2, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, vocab_size, (batch, length), generator=g)


def normalisation_error(predictor: Predictor, inputs: torch.Tensor) -> float:
    """max |log sum_v p(v)| over every position of ``inputs``."""
    lp = predictor.log_probs(inputs).double()
    return float(torch.logsumexp(lp, dim=-1).abs().max())


def causality_error(predictor: Predictor, inputs: torch.Tensor, cuts: list[int], vocab_size: int) -> float:
    """max |change| of the log-probabilities at positions <= t when every token after t is replaced,
    over each cut t."""
    base = predictor.log_probs(inputs)
    worst = 0.0
    for t in cuts:
        changed = inputs.clone()
        changed[:, t + 1 :] = (changed[:, t + 1 :] + 1 + t) % vocab_size
        other = predictor.log_probs(changed)
        worst = max(worst, float((other[:, : t + 1] - base[:, : t + 1]).abs().max()))
    return worst


def probe_stream(vocab_size: int, n_tokens: int, seed: int = 0) -> torch.Tensor:
    """BOS-led synthetic documents of 40-400 tokens (ids above the control pieces), each repeating a
    short motif with noise so that adaptation has something to learn: never validation data."""
    g = torch.Generator().manual_seed(seed)
    out: list[int] = []
    while len(out) < n_tokens:
        motif = torch.randint(4, vocab_size, (7,), generator=g).tolist()
        n = int(torch.randint(40, 400, (1,), generator=g))
        noise = torch.randint(4, vocab_size, (n,), generator=g).tolist()
        keep = (torch.rand(n, generator=g) < 0.7).tolist()
        out += [BOS_ID] + [motif[i % 7] if keep[i] else noise[i] for i in range(n)]
    return torch.tensor(out[:n_tokens])


def probe_config(cfg: EvalConfig, tokens: torch.Tensor) -> EvalConfig:
    """The method of ``cfg`` scaled to a probe stream by every registered method (``Method.probe``:
    windows of at most 128 tokens, SGD chunks of a quarter of the stream, LoRA batches of at most 3
    documents, phases on at most half of them, learning rates raised so a leak moves scores in
    proportion). The same code paths; only sizes and rates change."""
    n_docs = len(doc_spans(tokens))
    changes = {k: v for m in used(cfg) for k, v in m.probe(cfg, tokens, n_docs).items()}
    return dataclasses.replace(cfg, val_docs=0, **changes)


class RecordingHead:
    """Wraps a head and keeps each scored target's NLL by stream position."""

    def __init__(self, inner: Head) -> None:
        self.inner, self.nll_at = inner, {}

    def nll(self, log_probs: torch.Tensor, batch: Batch) -> torch.Tensor:
        nll = self.inner.nll(log_probs, batch)
        mask = batch.scored if batch.scored is not None else torch.ones_like(nll, dtype=torch.bool)
        self.nll_at.update(zip(batch.positions()[mask].tolist(), nll[mask].tolist(), strict=True))
        return nll

    def observe(self, batch: Batch, ledger) -> None:
        self.inner.observe(batch, ledger)

    @property
    def takes_padding(self) -> bool:
        """As the wrapped head: the probe must score through the batches the method really uses."""
        return getattr(self.inner, "takes_padding", False)

    @property
    def deferred(self) -> bool:
        return getattr(self.inner, "deferred", False)

    def mix_stream(self, ledger, device: torch.device, echo=None):
        """The deferred mixer's scores replace the model's recorded ones."""
        nll = self.inner.mix_stream(ledger, device, echo)
        self.nll_at = {p: float(nll[p]) for p in self.nll_at}
        return nll

    def summary(self) -> dict:
        return self.inner.summary() if hasattr(self.inner, "summary") else {}


def method_scores(model: nn.Module, tokens: torch.Tensor, cfg: EvalConfig) -> tuple[dict[int, float], dict]:
    """Every target's NLL under the evaluation method ``cfg`` (its score-first ledger checked, which
    raises on a violation) on a copy of ``model``, and the ledger's summary."""
    vocab = model.cfg.vocab_size
    lut = uniform_lut(vocab)
    valset = ValidationSet(
        tokens=tokens, target_bytes=lut.stream_bytes(tokens), lut=lut, files=[], tokenizer_path=Path("-"),
        tokenizer_sha256="", tokenizer_vocab_size=vocab, sha256="",
    )
    heads: list[RecordingHead] = []

    def wrap(head: Head) -> Head:
        heads.append(RecordingHead(head))
        return heads[-1]

    r = run_method(copy.deepcopy(model), valset, cfg, torch.device("cpu"), EvalClock(), wrap_head=wrap)
    if dist.world_size() == 1:
        return heads[0].nll_at, r.ledger
    parts: list[dict[int, float]] = [{} for _ in range(dist.world_size())]
    torch.distributed.all_gather_object(parts, heads[0].nll_at)  # each rank scored its share
    return {p: v for part in parts for p, v in part.items()}, r.ledger


def method_causality_error(model: nn.Module, cfg: EvalConfig, n_tokens: int = 2048) -> dict:
    """The method-level probe (C1, with C3 and C4 from the method's ledger): score a synthetic stream
    with the method, then, for every document, change its middle token to another token, and to a
    BOS (which re-cuts the documents and shifts every later one's index), and score again. Returns
    the largest change of any score before the changed token, how many later scores changed (the
    method reacts at all), the runs made, and the ledger's count of checked updates. Scores of the
    changed token itself are not compared (it is their target); learning from a token before it is
    scored is the ledger's to catch."""
    tokens = probe_stream(model.cfg.vocab_size, n_tokens)
    cfg = probe_config(cfg, tokens)
    base, ledger = method_scores(model, tokens, cfg)
    worst, reacted, runs = 0.0, 0, 1
    for a, b in doc_spans(tokens):
        k = (a + b) // 2
        for value in (4 + (int(tokens[k]) - 3) % (model.cfg.vocab_size - 4), BOS_ID):
            changed = tokens.clone()
            changed[k] = value
            other, _ = method_scores(model, changed, cfg)
            runs += 1
            worst = max([worst, *(abs(other[p] - v) for p, v in base.items() if p < k)])
            reacted += sum(abs(other[p] - v) > 0 for p, v in base.items() if p > k and p in other)
    return {"causality": worst, "later_scores_changed": reacted, "updates": ledger.get("updates", 0),
            "targets": len(base), "runs": runs}


def method_causality_in_processes(artifact: Path, world: int = 2, timeout_s: float = 900) -> dict:
    """``method_causality_error`` on the artifact in ``world`` gloo processes (``torchrun``, one thread
    each); PgolfError when they cannot run."""
    import json
    import os
    import subprocess
    import sys
    import tempfile

    from pgolf.errors import PgolfError

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "probe.json"
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={world}",
               "-m", "pgolf.tools.records.probes", str(artifact), str(out)]
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        try:
            proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout_s)
        except subprocess.TimeoutExpired:
            raise PgolfError(f"the {world}-process method probe took over {timeout_s:g} s") from None
        if proc.returncode or not out.exists():
            tail = proc.stderr.strip().splitlines()[-1:] or ["no output"]
            raise PgolfError(f"the {world}-process method probe failed ({tail[0]})")
        return json.loads(out.read_text())


def main(argv: list[str] | None = None) -> int:
    """``python -m pgolf.tools.records.probes ARTIFACT OUT.json`` (under torchrun: every rank runs the
    method probe on the artifact, CPU and gloo; rank 0 writes ``method_causality_error``'s result)."""
    import json
    import sys

    from pgolf.eval.artifact import load_artifact
    from pgolf.fileio import write_json_atomic

    artifact, out = (argv if argv is not None else sys.argv[1:])[:2]
    with dist.closing():
        dist.setup("cpu")
        loaded = load_artifact(artifact, torch.device("cpu"))
        result = {**method_causality_error(loaded.model, loaded.meta.eval), "world_size": dist.world_size()}
        if dist.rank() == 0:
            write_json_atomic(out, result)
            print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
