"""Synthetic tasks of Joulin & Mikolov (2015), "Stack-Augmented Recurrent Nets".

Everything here follows /work/shared/specs/stack_rnn.md:
  - §2.1 sequences are concatenated into one stream, with no separators,
  - §2.2 the generators of the official code (task.h, train_add.cpp),
  - §2.3 which target characters are scored at test time,
  - §2.4 the curriculum, the n sampler and the test protocol.

A sequence is a list of symbol indices into `Task.symbols`. A stream is a concatenation of sequences
turned into (input, target) pairs for next-character prediction: inputs[t] = chars[t-1],
targets[t] = chars[t], and inputs[0] is the stream's first input symbol.

Python cannot reproduce C rand() streams (spec §7.2): all randomness comes from a
numpy.random.Generator, so sequences have the code's distributions, not its exact draws.

Tasks 5 and 6 of the code (a^n b^k c^nk, a^n b^m c^n d^m) are not implemented: the spec lists them as
"code only, not in the paper" without giving their exact rule.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

# -----------------------------------------------------------------------------
# Tasks


@dataclass(frozen=True)
class Task:
    """One generator of spec §2.2 plus its scoring rule of spec §2.3.

    name:       registry key, e.g. "anbn".
    symbols:    vocabulary in index order ("ab", "abc", ...; addition: "+=.01").
    supervised: True only for addition, where the loss is taken on the scored positions only (§2.3).
    """

    name: str
    symbols: str
    supervised: bool = False

    def generate(self, rng: np.random.Generator, n: int) -> list[int]:
        """One sequence (symbol indices) for curriculum/test value n."""
        raise NotImplementedError

    def scored_targets(self, seq: list[int]) -> list[int]:
        """Indices of the TARGET characters scored at test (spec §2.3), relative to the sequence start.

        The list may contain len(seq): the first character of the next sequence, which the spec
        credits to this sequence for tasks 1-3.
        """
        raise NotImplementedError

    @property
    def first_input(self) -> int:
        """Input at the first step of a stream: the last letter, index nchar-1 (spec §3).

        For addition the spec does not say; we use the same rule (the last symbol, '1').
        """
        return len(self.symbols) - 1

    @property
    def vocab_size(self) -> int:
        return len(self.symbols)

    def encode(self, text: str) -> list[int]:
        """Text to symbol indices, e.g. "aabb" -> [0, 0, 1, 1]; handy in tests and for reading traces."""
        return [self.symbols.index(c) for c in text]

    def decode(self, seq: Sequence[int]) -> str:
        return "".join(self.symbols[int(i)] for i in seq)


def _after_trigger(seq: list[int], trigger: int, include_next: bool) -> list[int]:
    """Targets strictly after the trigger target (the trigger itself is not scored, spec §2.3).

    include_next adds len(seq): the next sequence's first character.
    """
    end = len(seq) + 1 if include_next else len(seq)
    return list(range(trigger + 1, end))


@dataclass(frozen=True)
class CountingTask(Task):
    """Code task 1 (a^n b^n, a^n b^n c^n, a^n b^n c^n d^n): n copies of each of the nchar letters in order."""

    def generate(self, rng: np.random.Generator, n: int) -> list[int]:
        if n < 1:
            raise ValueError(f"{self.name}: n must be >= 1, got {n}")
        seq: list[int] = []
        for letter in range(self.vocab_size):
            seq += [letter] * n
        return seq

    def scored_targets(self, seq: list[int]) -> list[int]:
        # Trigger: 'a' -> first non-'a'. Everything after it is deterministic, and so is the next 'a'.
        trigger = next(i for i, c in enumerate(seq) if c != 0)
        return _after_trigger(seq, trigger, include_next=True)


@dataclass(frozen=True)
class RepeatTask(Task):
    """Code task 2 (a^n b^2n with nrep = 2): n x 'a', then nrep*n copies of letter 1 + rand()%(nchar-1).

    With nchar = 2 the letter is always 'b', but the draw is still made (spec §2.2) so that the random
    stream advances as in the code.
    """

    nrep: int = 2

    def generate(self, rng: np.random.Generator, n: int) -> list[int]:
        if n < 1:
            raise ValueError(f"{self.name}: n must be >= 1, got {n}")
        # Mirror 1 + rand() % (nchar - 1) with a full-range draw: numpy's integers(1) would return 0
        # without consuming any randomness, and the spec wants the draw made even when nchar = 2.
        letter = 1 + int(rng.integers(1 << 31)) % (self.vocab_size - 1)
        return [0] * n + [letter] * (self.nrep * n)

    def scored_targets(self, seq: list[int]) -> list[int]:
        # Same rule as task 1: after the first non-'a', plus the next sequence's first 'a'.
        trigger = next(i for i, c in enumerate(seq) if c != 0)
        return _after_trigger(seq, trigger, include_next=True)


@dataclass(frozen=True)
class SumCountTask(Task):
    """Code task 3 (a^n b^m c^(n+m)). The curriculum/test value is T = n + m (spec §2.2, §7.3).

    m = 1 + rand()%(T-1), n = T - m, emit a^n b^m c^T. So n, m >= 1 and T >= 2.
    """

    def generate(self, rng: np.random.Generator, n: int) -> list[int]:
        total = n
        if total < 2:
            raise ValueError(f"{self.name}: T = n + m must be >= 2, got {total}")
        m = 1 + int(rng.integers(total - 1))  # uniform on {1..T-1}
        return [0] * (total - m) + [1] * m + [2] * total

    def scored_targets(self, seq: list[int]) -> list[int]:
        # Trigger: 'b' -> first 'c' (when the b's stop is random). The remaining c's and the next 'a'
        # are deterministic. The a -> b switch is random too and is never scored.
        trigger = seq.index(2)
        return _after_trigger(seq, trigger, include_next=True)


@dataclass(frozen=True)
class MemorizationTask(Task):
    """Code task 4 (nchar = 3): w = n symbols uniform on {'b','c'}, emit w + 'a' + reverse(w).

    'a' plays the paper's '=' and 'b', 'c' play its two symbols.
    """

    def generate(self, rng: np.random.Generator, n: int) -> list[int]:
        if n < 1:
            raise ValueError(f"{self.name}: n must be >= 1, got {n}")
        w = rng.integers(1, 3, size=n).tolist()  # 1 = 'b', 2 = 'c'
        return w + [0] + w[::-1]

    def scored_targets(self, seq: list[int]) -> list[int]:
        # Trigger: any -> 'a'. The n reversed symbols are scored; the next sequence's first symbol is
        # random, so it is not.
        trigger = seq.index(0)
        return _after_trigger(seq, trigger, include_next=False)


@dataclass(frozen=True)
class AdditionTask(Task):
    """Binary addition (train_add.cpp, base 2), alphabet "+=.01".

    Draw total length T; l1 uniform on {0..T}, l2 = T - l1. Each operand: most significant digit '1',
    the others uniform on {0,1}; an empty operand is written "0". Emit "A+B=" (operands most significant
    digit first), then the sum least significant digit first, then '.'.
    """

    def generate(self, rng: np.random.Generator, n: int) -> list[int]:
        if n < 0:
            raise ValueError(f"{self.name}: total operand length must be >= 0, got {n}")
        len_a = int(rng.integers(n + 1))  # uniform on {0..T}
        a = self._operand(rng, len_a)
        b = self._operand(rng, n - len_a)
        total = bin(int(a, 2) + int(b, 2))[2:][::-1]  # least significant digit first
        return self.encode(f"{a}+{b}={total}.")

    @staticmethod
    def _operand(rng: np.random.Generator, length: int) -> str:
        if length == 0:
            return "0"
        return "1" + "".join("01"[d] for d in rng.integers(2, size=length - 1))

    def scored_targets(self, seq: list[int]) -> list[int]:
        # Every character after '=' (the result digits and the final '.').
        trigger = seq.index(self.symbols.index("="))
        return _after_trigger(seq, trigger, include_next=False)


TASKS: dict[str, Task] = {
    task.name: task
    for task in [
        CountingTask("anbn", "ab"),
        CountingTask("anbncn", "abc"),
        CountingTask("anbncndn", "abcd"),
        RepeatTask("anb2n", "ab", nrep=2),
        SumCountTask("anbmcnm", "abc"),
        MemorizationTask("memorization", "abc"),
        AdditionTask("addition", "+=.01", supervised=True),
    ]
}


def get_task(name: str) -> Task:
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; valid names: {', '.join(sorted(TASKS))}")
    return TASKS[name]


# -----------------------------------------------------------------------------
# Streams


@dataclass
class Stream:
    """Sequences concatenated into one next-character prediction stream (spec §2.1). All tensors on CPU.

    inputs:   [L] input symbol at each step: inputs[0] = first input, inputs[t] = targets[t-1].
    targets:  [L] the character to predict at each step.
    scored:   [L] the target is a scored (deterministic) character of some sequence (spec §2.3).
    sequence: [L] id of the sequence a scored target is credited to, -1 where not scored. The next
              sequence's first character is credited to the previous sequence.
    lengths:  [num_sequences] the n (curriculum/test value) of each sequence.
    starts:   [num_sequences] stream position (target index) of each sequence's first character.
    """

    inputs: torch.Tensor
    targets: torch.Tensor
    scored: torch.Tensor
    sequence: torch.Tensor
    lengths: torch.Tensor
    starts: torch.Tensor

    @property
    def evaluated(self) -> torch.Tensor:
        """[num_sequences] bool: the sequence has at least one scored target (it counts in accuracy)."""
        counts = torch.bincount(self.sequence[self.scored], minlength=len(self.lengths))
        return counts > 0

    def __len__(self) -> int:
        return len(self.targets)


def make_stream(
    task: Task, ns: Sequence[int], rng: np.random.Generator, first_input: int | None = None
) -> Stream:
    """Concatenate one sequence per entry of ns, with no separators (spec §2.1).

    first_input: the input at step 0; default task.first_input (spec §3). Pass the previous stream's
    last character to continue a stream.

    A scored target that falls past the end of the stream (the last sequence's next first character,
    tasks 1-3) is dropped, and that sequence is then unscored entirely: in the code a sequence is
    evaluated only once the next one has started (spec §2.4), so it is never judged on a partial
    window. For memorization and addition the last sequence keeps its scored targets (they lie inside
    the stream, and addition trains on them); test_stream() applies the code's rule that the last
    sequence of each n block is never scored.
    """
    ns = [int(n) for n in ns]
    if not ns:
        raise ValueError("make_stream needs at least one sequence")
    seqs = [task.generate(rng, n) for n in ns]

    seq_lens = np.array([len(s) for s in seqs], dtype=np.int64)
    starts = np.concatenate([[0], np.cumsum(seq_lens)[:-1]]).astype(np.int64)
    total = int(seq_lens.sum())
    chars = np.fromiter(itertools.chain.from_iterable(seqs), dtype=np.int64, count=total)

    # Scored targets of every sequence, shifted to stream positions.
    offsets = [task.scored_targets(s) for s in seqs]
    counts = np.array([len(o) for o in offsets], dtype=np.int64)
    seq_id = np.repeat(np.arange(len(seqs), dtype=np.int64), counts)
    pos = np.fromiter(itertools.chain.from_iterable(offsets), dtype=np.int64, count=int(counts.sum()))
    pos += starts[seq_id]

    # A sequence with a scored target beyond the stream is not scored at all (see docstring).
    incomplete = np.unique(seq_id[pos >= total])
    keep = ~np.isin(seq_id, incomplete)
    pos, seq_id = pos[keep], seq_id[keep]
    # Scoring windows never overlap (each opens after a trigger at index >= 1), so every scored
    # position is credited to exactly one sequence.
    assert len(np.unique(pos)) == len(pos), "overlapping scored positions"

    scored = np.zeros(total, dtype=bool)
    scored[pos] = True
    sequence = np.full(total, -1, dtype=np.int64)
    sequence[pos] = seq_id

    first = task.first_input if first_input is None else int(first_input)
    inputs = np.concatenate([[first], chars[:-1]]).astype(np.int64)
    return Stream(
        inputs=torch.from_numpy(inputs),
        targets=torch.from_numpy(chars),
        scored=torch.from_numpy(scored),
        sequence=torch.from_numpy(sequence),
        lengths=torch.tensor(ns, dtype=torch.long),
        starts=torch.from_numpy(starts),
    )


# -----------------------------------------------------------------------------
# Curriculum and sampling


def curriculum_nmax(epoch: int, N: int) -> int:
    """Exclusive upper bound on n in epoch `epoch` (0-based): max(min(e+3, N), 3) (spec §2.4).

    With nmin = 2, epoch 0 trains on n = 2 only, and the bound grows by one per epoch up to N-1.
    """
    return max(min(epoch + 3, N), 3)


def sample_ns(rng: np.random.Generator, count: int, nmin: int, nmax: int) -> np.ndarray:
    """count values of n uniform on {nmin..nmax-1} (the code's rand() % (nmax-nmin) + nmin, spec §2.2).

    If nmax <= nmin + 1 every value is nmin: train_add's special case (spec §2.2). For nmax = nmin + 1
    this is the uniform rule anyway; for nmax <= nmin the toy code would divide by zero, and the
    curriculum never asks for it (nmax >= 3 > nmin = 2).
    """
    if nmax <= nmin + 1:
        return np.full(count, nmin, dtype=np.int64)
    return rng.integers(nmin, nmax, size=count, dtype=np.int64)


# -----------------------------------------------------------------------------
# Test protocol and metric


def test_stream(task: Task, n_values: Sequence[int], per_length: int = 200, seed: int = 10) -> Stream:
    """The code's test protocol (spec §2.4): seed 10; for each n in order, per_length sequences with
    exactly that n, all in one continuous stream. The caller empties the stacks before its first step
    (train_toy.cpp: never again; train_add.cpp: also every nreset sequences of each n block, see
    data.periodic_resets).

    A sequence is evaluated when the next one starts and the code restarts its counters at each n,
    so the last sequence of each n block is never scored: per_length - 1 (199) scored sequences per n.
    """
    rng = np.random.default_rng(seed)
    ns = np.repeat(np.asarray(n_values, dtype=np.int64), per_length)
    stream = make_stream(task, ns, rng)
    # Unscore the last sequence of each block; for tasks 1-3 this also drops the next block's first
    # character, which the code never credits to it.
    last = torch.arange(per_length - 1, len(ns), per_length)
    drop = torch.isin(stream.sequence, last)
    stream.scored[drop] = False
    stream.sequence[drop] = -1
    return stream


def sequence_accuracy(correct: torch.Tensor, stream: Stream) -> dict[int, float]:
    """Per-n sequence accuracy (spec §6): #sequences whose every scored prediction is correct, divided by
    #scored sequences of that n.

    correct: [L] bool, argmax prediction == target at each step (any device; computed on CPU).
    Returns {n: accuracy} for every n that has at least one scored sequence, in increasing n.
    """
    correct = correct.detach().to("cpu", torch.bool)
    if correct.shape != stream.targets.shape:
        raise ValueError(f"correct has shape {tuple(correct.shape)}, stream {tuple(stream.targets.shape)}")
    num_seq = len(stream.lengths)
    seq_of_pos = stream.sequence[stream.scored]
    wrong = torch.bincount(seq_of_pos, weights=(~correct[stream.scored]).double(), minlength=num_seq)
    evaluated = torch.bincount(seq_of_pos, minlength=num_seq) > 0
    seq_ok = evaluated & (wrong == 0)

    n_values, n_index = torch.unique(stream.lengths, return_inverse=True)
    n_scored = torch.bincount(n_index[evaluated], minlength=len(n_values))
    n_ok = torch.bincount(n_index[seq_ok], minlength=len(n_values))
    return {
        int(n): int(ok) / int(total)
        for n, ok, total in zip(n_values.tolist(), n_ok.tolist(), n_scored.tolist(), strict=True)
        if total > 0
    }


def wrong_sequences(correct: torch.Tensor, stream: Stream, limit: int = 10) -> dict[int, list[int]]:
    """Which scored sequences are wrong, per n: {n: [position of the sequence within its n block, ...]}
    for every n with at least one wrong sequence, the first ``limit`` positions in stream order.

    The accuracy per n says how many sequences failed; this says which. Position 0 of the first block
    is the first sequence of the test stream, read right after the stacks were emptied.
    """
    correct = correct.detach().to("cpu", torch.bool)
    num_seq = len(stream.lengths)
    seq_of_pos = stream.sequence[stream.scored]
    wrong = torch.bincount(seq_of_pos, weights=(~correct[stream.scored]).double(), minlength=num_seq) > 0
    lengths = stream.lengths.tolist()
    block_start: dict[int, int] = {}
    out: dict[int, list[int]] = {}
    for index, n in enumerate(lengths):
        block_start.setdefault(n, index)
        if wrong[index]:
            found = out.setdefault(n, [])
            if len(found) < limit:
                found.append(index - block_start[n])
    return out


# The name starts with "test": keep pytest from collecting it when a test module imports it.
test_stream.__test__ = False
