"""Interpolated n-gram model of characters (bytes), the n-gram baseline of Karpathy, Johnson & Fei-Fei (2015),
"Visualizing and Understanding Recurrent Networks", which compares LSTMs with a 20-gram model.

Symbols are ids 0..K-1. An n-gram model predicts a symbol from the n-1 symbols before it.

Model
-----
For a context h of n-1 symbols, with h' = h without its oldest symbol (n-2 symbols), both smoothings
interpolate with the next lower order down to the uniform distribution:

    P_n(c | h) = alpha(h, c) + beta(h) P_{n-1}(c | h'),        P_0(c) = 1 / K,

with alpha and beta computed from counts a(h, c) on the training text and A(h) = sum_c a(h, c). A context
with A(h) = 0 (never seen; for Kneser-Ney below the highest order, also one seen only at the very start of
the training text) gets alpha = 0, beta = 1: it falls back entirely to the lower order. For every
h, sum_c alpha(h, c) + beta(h) = 1, so every P_n(. | h) sums to exactly 1 over the K symbols.

Witten-Bell (smoothing="witten_bell"). a(h, c) = C(h, c), the number of times h is followed by c, at every
order; T(h) is the number of distinct symbols seen after h:

    alpha(h, c) = C(h, c) / (C(h) + T(h)),      beta(h) = T(h) / (C(h) + T(h)).

Order 1 is the unigram (C(c) + T / K) / (N + T), with N training symbols of which T are distinct.

Modified Kneser-Ney (smoothing="kneser_ney", Chen & Goodman 1998, interpolated). a(h, c) = C(h, c) at the
highest order only; at every lower order it is the continuation count, the number of distinct symbols seen
just before the (m+1)-gram hc (the lower orders then model how many contexts a continuation follows, not how
often it occurs). With the discount D_k for a count k (D_3 for every count of 3 or more, D_0 = 0):

    alpha(h, c) = (a(h, c) - D_{a(h,c)}) / A(h),     beta(h) = sum_c D_{a(h,c)} / A(h).

The discounts are estimated per order from n_k, the number of pairs (h, c) of that order with a(h, c) = k:
Y = n_1 / (n_1 + 2 n_2), D_k = k - (k + 1) Y n_{k+1} / n_k. A D_k that is undefined or outside (0, k), as
happens on tiny texts and at the unigram level of a small alphabet, is replaced by k / 2 (the fallback
discounts 0.5, 1, 1.5 that KenLM also offers); D_k > 0 keeps every probability positive.

Why both, and Kneser-Ney by default: Witten-Bell has no discount to estimate and is the textbook smoothing
for characters (PPM's escape method C, interpolated), but it trusts contexts seen once: after a context seen
once, T = C = 1, half of the mass goes to the one symbol that followed it, and at high orders nearly every
context is seen once, so each extra order makes the model more confident. On War and Peace its cross-entropy
is best near order 5 (1.37 nats/char on the validation split) and gets worse beyond (1.93 at order 20).
Kneser-Ney estimates the discount for the count 1 at each order from the data, which tends to 1 at high
orders (almost all mass of a singleton context goes to the lower order), so its 20-gram does not overfit:
1.24 nats/char, near the paper's 1.195.

Evaluation convention
---------------------
`log_probs(text)` scores each text on its own: position t is predicted from the min(t, n-1) symbols before it
within `text` (position 0 from none, i.e. by the lowest order: for Kneser-Ney the continuation unigram), as
the RNNs are evaluated with their state reset at the start of a split. The first n-1 positions therefore use
lower orders; for a 20-gram this concerns 19 of the ~326,000 symbols of a War and Peace split. Likewise the
first symbols of the training text have no predecessor and add no continuation count (no start-of-text symbol
is added).

Implementation
--------------
Pure numpy, one pass per context length m = 0..n-1 and no loop over characters. Rather than hashing
contexts, each distinct context of length m seen in training gets an exact integer id: the ids of length m
are the ranks (np.unique) of the keys id(context of length m-1) * K + (the symbol m places back), so there
are no hash collisions to worry about, and the keys stay below N * K. The pairs (context id, next symbol)
are counted with a second np.unique; continuation counts come from the distinct pairs one order up. A text to
score is looked up the same way, one context length at a time, with np.searchsorted in the sorted keys; a
context absent from training has no longer context in training either (every longer one contains it as its
newest part), so its id stays -1 from there on and the prediction stops at the lower order. Time is
O(n N log N); memory is four arrays per context length, as long as the number of distinct contexts or pairs
(at most N each): a 20-gram on the 2.6 M training bytes of War and Peace fits in about 15 s and 1 GB.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

SMOOTHINGS = ("kneser_ney", "witten_bell")


class NGramModel:
    """Interpolated n-gram model of order `order` (contexts of order - 1 symbols) over `vocab_size` symbols,
    smoothed by modified Kneser-Ney or Witten-Bell. `fit` counts a training text; `log_probs`,
    `cross_entropy` and `probabilities` score others."""

    def __init__(self, order: int, vocab_size: int, smoothing: str = "kneser_ney"):
        if order < 1:
            raise ValueError(f"order must be at least 1, got {order}")
        if vocab_size < 1:
            raise ValueError(f"vocab_size must be at least 1, got {vocab_size}")
        if smoothing not in SMOOTHINGS:
            raise ValueError(f"smoothing must be one of {SMOOTHINGS}, got {smoothing!r}")
        self.order = order
        self.vocab_size = vocab_size
        self.smoothing = smoothing
        # One entry per context length m = 0..order-1 (filled by fit):
        self._context_keys: list[np.ndarray] = []  # sorted keys id(shorter context) * K + oldest symbol
        self._backoff_weight: list[np.ndarray] = []  # beta(h), indexed by context id
        self._pair_keys: list[np.ndarray] = []  # sorted keys id(h) * K + c of the pairs seen
        self._pair_weight: list[np.ndarray] = []  # alpha(h, c), aligned with _pair_keys

    def fit(self, train: np.ndarray) -> NGramModel:
        """Count all contexts of length 0..order-1 of `train` and the symbols that follow them, and turn the
        counts into the interpolation weights alpha and beta."""
        x = self._symbols(train)
        if len(x) == 0:
            raise ValueError("the training text is empty")
        K = self.vocab_size
        self._context_keys, self._pair_keys, pair_counts = [], [], []
        # context_ids[j] is the id of the context of length m before the target x[m + j].
        keys = np.zeros(1, np.int64)  # the empty context, id 0
        context_ids = np.zeros(len(x), np.int64)
        for m in range(self.order):
            if m > 0:
                # Extend each context one symbol into the past: the target x[t] (t >= m) had the context of
                # length m - 1 at context_ids[t - m + 1] of the previous length, and x[t - m] before it.
                keys, context_ids = np.unique(context_ids[1:] * K + x[: len(x) - m], return_inverse=True)
            pair_keys, pair_count = np.unique(context_ids * K + x[m:], return_counts=True)
            self._context_keys.append(keys)
            self._pair_keys.append(pair_keys)
            pair_counts.append(pair_count)
        del context_ids
        self._backoff_weight = [np.empty(0)] * self.order
        self._pair_weight = [np.empty(0)] * self.order
        # From the top down, so that the counts of an order can be dropped once its weights are known.
        for m in reversed(range(self.order)):
            counts = pair_counts.pop()
            if self.smoothing == "kneser_ney" and m < self.order - 1:
                counts = self._continuation_counts(m)
            self._pair_weight[m], self._backoff_weight[m] = self._weights(m, counts)
        return self

    def log_probs(self, text: np.ndarray) -> np.ndarray:
        """ln p(text[t] | the up to order - 1 symbols before it in `text`) for every position t."""
        x = self._symbols(text)
        return np.log(self._interpolate(self._context_ids(x), x))

    def cross_entropy(self, text: np.ndarray) -> float:
        """Mean negative log-likelihood of `text` in nats per symbol."""
        return float(-np.mean(self.log_probs(text)))

    def probabilities(self, history: np.ndarray) -> np.ndarray:
        """p(c | history) for all K symbols c, from the last order - 1 symbols of `history` (all if fewer)."""
        history = self._symbols(history)
        history = history[max(0, len(history) - (self.order - 1)) :]
        # The appended placeholder is the position to predict; contexts only read the symbols before it.
        ids = self._context_ids(np.append(history, 0))
        context_ids = [np.full(self.vocab_size, ids_m[-1]) for ids_m in ids]
        return self._interpolate(context_ids, np.arange(self.vocab_size))

    def _symbols(self, text: np.ndarray) -> np.ndarray:
        x = np.asarray(text)
        if x.ndim != 1 or not (x.size == 0 or np.issubdtype(x.dtype, np.integer)):
            raise ValueError(f"expected a 1-D array of integer symbol ids, got shape {x.shape} {x.dtype}")
        if x.size and (x.min() < 0 or x.max() >= self.vocab_size):
            raise ValueError(f"symbol ids must lie in 0..{self.vocab_size - 1}")
        return x.astype(np.int64)

    def _continuation_counts(self, m: int) -> np.ndarray:
        """For each pair (h, c) of context length m, the number of distinct symbols seen before hc: the
        number of distinct pairs of length m + 1 whose context, less its oldest symbol, is h and symbol c."""
        K = self.vocab_size
        longer_pairs = self._pair_keys[m + 1]
        h = self._context_keys[m + 1][longer_pairs // K] // K
        keys, counts = np.unique(h * K + longer_pairs % K, return_counts=True)
        continuation = np.zeros(len(self._pair_keys[m]), np.int64)
        # Every such hc is the end of an (m+2)-gram of the text, so it is among the pairs of length m.
        continuation[np.searchsorted(self._pair_keys[m], keys)] = counts
        return continuation

    def _weights(self, m: int, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """alpha(h, c) per pair and beta(h) per context of length m, from the counts a(h, c) of the pairs."""
        h = self._pair_keys[m] // self.vocab_size
        n_contexts = len(self._context_keys[m])
        total = np.bincount(h, weights=counts, minlength=n_contexts)  # A(h)
        if self.smoothing == "witten_bell":
            numerator = counts
            backoff = np.bincount(h, minlength=n_contexts).astype(np.float64)  # T(h)
            denominator = total + backoff
        else:
            discount = _kneser_ney_discounts(counts)[np.minimum(counts, 3)]
            numerator = counts - discount
            backoff = np.bincount(h, weights=discount, minlength=n_contexts)
            denominator = total
        # A context with A(h) = 0 (Kneser-Ney: seen only at the very start of the text) backs off entirely.
        seen = denominator > 0
        pair_weight = np.divide(numerator, denominator[h], out=np.zeros(len(h)), where=seen[h])
        backoff_weight = np.divide(backoff, denominator, out=np.ones(n_contexts), where=seen)
        return pair_weight, backoff_weight

    def _context_ids(self, x: np.ndarray) -> list[np.ndarray]:
        """For each context length m, the training id of the context of length m before every position of
        `x`, or -1 where that context never occurs in training or `x` has fewer than m symbols before."""
        if not self._context_keys:
            raise RuntimeError("fit the model before scoring a text")
        K = self.vocab_size
        ids = np.zeros(len(x), np.int64)
        all_ids = [ids]
        for m in range(1, self.order):
            longer = np.full(len(x), -1, np.int64)
            shorter = ids[m:]
            known = shorter >= 0
            keys = shorter[known] * K + x[: len(x) - m][known]
            longer[m:][known] = _find(self._context_keys[m], keys)
            all_ids.append(longer)
            ids = longer
        return all_ids

    def _interpolate(self, context_ids: list[np.ndarray], targets: np.ndarray) -> np.ndarray:
        """P_n(targets[i] | the contexts with ids context_ids[m][i]), from order 0 upwards."""
        K = self.vocab_size
        p = np.full(len(targets), 1.0 / K)
        for m, ids in enumerate(context_ids):
            seen = ids >= 0
            if not seen.any():
                break  # no longer context can be seen either
            h = ids[seen]
            pair = _find(self._pair_keys[m], h * K + targets[seen])
            pair_weight = np.where(pair >= 0, self._pair_weight[m][pair], 0.0)
            p[seen] = pair_weight + self._backoff_weight[m][h] * p[seen]
        return p


def _kneser_ney_discounts(counts: np.ndarray) -> np.ndarray:
    """[D_0, D_1, D_2, D_3] for the counts a(h, c) of one order (see the module docstring)."""
    n = [np.count_nonzero(counts == k) for k in range(5)]  # n[k] pairs with count k; n[0] unused
    discounts = np.zeros(4)
    for k in (1, 2, 3):
        discount = np.nan
        if n[k] > 0 and n[1] + 2 * n[2] > 0:
            y = n[1] / (n[1] + 2 * n[2])
            discount = k - (k + 1) * y * n[k + 1] / n[k]
        discounts[k] = discount if 0 < discount < k else k / 2
    return discounts


def _find(sorted_keys: np.ndarray, keys: np.ndarray) -> np.ndarray:
    """Index of each of `keys` in `sorted_keys`, -1 where absent."""
    if len(sorted_keys) == 0:
        return np.full(len(keys), -1, np.int64)
    index = np.searchsorted(sorted_keys, keys)
    inside = np.minimum(index, len(sorted_keys) - 1)
    return np.where(sorted_keys[inside] == keys, inside, -1)


def evaluate(
    train: np.ndarray,
    valid: np.ndarray,
    test: np.ndarray,
    vocab_size: int,
    orders: list[int],
    smoothing: str = "kneser_ney",
) -> list[dict]:
    """Fit one model per order on `train`; per order the validation and test cross-entropy (nats per symbol)
    and the seconds the fit took."""
    rows = []
    for order in orders:
        start = time.perf_counter()
        model = NGramModel(order, vocab_size, smoothing).fit(train)
        fit_seconds = time.perf_counter() - start
        rows.append(
            {
                "order": order,
                "valid_nats": model.cross_entropy(valid),
                "test_nats": model.cross_entropy(test),
                "fit_seconds": fit_seconds,
            }
        )
    return rows


# --------------------------------------------------------------------------------------------------
# The command: python -m papers.char_rnn.ngram [--corpus ...] [--orders ...]
# The paper's n-gram comparison (spec §5) [secondary]: best recurrent net and 20-gram, nats per character.
PUBLISHED = {
    "war_and_peace": {"best_rnn": 1.077, "ngram20": 1.195},
    "linux_kernel": {"best_rnn": 0.84, "ngram20": 0.889},
}


def main(argv: list[str] | None = None) -> int:
    from papers.char_rnn.data import CharData
    from papers.char_rnn.grid import CORPORA
    from repro import results

    parser = argparse.ArgumentParser(
        prog="python -m papers.char_rnn.ngram",
        description="Fit n-gram character models on a corpus's training split and score its validation and "
        "test splits (nats/char); writes results/char_rnn/ngram_<corpus>.json and .png.",
    )
    parser.add_argument("--corpus", choices=[c["corpus"] for c in CORPORA.values()], default="war_and_peace")
    parser.add_argument("--orders", type=int, nargs="+", default=[1, 2, 3, 5, 7, 10, 15, 20])
    parser.add_argument("--smoothing", choices=SMOOTHINGS, nargs="+", default=list(SMOOTHINGS))
    parser.add_argument("--limit-chars", type=int, help="use only the first this-many bytes (quick checks)")
    parser.add_argument("--results", type=Path, default=results.RESULTS)
    args = parser.parse_args(argv)

    split = next(c["split"] for c in CORPORA.values() if c["corpus"] == args.corpus)
    data = CharData(corpus=args.corpus, split=split, limit_chars=args.limit_chars)
    data.setup()
    train, valid, test = (data.parts[p] for p in ("train", "val", "test"))
    rows = []
    for smoothing in args.smoothing:
        for row in evaluate(train, valid, test, len(data.vocab), args.orders, smoothing):
            rows.append({"smoothing": smoothing, **{k: round(v, 5) for k, v in row.items()}})
            print(
                f"{smoothing:>11} order {row['order']:>2}: valid {row['valid_nats']:.4f}, "
                f"test {row['test_nats']:.4f} nats/char ({row['fit_seconds']:.1f} s)",
                flush=True,
            )
    report = {
        "paper": "char_rnn",
        "corpus": args.corpus,
        "split": split,
        "characters": {"train": len(train), "valid": len(valid), "test": len(test)},
        "vocabulary": len(data.vocab),
        "published": PUBLISHED[args.corpus],
        "evidence": "secondary",
        "rows": rows,
        "git": results.git_state(),
        "hardware": results.hardware(),
        "measured_at": results.now(),
    }
    stem = f"ngram_{args.corpus}" + ("" if args.limit_chars is None else f"_first{args.limit_chars}")
    out = args.results / "char_rnn" / f"{stem}.json"
    results.write_json(out, report)
    plot(report, out.with_suffix(".png"))
    print(f"wrote {out} and {out.with_suffix('.png')}")
    return 0


def plot(report: dict, path: Path) -> None:
    """Test nats/char against the order, per smoothing, with the paper's 20-gram and best net marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4.2))
    for smoothing in dict.fromkeys(r["smoothing"] for r in report["rows"]):
        rows = [r for r in report["rows"] if r["smoothing"] == smoothing]
        ax.plot([r["order"] for r in rows], [r["test_nats"] for r in rows], "o-", label=smoothing)
    published = report["published"]
    ax.plot([20], [published["ngram20"]], "k*", ms=12, label="paper's 20-gram [secondary]")
    ax.axhline(published["best_rnn"], color="grey", ls=":", label="paper's best recurrent net")
    ax.set_xlabel("n-gram order n")
    ax.set_ylabel("test cross-entropy (nats/char)")
    ax.set_title(f"n-gram baselines on {report['corpus']} (test split)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
