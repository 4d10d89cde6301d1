"""Eval-time experts: the vectorised whole-stream functions equal the sequential references at every
position, references are normalised distributions, everything is causal, and the tilt is normalised."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from pgolf.errors import ConfigError, DataError
from pgolf.eval.experts import (
    NO_HINT,
    BigramExpert,
    MatchExpert,
    NgramExpert,
    TiltHints,
    bigram_probs,
    match_probs,
    ngram_probs,
    reference_probs,
    tilt_hints,
    tilt_log_probs,
    tilt_target_logprob,
)


def _random_stream() -> tuple[np.ndarray, int]:
    return np.random.default_rng(0).integers(0, 7, 1200), 7


def _repetitive_stream() -> tuple[np.ndarray, int]:
    """A 37-token phrase repeated with ~3% of tokens replaced: long contexts recur, not always
    followed by the same token."""
    rng = np.random.default_rng(1)
    tokens = np.tile(rng.integers(0, 50, 37), 40)[:1400]
    noisy = rng.random(len(tokens)) < 0.03
    tokens[noisy] = rng.integers(0, 50, noisy.sum())
    return tokens, 50


STREAMS = {"random": _random_stream, "repetitive": _repetitive_stream}


def _reference_hints(tokens: np.ndarray, order: int, threshold: float) -> np.ndarray:
    ref = TiltHints(order, threshold)
    out = [NO_HINT]
    ref.update(int(tokens[0]))
    for t in range(1, len(tokens)):
        out.append(ref.hint())
        ref.update(int(tokens[t]))
    return np.array(out)


def _vectorised(tokens: np.ndarray, vocab: int) -> dict[str, np.ndarray]:
    """Every vectorised output, as float arrays (NaN where undefined)."""
    match_p, hit = match_probs(tokens, vocab, min_order=2, max_order=8)
    return {
        "ngram": ngram_probs(tokens, vocab),
        "ngram-3": ngram_probs(tokens, vocab, order=3, alpha=0.7),
        "match": match_p,
        "hit": hit.astype(float),
        "bigram": bigram_probs(tokens, vocab),
        "tilt": tilt_hints(tokens, order=3, threshold=0.5).astype(float),
    }


# ---------------------------------------------------------------- vectorised == reference


@pytest.mark.parametrize("stream", STREAMS)
@pytest.mark.parametrize(("order", "alpha"), [(6, None), (3, 0.7), (1, 2.0)])
def test_ngram_matches_reference(stream, order, alpha):
    tokens, vocab = STREAMS[stream]()
    fast = ngram_probs(tokens, vocab, order=order, alpha=alpha)
    ref = reference_probs(NgramExpert(vocab, order=order, alpha=alpha), tokens)
    assert np.isnan(fast[0]) and np.isnan(ref[0])
    np.testing.assert_allclose(fast[1:], ref[1:], rtol=0, atol=1e-12)


def test_ngram_higher_orders_fire_on_repetition():
    tokens, vocab = _repetitive_stream()
    unigram, sixgram = ngram_probs(tokens, vocab, order=1), ngram_probs(tokens, vocab, order=6)
    assert np.nanmean(sixgram[500:]) > 0.8 > 0.1 > np.nanmean(unigram[500:])


def test_ngram_by_hand():
    # V=2, order 2, alpha 1; the contexts (0,) at t=1 and (1,) at t=2 are unseen, so unigram only:
    # t=1 (history 0, target 1): (0 + 1/2)/(1 + 1) = 1/4; t=2 (history 0 1): (1 + 1/2)/(2 + 1) = 1/2.
    # t=3 (history 0 1 0, target 1): unigram (1 + 1/2)/(3 + 1) = 3/8; context (0,) was followed by 1
    # once: (1 + 3/8)/(1 + 1) = 11/16.
    probs = ngram_probs(np.array([0, 1, 0, 1]), 2, order=2, alpha=1.0)
    np.testing.assert_allclose(probs[1:], [0.25, 0.5, 11 / 16], rtol=0, atol=1e-15)
    # alpha is honoured, and defaults to order / 2
    tokens, vocab = _random_stream()
    assert not np.allclose(ngram_probs(tokens, vocab, 4, 0.3)[1:], ngram_probs(tokens, vocab, 4)[1:])
    np.testing.assert_array_equal(ngram_probs(tokens, vocab, 4)[1:], ngram_probs(tokens, vocab, 4, 2.0)[1:])


@pytest.mark.parametrize("stream", STREAMS)
@pytest.mark.parametrize(("min_order", "max_order", "min_count"), [(4, 12, 1), (2, 5, 2)])
def test_match_matches_reference(stream, min_order, max_order, min_count):
    tokens, vocab = STREAMS[stream]()
    fast, hit = match_probs(tokens, vocab, min_order, max_order, min_count)
    ref = reference_probs(MatchExpert(vocab, min_order, max_order, min_count), tokens)
    np.testing.assert_array_equal(hit, ~np.isnan(ref))
    np.testing.assert_array_equal(np.isnan(fast), ~hit)
    np.testing.assert_allclose(fast[hit], ref[hit], rtol=0, atol=1e-12)
    assert not hit[0] and hit.sum() > (0.8 * len(tokens) if stream == "repetitive" else 0)


def test_match_prefers_the_longest_context():
    # (1 2 3 4) was followed by 9; the shorter (2 3 4) by 9 and by 8: the longest match predicts 9 only
    tokens = np.array([1, 2, 3, 4, 9, 0, 2, 3, 4, 8, 1, 2, 3, 4, 8])
    probs, hit = match_probs(tokens, 10, min_order=3, max_order=5)
    assert hit[14] and probs[14] == 0.0 and hit[9] and probs[9] == 0.0 and not hit[:9].any()
    tokens[14] = 9
    assert match_probs(tokens, 10, min_order=3, max_order=5)[0][14] == 1.0
    assert match_probs(tokens, 10, min_order=3, max_order=3)[0][14] == 0.5


@pytest.mark.parametrize("stream", STREAMS)
def test_bigram_matches_reference(stream):
    tokens, vocab = STREAMS[stream]()
    fast, ref = bigram_probs(tokens, vocab), reference_probs(BigramExpert(vocab), tokens)
    np.testing.assert_allclose(fast[1:], ref[1:], rtol=0, atol=1e-12)


def test_bigram_by_hand():
    # t=1: previous token 0 never seen as a context: uniform. t=3: 0 was followed once by 1.
    probs = bigram_probs(np.array([0, 1, 0, 2]), 3)
    np.testing.assert_allclose(probs[1:3], [1 / 3, 1 / 3], rtol=0, atol=1e-15)
    assert probs[3] == pytest.approx(1e-8 / (1 + 2e-8), rel=1e-12)


@pytest.mark.parametrize("stream", STREAMS)
@pytest.mark.parametrize(("order", "threshold"), [(16, 0.8), (3, 0.5), (1, 0.0)])
def test_tilt_hints_match_reference(stream, order, threshold):
    tokens, _ = STREAMS[stream]()
    hints = tilt_hints(tokens, order, threshold)
    assert hints.dtype == np.int64 and hints[0] == NO_HINT
    np.testing.assert_array_equal(hints, _reference_hints(tokens, order, threshold))
    if stream == "repetitive":
        assert (hints >= 0).mean() > 0.4


def test_tilt_hint_ties_and_threshold():
    # context (5,) was followed by 3 and by 2 once each: the tie goes to 2, with share 1/2
    tokens = np.array([5, 3, 5, 2, 5, 7])
    assert tilt_hints(tokens, order=1, threshold=0.5)[5] == 2
    assert tilt_hints(tokens, order=1, threshold=0.6)[5] == NO_HINT
    assert _reference_hints(tokens, 1, 0.5)[5] == 2


# ---------------------------------------------------------------- references are distributions


@pytest.mark.parametrize("stream", STREAMS)
def test_reference_distributions_are_normalised(stream):
    tokens, vocab = STREAMS[stream]()
    experts = [NgramExpert(vocab), NgramExpert(vocab, 2, 0.1), MatchExpert(vocab, 2, 6), BigramExpert(vocab)]
    checked = [0] * len(experts)
    for expert in experts:
        expert.distribution()  # also defined before anything is revealed
    for t, token in enumerate(tokens):
        for i, expert in enumerate(experts):
            if t % 7 == 0 and (dist := expert.distribution()) is not None:
                assert dist.shape == (vocab,) and dist.dtype == np.float64 and dist.min() >= 0
                assert abs(dist.sum() - 1) < 1e-12
                checked[i] += 1
            expert.update(int(token))
    assert min(checked) > 10


# ---------------------------------------------------------------- causality


@pytest.mark.parametrize("stream", STREAMS)
def test_outputs_before_a_change_do_not_move(stream):
    tokens, vocab = STREAMS[stream]()
    base = _vectorised(tokens, vocab)
    for t0 in (1, 5, 300, len(tokens) - 1):
        changed = tokens.copy()
        changed[t0] = (changed[t0] + 1) % vocab
        after = _vectorised(changed, vocab)
        for name in base:
            np.testing.assert_array_equal(after[name][:t0], base[name][:t0], err_msg=name)
            assert not np.array_equal(after[name], base[name]) or name in ("hit", "tilt"), name


def test_reference_distributions_before_a_change_do_not_move():
    tokens, vocab = _repetitive_stream()
    t0 = 200
    changed = tokens.copy()
    changed[t0] = (changed[t0] + 1) % vocab
    for make in (lambda: NgramExpert(vocab), lambda: MatchExpert(vocab), lambda: BigramExpert(vocab)):
        a, b = make(), make()
        for t in range(t0 + 1):
            np.testing.assert_array_equal(a.distribution(), b.distribution())
            a.update(int(tokens[t]))
            b.update(int(changed[t]))
        assert not np.array_equal(a.distribution(), b.distribution())


# ---------------------------------------------------------------- tilting a distribution


@pytest.mark.parametrize(("dtype", "tol"), [(torch.float32, 1e-6), (torch.float64, 1e-12)])
def test_tilt_is_normalised_and_gathers(dtype, tol):
    gen = torch.Generator().manual_seed(0)
    logp = torch.log_softmax(3 * torch.randn(4, 9, 33, generator=gen, dtype=dtype), dim=-1)
    hints = torch.randint(-1, 33, (4, 9), generator=gen)
    hints[0] = NO_HINT
    hints[1, :3] = logp[1, :3].argmax(-1)  # a hint on an already likely token
    targets = torch.randint(0, 33, (4, 9), generator=gen)
    targets[2] = hints[2].clamp(min=0)
    full = tilt_log_probs(logp, hints)
    assert full.dtype == dtype
    torch.testing.assert_close(full.logsumexp(-1), torch.zeros(4, 9, dtype=dtype), rtol=0, atol=tol)
    gathered = full.gather(-1, targets[..., None])[..., 0]
    torch.testing.assert_close(tilt_target_logprob(logp, hints, targets), gathered, rtol=0, atol=tol)
    torch.testing.assert_close(full[0], logp[0], rtol=0, atol=0)
    torch.testing.assert_close(full[hints < 0], logp[hints < 0], rtol=0, atol=0)


def test_tilt_formula():
    p = torch.tensor([0.5, 0.3, 0.2], dtype=torch.float64)
    beta = 1.5
    tilted = tilt_log_probs(p.log(), torch.tensor(1), beta).exp()
    norm = 1 + 0.3 * (math.exp(beta) - 1)
    expected = torch.tensor([0.5, 0.3 * math.exp(beta), 0.2], dtype=torch.float64) / norm
    torch.testing.assert_close(tilted, expected)
    torch.testing.assert_close(tilt_log_probs(p.log(), torch.tensor(1), 0.0), p.log())


# ---------------------------------------------------------------- validation


@pytest.mark.parametrize(
    ("call", "name"),
    [
        (lambda t: ngram_probs(t, 7, order=0), "order"),
        (lambda t: ngram_probs(t, 7, alpha=0.0), "alpha"),
        (lambda t: ngram_probs(t, 7, alpha=float("nan")), "alpha"),
        (lambda t: NgramExpert(7, order=-1), "order"),
        (lambda t: ngram_probs(t, 0), "vocab_size"),
        (lambda t: match_probs(t, 7, min_order=0), "min_order"),
        (lambda t: match_probs(t, 7, min_order=5, max_order=4), "max_order"),
        (lambda t: MatchExpert(7, min_count=0), "min_count"),
        (lambda t: tilt_hints(t, order=0), "order"),
        (lambda t: tilt_hints(t, threshold=1.5), "threshold"),
        (lambda t: TiltHints(threshold=float("nan")), "threshold"),
        (lambda t: TiltHints(order=2.5), "order"),
        (lambda t: tilt_log_probs(torch.zeros(3), torch.tensor(0), beta=math.inf), "beta"),
    ],
)
def test_bad_parameters_raise_config_error(call, name):
    with pytest.raises(ConfigError, match=name):
        call(np.array([1, 2, 3]))


@pytest.mark.parametrize(
    "tokens", [np.array([0, 7, 1]), np.array([-1, 2]), np.zeros((2, 3), dtype=int), np.array([0.0, 1.0]), []]
)
def test_bad_tokens_raise_data_error(tokens):
    with pytest.raises(DataError):
        ngram_probs(tokens, 7)
    with pytest.raises(DataError):
        BigramExpert(7).update(7)
