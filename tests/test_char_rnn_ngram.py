"""n-gram baseline of char-rnn (papers/char_rnn/ngram.py): hand-computed Witten-Bell and Kneser-Ney
probabilities, agreement with a plain-loop reference, normalisation, the unigram, a deterministic text,
fallback after unseen contexts and a 20-gram at scale."""

from collections import Counter, defaultdict

import numpy as np
import pytest

from papers.char_rnn.ngram import SMOOTHINGS, NGramModel, evaluate

ALPHABET = "abcdrz"  # 'z' never occurs in the training text below
K_ABRA = len(ALPHABET)


def ids(text):
    return np.array([ALPHABET.index(ch) for ch in text], np.int64)


def abracadabra(order, smoothing):
    return NGramModel(order, K_ABRA, smoothing).fit(ids("abracadabra"))


# Counts in "abracadabra" (11 symbols, K = 6):
#   unigram: a 5, b 2, r 2, c 1, d 1, z 0; N = 11, T = 5 distinct symbols
#   after 'a': b 2, c 1, d 1 (C = 4, T = 3; the final 'a' is followed by nothing)
#   after 'b': r 2 (C = 2, T = 1)      after 'r': a 2 (C = 2, T = 1)
#   after 'ab': r 2 (C = 2, T = 1)     after 'br': a 2 (C = 2, T = 1)     after 'ra': c 1 (C = 1, T = 1)
def wb1(count):
    return (count + 5 / 6) / (11 + 5)


WB1 = {"a": wb1(5), "b": wb1(2), "r": wb1(2), "c": wb1(1), "d": wb1(1), "z": wb1(0)}
WB2_b_after_a = (2 + 3 * WB1["b"]) / (4 + 3)
WB2_d_after_a = (1 + 3 * WB1["d"]) / (4 + 3)
WB2_r_after_b = (2 + 1 * WB1["r"]) / (2 + 1)
WB2_a_after_r = (2 + 1 * WB1["a"]) / (2 + 1)
WB3_r_after_ab = (2 + 1 * WB2_r_after_b) / (2 + 1)
WB3_a_after_br = (2 + 1 * WB2_a_after_r) / (2 + 1)
WB3_d_after_ra = (0 + 1 * WB2_d_after_a) / (1 + 1)  # 'd' never followed 'ra': all its mass comes from below


@pytest.mark.parametrize(
    "order, expected",
    [
        (1, [WB1["a"], WB1["b"], WB1["r"], WB1["a"], WB1["d"]]),
        (2, [WB1["a"], WB2_b_after_a, WB2_r_after_b, WB2_a_after_r, WB2_d_after_a]),
        # Positions 0 and 1 have fewer than 2 symbols of history in the scored text: orders 1 and 2.
        (3, [WB1["a"], WB2_b_after_a, WB3_r_after_ab, WB3_a_after_br, WB3_d_after_ra]),
    ],
)
def test_hand_computed_witten_bell(order, expected):
    got = np.exp(abracadabra(order, "witten_bell").log_probs(ids("abrad")))
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-12)


def test_symbol_never_seen_gets_its_share_of_the_uniform():
    assert np.exp(abracadabra(1, "witten_bell").log_probs(ids("z")))[0] == pytest.approx(WB1["z"], abs=1e-12)


# Modified Kneser-Ney on "abracadabra", D_k = k - (k+1) Y n_{k+1} / n_k with Y = n_1 / (n_1 + 2 n_2); a D_k
# that is undefined or outside (0, k) becomes k / 2.
# Order 1, raw counts a 5, b 2, r 2, c 1, d 1: n_1 = 2, n_2 = 2, n_3 = 0, n_4 = 0, Y = 2 / 6
#   D_1 = 1 - 2 (1/3) 2/2 = 1/3;  D_2 = 2 - 3 (1/3) 0/2 = 2, not below 2 -> 1;  D_3: n_3 = 0 -> 1.5
KN1_backoff = (1.5 + 1 + 1 + 1 / 3 + 1 / 3) / 11  # the discounts of a, b, r, c, d over A = 11
KN1 = {
    "a": (5 - 1.5) / 11 + KN1_backoff / 6,
    "b": (2 - 1) / 11 + KN1_backoff / 6,
    "d": (1 - 1 / 3) / 11 + KN1_backoff / 6,
    "z": KN1_backoff / 6,
}
# Order 2, lowest order: continuation counts, the number of distinct symbols before each symbol:
#   a 3 (after r, c, d; the first 'a' has nothing before it), b 1, r 1, c 1, d 1:
#   n_1 = 4, n_2 = 0, n_3 = 1, n_4 = 0, Y = 1; D_1 = 1 - 2 * 0/4 = 1, not below 1 -> 0.5; D_2: n_2 = 0 -> 1;
#   D_3 = 3 - 4 * 0/1 = 3, not below 3 -> 1.5.  A = 7, backoff (1.5 + 4 * 0.5) / 7 = 1/2.
KN2_low = {symbol: 0.5 / 7 + 0.5 / 6 for symbol in "brd"} | {"a": (3 - 1.5) / 7 + 0.5 / 6}
# Order 2, highest order: raw pair counts ab 2, br 2, ra 2, ac 1, ca 1, ad 1, da 1:
#   n_1 = 4, n_2 = 3, n_3 = 0, Y = 4 / 10; D_1 = 1 - 2 (0.4) 3/4 = 0.4; D_2 = 2 - 3 (0.4) 0/3 = 2 -> 1.
#   After 'a' (b 2, c 1, d 1; A = 4): backoff (1 + 0.4 + 0.4) / 4 = 0.45.
#   After 'b' or 'r' (one pair, count 2; A = 2): alpha = (2 - 1) / 2, backoff 1 / 2.
KN2_b_after_a = (2 - 1) / 4 + 0.45 * KN2_low["b"]
KN2_d_after_a = (1 - 0.4) / 4 + 0.45 * KN2_low["d"]
KN2_r_after_b = (2 - 1) / 2 + 0.5 * KN2_low["r"]
KN2_a_after_r = (2 - 1) / 2 + 0.5 * KN2_low["a"]


@pytest.mark.parametrize(
    "order, text, expected",
    [
        (1, "abdz", [KN1["a"], KN1["b"], KN1["d"], KN1["z"]]),
        (2, "abrad", [KN2_low["a"], KN2_b_after_a, KN2_r_after_b, KN2_a_after_r, KN2_d_after_a]),
    ],
)
def test_hand_computed_kneser_ney(order, text, expected):
    got = np.exp(abracadabra(order, "kneser_ney").log_probs(ids(text)))
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-12)


@pytest.mark.parametrize("smoothing", SMOOTHINGS)
def test_unseen_context_falls_back_to_lower_order(smoothing):
    model = abracadabra(3, smoothing)
    # 'b' is always followed by 'r', so the context 'ba' is unseen: its prediction is the one after 'a'.
    np.testing.assert_allclose(model.probabilities(ids("ba")), model.probabilities(ids("a")), atol=1e-15)
    # 'z' never occurs, so neither does any context holding it: back down to the lowest order.
    np.testing.assert_allclose(model.probabilities(ids("zz")), model.probabilities(ids("")), atol=1e-15)
    np.testing.assert_allclose(model.probabilities(ids("az")), model.probabilities(ids("")), atol=1e-15)


class ReferenceModel:
    """Both smoothings written with dictionaries and plain loops over the training text."""

    def __init__(self, train, order, K, smoothing):
        self.order, self.K, self.smoothing = order, K, smoothing
        self.levels, self.discounts = [], []  # per context length m: h -> Counter(c -> a(h, c)); D_0..D_3
        for m in range(order):
            continuation = smoothing == "kneser_ney" and m < order - 1
            counts, before = defaultdict(Counter), defaultdict(set)
            for t in range(m, len(train)):
                h, c = tuple(train[t - m : t]), train[t]
                if not continuation:
                    counts[h][c] += 1
                elif t > m:
                    before[h, c].add(train[t - m - 1])
            for (h, c), symbols_before in before.items():
                counts[h][c] = len(symbols_before)
            n = Counter(k for after_h in counts.values() for k in after_h.values())
            discounts = [0.0]
            for k in (1, 2, 3):
                ok = n[k] > 0 and n[1] + 2 * n[2] > 0
                d = k - (k + 1) * n[1] / (n[1] + 2 * n[2]) * n[k + 1] / n[k] if ok else 0.0
                discounts.append(d if 0 < d < k else k / 2)
            self.levels.append(counts)
            self.discounts.append(discounts)

    def probability(self, history, symbol):
        history = list(history)[max(0, len(history) - (self.order - 1)) :]
        p = 1 / self.K
        for m in range(len(history) + 1):
            a = self.levels[m].get(tuple(history[len(history) - m :]))
            if not a:
                break
            total = sum(a.values())
            if self.smoothing == "witten_bell":
                p = (a[symbol] + len(a) * p) / (total + len(a))
            else:
                D = self.discounts[m]
                alpha = (a[symbol] - D[min(a[symbol], 3)]) / total if symbol in a else 0.0
                p = alpha + sum(D[min(k, 3)] for k in a.values()) / total * p
        return p


@pytest.mark.parametrize("smoothing", SMOOTHINGS)
def test_matches_a_loop_over_the_training_text(smoothing):
    rng = np.random.default_rng(3)
    K = 5
    train = rng.integers(0, K, 1_500)
    text = rng.integers(0, K, 60)
    for order in (1, 2, 4, 7):
        # At order 7 the Kneser-Ney discounts of context lengths 2 to 4 come from the formula, the rest from
        # the fallback.
        reference = ReferenceModel(list(train), order, K, smoothing)
        got = np.exp(NGramModel(order, K, smoothing).fit(train).log_probs(text))
        expected = [reference.probability(text[:t], text[t]) for t in range(len(text))]
        np.testing.assert_allclose(got, expected, rtol=1e-12)


@pytest.mark.parametrize("smoothing", SMOOTHINGS)
@pytest.mark.parametrize("order", [1, 2, 3, 5, 8])
def test_probabilities_sum_to_one_and_match_log_probs(order, smoothing):
    rng = np.random.default_rng(order)
    K = 5
    train = rng.integers(0, K, 2_000)
    model = NGramModel(order, K, smoothing).fit(train)
    histories = [train[100:120], train[-order:], train[:0], train[:1], rng.integers(0, K, 12)]
    for history in histories:
        p = model.probabilities(history)
        assert p.shape == (K,)
        assert (p > 0).all()
        assert abs(p.sum() - 1) < 1e-12
        # log_probs of history + c scores c with the same context as probabilities(history).
        last = [model.log_probs(np.append(history, c))[-1] for c in range(K)]
        np.testing.assert_allclose(np.exp(last), p, rtol=1e-12)


def test_order_one_witten_bell_is_the_smoothed_unigram():
    rng = np.random.default_rng(0)
    K = 7
    train = rng.integers(0, K - 2, 3_000)  # the two last symbols never occur
    text = rng.integers(0, K, 500)
    counts = np.bincount(train, minlength=K)
    distinct = (counts > 0).sum()
    unigram = (counts + distinct / K) / (len(train) + distinct)
    model = NGramModel(1, K, "witten_bell").fit(train)
    np.testing.assert_allclose(model.log_probs(text), np.log(unigram[text]), rtol=1e-12)


@pytest.mark.parametrize("smoothing", SMOOTHINGS)
def test_deterministic_text_needs_a_context_of_three(smoothing):
    # Period 7, every 3-symbol window distinct (a maximal-length shift-register sequence), so 3 symbols of
    # context determine the next one; 2 do not ('01' is followed by both 0 and 1).
    period = np.array([0, 0, 1, 0, 1, 1, 1])
    train, text = np.tile(period, 1_000), np.tile(np.roll(period, 3), 50)
    rows = {row["order"]: row for row in evaluate(train, text, text[5:], 2, [1, 3, 4, 6], smoothing)}
    assert rows[1]["valid_nats"] > 0.6  # about the entropy of the 4/7 : 3/7 symbol frequencies
    assert rows[3]["valid_nats"] > 0.2
    for order in (4, 6):
        model = NGramModel(order, 2, smoothing).fit(train)
        assert -model.log_probs(text)[order - 1 :].max() < 2e-3  # once the context is complete
        assert rows[order]["valid_nats"] < 0.02 and rows[order]["test_nats"] < 0.02


def test_order_twenty_on_200k_symbols():
    rng = np.random.default_rng(1)
    K = 4
    train, text = rng.integers(0, K, 200_000), rng.integers(0, K, 20_000)
    kneser_ney = NGramModel(20, K).fit(train)
    witten_bell = NGramModel(20, K, "witten_bell").fit(train)
    # Random text: no order can beat ln K on new text. Witten-Bell trusts the many long contexts seen once and
    # does much worse; Kneser-Ney sends most of their mass to the lower orders.
    assert np.log(K) < kneser_ney.cross_entropy(text) < np.log(K) + 0.15
    assert np.log(K) + 0.3 < witten_bell.cross_entropy(text)
    for model in (kneser_ney, witten_bell):
        assert model.cross_entropy(train[:20_000]) < np.log(2)  # long contexts recall the training text
        assert abs(model.probabilities(text[:50]).sum() - 1) < 1e-12


def test_rejects_bad_arguments():
    with pytest.raises(ValueError):
        NGramModel(2, 3).fit(np.array([0, 1, 3]))
    with pytest.raises(ValueError):
        NGramModel(2, 3, "good_turing")
