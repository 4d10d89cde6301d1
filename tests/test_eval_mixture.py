"""The model mixed with eval-time experts and the n-gram tilt: every pooled distribution is
normalised over the whole vocabulary and gives the scored probability at the target, nothing before
token k changes when token k does, and on a repetitive stream the experts help."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from pgolf.config.eval import EvalConfig
from pgolf.errors import ConfigError
from pgolf.eval import experts as ex
from pgolf.eval.ledger import Ledger
from pgolf.eval.lora import lora_ttt
from pgolf.eval.mixture import MixtureHead
from pgolf.eval.predict import ModelPredictor
from pgolf.eval.score import score
from pgolf.methods.windows import doc_spans, plan_windows
from pgolf.vocab import BOS_ID
from test_eval_adapt import CPU, VOCAB, Recorder, doc_stream, nb, tiny_model

BASE = EvalConfig(seq_len=32, method="sliding", stride=16, experts="ngram,match,bigram")


class Probe(Recorder):
    """Records each scored position's NLL, the model's log-probs there, and the mixer weights the
    head held when it scored that window."""

    def __init__(self, head: MixtureHead) -> None:
        super().__init__()
        self.inner, self.model_logp, self.weights = head, {}, {}

    def nll(self, log_probs, batch):
        w = self.inner.w.copy()
        tilted = self.inner._model_logp(log_probs, batch, full=True)
        out = super().nll(log_probs, batch)
        for i, win in enumerate(batch.windows):
            for j in range(win.score_from, win.length):
                self.model_logp[win.start + j + 1] = tilted[i, j].double().numpy()
                self.weights[win.start + j + 1] = w
        return out


def run(tokens: torch.Tensor, cfg: EvalConfig) -> Probe:
    probe = Probe(MixtureHead(cfg, tokens, VOCAB))
    windows = plan_windows(tokens, cfg.method, cfg.seq_len, cfg.stride)
    score(
        ModelPredictor(tiny_model().eval(), CPU),
        tokens,
        nb(tokens),
        windows,
        batch_tokens=16,
        device=CPU,
        head=probe,
        ledger=Ledger(tokens.numel()),
    )  # fmt: skip  (one window per batch)
    return probe


def reference_dists(tokens: torch.Tensor, position: int, cfg: EvalConfig) -> list[np.ndarray | None]:
    """Each expert's full distribution for ``position``, replayed from the sequential classes."""
    refs = [ex.NgramExpert(VOCAB, cfg.ngram_order), ex.MatchExpert(VOCAB), ex.BigramExpert(VOCAB)]
    for t in tokens[:position].tolist():
        for r in refs:
            r.update(t)
    return [r.distribution() for r in refs]


@pytest.mark.parametrize("mix", ["linear", "log"])
@pytest.mark.parametrize("tilt", [False, True])
def test_each_pooled_distribution_is_normalised_and_scores_its_target(mix, tilt):
    cfg = dataclasses.replace(BASE, mix=mix, tilt=tilt, tilt_order=4)
    tokens = doc_stream(300)
    probe = run(tokens, cfg)
    assert sorted(probe.by_position) == list(range(1, 300))
    for p in (5, 40, 123, 250, 299):
        model = np.exp(probe.model_logp[p])
        dists = np.stack([model] + [d if d is not None else model for d in reference_dists(tokens, p, cfg)])
        w = probe.weights[p]
        if mix == "linear":
            full = w @ dists
        else:
            z = w @ np.log(np.maximum(dists, 1e-30))
            full = np.exp(z - z.max()) / np.exp(z - z.max()).sum()
        assert full.sum() == pytest.approx(1, abs=1e-6) and (full >= 0).all()
        assert -np.log(full[int(tokens[p])]) == pytest.approx(probe.by_position[p], rel=1e-5)


TILT = EvalConfig(seq_len=32, method="sliding", stride=16, tilt=True, tilt_order=3)


EG = dataclasses.replace(BASE, mix_rule="eg", mix_lr=0.05)


@pytest.mark.parametrize("cfg", [BASE, dataclasses.replace(BASE, mix="log", mix_fixed_share=True), TILT, EG])
def test_mixture_and_tilt_never_use_a_later_token(cfg):
    tokens = doc_stream(300, seed=3)
    before = run(tokens, cfg).by_position
    k = 170
    changed = tokens.clone()
    changed[k] = 2 + (int(tokens[k]) - 1) % (VOCAB - 2)
    after = run(changed, cfg).by_position
    assert all(after[p] == before[p] for p in range(1, k))
    assert any(after[p] != before[p] for p in range(k + 1, 300))


def test_experts_help_on_a_repetitive_stream_and_the_weights_move():
    tokens = torch.tensor(([1] + [3, 5, 7, 9, 11, 13, 2, 4] * 6) * 12)
    alone = EvalConfig(seq_len=32, method="sliding", stride=16)
    windows = plan_windows(tokens, "sliding", 32, 16)
    model = score(
        ModelPredictor(tiny_model().eval(), CPU), tokens, nb(tokens), windows, batch_tokens=64, device=CPU
    )
    head = MixtureHead(BASE, tokens, VOCAB)
    mixed = score(ModelPredictor(tiny_model().eval(), CPU), tokens, nb(tokens), windows, batch_tokens=64,
                  device=CPU, head=head)  # fmt: skip
    assert mixed.val_bpb < 0.5 * model.val_bpb
    assert head.summary()["weights"]["model"] < 0.5  # the experts earned their weight
    tilted = MixtureHead(dataclasses.replace(alone, tilt=True, tilt_order=4), tokens, VOCAB)
    t = score(ModelPredictor(tiny_model().eval(), CPU), tokens, nb(tokens), windows, batch_tokens=64,
              device=CPU, head=tilted)  # fmt: skip
    assert t.val_bpb < model.val_bpb and tilted.summary()["tilt_hinted_targets"] > 100


def test_the_mixer_learns_only_from_scored_targets():
    tokens = doc_stream(300)
    ledger = Ledger(tokens.numel())
    windows = plan_windows(tokens, "sliding", 32, 16)
    score(ModelPredictor(tiny_model().eval(), CPU), tokens, nb(tokens), windows, batch_tokens=64,
          device=CPU, head=MixtureHead(BASE, tokens, VOCAB), ledger=ledger)  # fmt: skip
    assert ledger.learned[1:].all() and ledger.summary()["updates"] > 0


def test_lora_ttt_with_the_tilt_scores_every_target_once():
    """Padded LoRA rows reach past the stream's end: the head must only read real positions."""
    from test_eval_adapt import LORA

    tokens = doc_stream(400, seed=5)
    cfg = dataclasses.replace(LORA, tilt=True, tilt_order=3)
    ledger = Ledger(tokens.numel())
    r = lora_ttt(tiny_model(), tokens, nb(tokens), cfg, cfg.seq_len, CPU,
                 head=MixtureHead(cfg, tokens, VOCAB),
                 ledger=ledger)  # fmt: skip
    assert r.tokens == 399 and ledger.scored[1:].all()


LORA_EXPERTS = EvalConfig(seq_len=32, method="docs", stride=8, ttt="lora", ttt_lr=0.05, lora_batch_docs=3,
                          lora_targets="q,k,v,o,head", experts="ngram,match")  # fmt: skip


class Final(Recorder):
    """A deferred head's recorder: the model's NLL as LoRA scores, then the mixer's final NLL."""

    def __init__(self, head: MixtureHead) -> None:
        super().__init__()
        self.inner, self.deferred, self.final = head, True, None

    def mix_stream(self, ledger, device, echo=None):
        self.final = self.inner.mix_stream(ledger, device, echo)
        return self.final


def run_lora_mixed(tokens: torch.Tensor, cfg: EvalConfig = LORA_EXPERTS) -> tuple[Final, float]:
    head = Final(MixtureHead(cfg, tokens, VOCAB, deferred=True))
    ledger = Ledger(tokens.numel())
    r = lora_ttt(tiny_model(), tokens, nb(tokens), cfg, cfg.seq_len, CPU, head=head, ledger=ledger)
    assert r.tokens == tokens.numel() - 1 and ledger.scored[1:].all() and ledger.learned[1:].all()
    assert r.loss_sum == pytest.approx(float(head.final[1:].sum()), rel=1e-12)
    return head, r.loss_sum


@pytest.mark.parametrize(
    ("eta", "share", "rule", "order", "alpha"),
    [
        (1.0, False, "bayes", 6, 0.0),
        (0.5, True, "bayes", 6, 0.0),
        (1.0, False, "eg", 4, 1.0),  # cpu-best's experts and rule
    ],
)
def test_experts_after_lora_mix_in_stream_order_as_a_hand_replay_does(eta, share, rule, order, alpha):
    """The deferred mixer equals a plain replay: the model's LoRA probabilities (each scored once),
    the experts' probabilities from the sequential classes, weights fixed over each stride of
    targets in stream order and updated target by target (w * p^eta, normalised first under fixed
    share; or w * exp(lr p / (w . p)), normalised), floored and renormalised."""
    tokens = doc_stream(500, seed=4)
    cfg = dataclasses.replace(
        LORA_EXPERTS,
        mix_eta=eta,
        mix_fixed_share=share,
        mix_rule=rule,
        mix_lr=0.3,
        ngram_order=order,
        ngram_alpha=alpha,
    )
    head, loss = run_lora_mixed(tokens, cfg)
    model_p = {p: np.exp(-v) for p, v in head.by_position.items()}
    assert sorted(model_p) == list(range(1, 500))
    refs = [ex.NgramExpert(VOCAB, order, alpha or None), ex.MatchExpert(VOCAB)]
    w = np.maximum([0.87, 0.03, 0.1], LORA_EXPERTS.mix_floor)
    w /= w.sum()
    probs, hand = [], 0.0
    for t in range(500):
        if t:
            y = int(tokens[t])
            col = [model_p[t]] + [d[y] if (d := r.distribution()) is not None else model_p[t] for r in refs]
            probs.append(np.array(col))
            if len(probs) == LORA_EXPERTS.stride or t == 499:
                for col in probs:
                    hand -= np.log(w @ col)
                for col in probs:
                    if rule == "eg":
                        w = w * np.exp(0.3 * np.maximum(col, 1e-10) / (w @ np.maximum(col, 1e-10)))
                    else:
                        w = w * np.maximum(col, 1e-10) ** eta
                    w = np.maximum(w / w.sum() if share or rule == "eg" else w, LORA_EXPERTS.mix_floor)
                    w /= w.sum()
                probs = []
        for r in refs:
            r.update(int(tokens[t]))
    assert loss == pytest.approx(hand, rel=1e-9)


def test_exponentiated_gradient_earns_the_best_fixed_mixture_where_exponential_weights_lose():
    """An expert sharp on 30% of the targets and wrong elsewhere, the model flat: the best fixed
    mixture gives the expert about 0.11. From weights far from it (the expert at the floor),
    exponential weights (the seed's) chase the single best expert, the model, and lose to it;
    exponentiated gradient's loss is within 0.1% of the best fixed mixture's, its weight near 0.11."""
    rng = np.random.default_rng(0)
    expert = np.where(rng.random(40_000) < 0.3, 0.9, 0.01)
    p = np.vstack([np.full_like(expert, 0.2), expert])
    grid = np.linspace(0.0, 1.0, 1001)
    fixed = np.array([-np.log((1 - lam) * p[0] + lam * p[1]).sum() for lam in grid])
    best = grid[fixed.argmin()]
    assert 0.05 < best < 0.2
    loss = {}
    for rule in ("bayes", "eg"):
        head = MixtureHead(EvalConfig(experts="match", mix_rule=rule), torch.tensor([1, 2, 3]), VOCAB)
        head.w = np.array([0.99, 0.01])
        loss[rule] = 0.0
        for lo in range(0, p.shape[1], 64):  # weights fixed over a stride, then updated target by target
            loss[rule] -= np.log(head.w @ p[:, lo : lo + 64]).sum()
            head._update(p[:, lo : lo + 64])
        if rule == "eg":
            assert head.w[1] == pytest.approx(best, abs=0.02)
    assert loss["bayes"] > fixed[0] > fixed.min()
    assert loss["eg"] < fixed.min() * 1.001


@pytest.mark.parametrize("cfg", [LORA_EXPERTS, dataclasses.replace(LORA_EXPERTS, mix_rule="eg", mix_lr=0.3)])
def test_experts_after_lora_never_use_a_later_token_and_help_on_repetition(cfg):
    tokens = doc_stream(600, seed=2)
    spans = doc_spans(tokens)
    base, _ = run_lora_mixed(tokens, cfg)
    mid = spans[3][0] + 5
    for k, value in ((mid, 2 + (int(tokens[mid]) - 1) % 14), (spans[2][0] + 9, BOS_ID)):
        changed = tokens.clone()
        changed[k] = value
        other, _ = run_lora_mixed(changed, cfg)
        assert np.allclose(other.final[1:k], base.final[1:k], rtol=0, atol=1e-5), k
        assert not np.allclose(other.final[k + 1 :], base.final[k + 1 :], rtol=0, atol=1e-5)
    repeated = torch.cat([tokens[:300]] * 3)
    _, mixed = run_lora_mixed(repeated, cfg)
    alone = lora_ttt(tiny_model(), repeated, nb(repeated), LORA_EXPERTS, 32, CPU).loss_sum  # model head
    assert mixed < 0.8 * alone


def test_the_method_probe_passes_lora_with_experts():
    from pgolf.tools.records.probes import method_causality_error

    cfg = dataclasses.replace(LORA_EXPERTS, lora_phase_docs=2, tilt=True, tilt_order=3)
    found = method_causality_error(tiny_model(), cfg, n_tokens=700)
    assert found["causality"] <= 1e-5 and found["later_scores_changed"] > 0 and found["updates"] > 0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"mix": "log"}, r"mix_rule=eg .* eval\.mix=linear"),
        ({"mix_fixed_share": True}, "mix_fixed_share=false"),
        ({"mix_lr": float("inf")}, r"eval\.mix_lr must be finite"),
        ({"mix_lr": 0.0}, r"eval\.mix_lr must be > 0"),
    ],
)
def test_exponentiated_gradient_refuses_what_it_does_not_define(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        EvalConfig(experts="match", mix_rule="eg", **kwargs)


def test_the_deferred_mixer_ticks_through_the_eval_clock_and_scores_the_same(monkeypatch):
    """Progress lines (forced to every call here) come through the eval clock's echo, from the scoring
    and from the stream-order mixer, and change no score."""
    from pgolf import runlog
    from pgolf.eval.score import EvalClock

    tokens = doc_stream(300, seed=5)
    _, quiet = run_lora_mixed(tokens)
    monkeypatch.setattr(runlog, "TICK_S", 0.0)
    lines: list[str] = []
    head = Final(MixtureHead(LORA_EXPERTS, tokens, VOCAB, deferred=True))
    clock = EvalClock(echo=lines.append)
    r = lora_ttt(tiny_model(), tokens, nb(tokens), LORA_EXPERTS, 32, CPU, head=head, clock=clock)
    assert r.loss_sum == quiet
    assert {line.split(":")[0] for line in lines} >= {"eval_targets", "eval_mix"}
