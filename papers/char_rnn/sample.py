"""Text sampled from a trained character model, as char-rnn's ``sample.lua`` makes it.

    repro sample char_rnn --experiment E [--tier cpu] [--seed 1] [--temperature 1.0] [--length 500]
                          [--prime TEXT] [--sample-seed 1]
    (or: python -m papers.char_rnn.sample ...)

The prime (a newline by default) is encoded as UTF-8 bytes and fed through the model (best-validation
weights) from a zero state; then ``--length`` bytes are drawn one at a time from softmax(logits / T), each
fed back in, with a ``torch.Generator`` seeded by ``--sample-seed`` (the same seed gives the same text). A low
temperature sharpens the distribution towards the most likely byte (T → 0 is greedy decoding), a high one
flattens it. The prime and the sample are printed to stdout, decoded as UTF-8 with invalid bytes replaced.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

from papers.char_rnn.model import CharRNN
from papers.char_rnn.trained import load


def generate(
    net: CharRNN, prime: np.ndarray, length: int, temperature: float, generator: torch.Generator
) -> np.ndarray:
    """``length`` symbol ids drawn after the ``prime`` ids (at least one), each from softmax(logits / T)."""
    if temperature <= 0:
        raise ValueError(f"--temperature must be > 0, got {temperature}")
    if len(prime) == 0:
        raise ValueError("the prime must hold at least one character")
    out = np.zeros(length, dtype=np.int64)
    with torch.no_grad():
        logits, state = net(torch.as_tensor(prime, dtype=torch.int64)[None], net.zero_state(1))
        for t in range(length):
            last = logits[0, -1].double()
            # Shifting by the maximum first keeps a tiny temperature finite: the top byte gets exp(0).
            probs = torch.softmax((last - last.max()) / temperature, dim=0)
            out[t] = int(torch.multinomial(probs, 1, generator=generator))
            logits, state = net(torch.tensor([[out[t]]]), state)
    return out


def encode_prime(vocab, prime: str) -> np.ndarray:
    raw = prime.encode("utf-8")
    unknown = sorted({b for b in raw if vocab.index[b] < 0})
    if unknown:
        shown = ", ".join(f"{bytes([b])!r}" for b in unknown[:10])
        raise ValueError(f"the prime holds bytes that are not in the corpus's vocabulary: {shown}")
    return vocab.encode(raw)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="repro sample char_rnn",
        description=__doc__.split("\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("\n\n", 2)[2],
    )
    parser.add_argument("--experiment", "-e", required=True, help="e.g. wp_lstm_1x64")
    parser.add_argument("--tier", default="cpu")
    parser.add_argument("--seed", type=int, default=1, help="training seed of the run (default 1)")
    parser.add_argument("--temperature", type=float, default=1.0, help="T > 0 (default 1.0)")
    parser.add_argument("--length", type=int, default=500, help="bytes to sample (default 500)")
    parser.add_argument("--prime", default="\n", help="text fed first (default: a newline)")
    parser.add_argument("--sample-seed", type=int, default=1, help="seed of the sampling generator")
    parser.add_argument("--runs", type=Path, help="runs folder (default: runs/ or $REPRO_RUNS)")
    args = parser.parse_args(argv)
    try:
        if args.temperature <= 0:
            raise ValueError(f"--temperature must be > 0, got {args.temperature}")
        if args.length < 0:
            raise ValueError(f"--length must be 0 or more, got {args.length}")
        if not args.prime:
            raise ValueError("--prime must hold at least one character")
        trained = load(args.experiment, args.tier, args.seed, args.runs)
        prime = encode_prime(trained.data.vocab, args.prime)
        torch.set_num_threads(1)  # one stream, one byte at a time
        generator = torch.Generator().manual_seed(args.sample_seed)
        ids = generate(trained.net, prime, args.length, args.temperature, generator)
    except (FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    text = args.prime.encode("utf-8") + trained.data.vocab.decode(ids)
    sys.stdout.write(text.decode("utf-8", errors="replace"))
    sys.stdout.write("\n")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
