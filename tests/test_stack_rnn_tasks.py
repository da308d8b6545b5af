"""Tests for papers/stack_rnn/tasks.py against /work/shared/specs/stack_rnn.md §2.2-2.4 and §6."""

import numpy as np
import pytest
import torch

from papers.stack_rnn import tasks

ALL_TASKS = ["anbn", "anbncn", "anbncndn", "anb2n", "anbmcnm", "memorization", "addition"]


def rng(seed=0):
    return np.random.default_rng(seed)


# -----------------------------------------------------------------------------
# Registry


def test_registry_names_and_properties():
    assert sorted(tasks.TASKS) == sorted(ALL_TASKS)
    expected = {  # name: (symbols, supervised, first_input)
        "anbn": ("ab", False, 1),
        "anbncn": ("abc", False, 2),
        "anbncndn": ("abcd", False, 3),
        "anb2n": ("ab", False, 1),
        "anbmcnm": ("abc", False, 2),
        "memorization": ("abc", False, 2),
        "addition": ("+=.01", True, 4),
    }
    for name, (symbols, supervised, first) in expected.items():
        task = tasks.get_task(name)
        assert task.name == name
        assert task.symbols == symbols
        assert task.vocab_size == len(symbols)
        assert task.supervised is supervised
        assert task.first_input == first


def test_get_task_unknown_name_lists_valid_names():
    with pytest.raises(ValueError, match="anbn.*memorization"):
        tasks.get_task("anbkcnk")


# -----------------------------------------------------------------------------
# Generators (spec §2.2)


@pytest.mark.parametrize(
    "name, n, expected",
    [
        ("anbn", 1, "ab"),
        ("anbn", 3, "aaabbb"),
        ("anbncn", 2, "aabbcc"),
        ("anbncndn", 3, "aaabbbcccddd"),
        ("anb2n", 2, "aabbbb"),
        ("anb2n", 4, "aaaabbbbbbbb"),
    ],
)
def test_counting_generators_exact(name, n, expected):
    task = tasks.get_task(name)
    assert task.decode(task.generate(rng(), n)) == expected


def test_anb2n_consumes_one_draw():
    # The code draws the repeated letter even when nchar = 2 (spec §2.2).
    a, b = rng(5), rng(5)
    tasks.get_task("anb2n").generate(a, 7)
    b.integers(1 << 31)  # one full-range draw, like C rand()
    assert a.integers(1 << 30) == b.integers(1 << 30)


def test_anbn_consumes_no_draw():
    a, b = rng(5), rng(5)
    tasks.get_task("anbncn").generate(a, 7)
    assert a.integers(1 << 30) == b.integers(1 << 30)


def test_anbmcnm_rule():
    task = tasks.get_task("anbmcnm")
    r = rng(1)
    for total in range(2, 31):
        ms = set()
        for _ in range(100 if total <= 6 else 5):
            seq = task.generate(r, total)
            n, m, c = seq.count(0), seq.count(1), seq.count(2)
            assert n >= 1 and m >= 1
            assert n + m == total
            assert c == total
            assert seq == [0] * n + [1] * m + [2] * c
            ms.add(m)
        if total <= 6:  # m uniform on {1..T-1}: every value shows up in 100 draws
            assert ms == set(range(1, total))
    with pytest.raises(ValueError):
        task.generate(r, 1)


def test_memorization_rule():
    task = tasks.get_task("memorization")
    r = rng(2)
    seen = set()
    for n in range(1, 25):
        seq = task.generate(r, n)
        assert len(seq) == 2 * n + 1
        w, sep, back = seq[:n], seq[n], seq[n + 1 :]
        assert sep == 0
        assert set(w) <= {1, 2}
        assert back == w[::-1]
        seen |= set(w)
    assert seen == {1, 2}


def _parse_addition(task, seq):
    text = task.decode(seq)
    assert text.endswith(".") and text.count("+") == 1 and text.count("=") == 1 and text.count(".") == 1
    a, rest = text[:-1].split("+")
    b, s = rest.split("=")
    return a, b, s


def test_addition_rule():
    task = tasks.get_task("addition")
    r = rng(3)
    first_lengths = set()
    for total in range(0, 40):
        for _ in range(30):
            a, b, s = _parse_addition(task, task.generate(r, total))
            for operand in (a, b):
                assert set(operand) <= {"0", "1"}
                # Most significant digit is 1, unless the operand is empty (written "0").
                assert operand == "0" or operand[0] == "1"
            len_a = 0 if a == "0" else len(a)
            len_b = 0 if b == "0" else len(b)
            assert len_a + len_b == total
            # The sum is written least significant digit first, with no leading zeros.
            assert int(s[::-1], 2) == int(a, 2) + int(b, 2)
            assert s[::-1] == bin(int(a, 2) + int(b, 2))[2:]
            if total == 5:
                first_lengths.add(len_a)
    assert first_lengths == set(range(0, 6))  # l1 uniform on {0..T}
    # T = 0 and 1, which train_add.cpp's nmin = 0 draws in every epoch: task.h writes an empty operand "0".
    assert task.decode(task.generate(r, 0)) == "0+0=0."
    assert {task.decode(task.generate(r, 1)) for _ in range(50)} == {"1+0=1.", "0+1=1."}


# -----------------------------------------------------------------------------
# Scored positions (spec §2.3), hand-written golden examples


@pytest.mark.parametrize(
    "name, text, expected",
    [
        # trigger = first non-'a' (not scored); the rest plus the next sequence's first char (len(seq))
        ("anbn", "aaabbb", [4, 5, 6]),
        ("anbn", "ab", [2]),
        ("anbncn", "aabbcc", [3, 4, 5, 6]),
        ("anbncndn", "aabbccdd", [3, 4, 5, 6, 7, 8]),
        ("anb2n", "aabbbb", [3, 4, 5, 6]),
        # trigger = first 'c'; the remaining c's plus the next 'a'
        ("anbmcnm", "aabccc", [4, 5, 6]),
        ("anbmcnm", "abbccc", [4, 5, 6]),
        ("anbmcnm", "abcc", [3, 4]),
        # trigger = 'a'; the n reversed symbols; the next first symbol is random, not scored
        ("memorization", "bcacb", [3, 4]),
        ("memorization", "cac", [2]),
        # every char after '=': result digits and '.'
        ("addition", "1+11=001.", [5, 6, 7, 8]),
        ("addition", "0+1=1.", [4, 5]),
    ],
)
def test_scored_targets_golden(name, text, expected):
    task = tasks.get_task(name)
    assert task.scored_targets(task.encode(text)) == expected


# -----------------------------------------------------------------------------
# Streams


def test_make_stream_golden_anbn():
    task = tasks.get_task("anbn")
    s = tasks.make_stream(task, [2, 3], rng())
    assert task.decode(s.targets) == "aabbaaabbb"
    assert task.decode(s.inputs) == "baabbaaabb"  # first input = last letter 'b'
    assert s.scored.nonzero().flatten().tolist() == [3, 4]
    assert s.sequence.tolist() == [-1, -1, -1, 0, 0, -1, -1, -1, -1, -1]
    assert s.lengths.tolist() == [2, 3]
    assert s.starts.tolist() == [0, 4]
    # The last sequence's next-first-char is past the end: it is not scored at all.
    assert s.evaluated.tolist() == [True, False]
    for t in (s.inputs, s.targets, s.sequence, s.lengths, s.starts):
        assert t.dtype == torch.long
    assert s.scored.dtype == torch.bool


def test_make_stream_first_input_and_last_sequence_of_memorization():
    task = tasks.get_task("memorization")
    s = tasks.make_stream(task, [1, 2], rng(), first_input=0)
    assert s.inputs[0].item() == 0
    assert s.inputs[1:].tolist() == s.targets[:-1].tolist()
    # "xax" then "yzazy": scored 2 (seq 0) and 6, 7 (seq 1, nothing past the end, so it is kept).
    assert s.scored.nonzero().flatten().tolist() == [2, 6, 7]
    assert s.sequence[[2, 6, 7]].tolist() == [0, 1, 1]
    assert s.evaluated.tolist() == [True, True]


@pytest.mark.parametrize("name", ALL_TASKS)
def test_make_stream_matches_generated_sequences(name):
    task = tasks.get_task(name)
    ns = [2, 5, 3, 4]
    s = tasks.make_stream(task, ns, rng(7))
    r = rng(7)
    seqs = [task.generate(r, n) for n in ns]
    assert s.targets.tolist() == sum(seqs, [])
    assert s.starts.tolist() == np.cumsum([0] + [len(q) for q in seqs[:-1]]).tolist()
    for i, q in enumerate(seqs[:-1]):
        expected = [int(s.starts[i]) + k for k in task.scored_targets(q)]
        assert (s.sequence == i).nonzero().flatten().tolist() == expected
    assert s.scored.tolist() == (s.sequence >= 0).tolist()


# -----------------------------------------------------------------------------
# Curriculum and sampling (spec §2.4, §2.2)


def test_curriculum_nmax():
    got = [tasks.curriculum_nmax(e, 15) for e in range(21)]
    assert got == [3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 15, 15, 15, 15, 15, 15, 15, 15]
    assert [tasks.curriculum_nmax(e, 2) for e in range(3)] == [3, 3, 3]


def test_sample_ns_range():
    ns = tasks.sample_ns(rng(), 2000, 2, 6)
    assert len(ns) == 2000
    assert set(ns.tolist()) == {2, 3, 4, 5}
    assert tasks.sample_ns(rng(), 50, 2, 3).tolist() == [2] * 50  # epoch 0: n = 2 only
    # train_add special case: T = nmin if nmax <= nmin + 1
    assert tasks.sample_ns(rng(), 5, 20, 21).tolist() == [20] * 5
    assert tasks.sample_ns(rng(), 5, 20, 20).tolist() == [20] * 5


# -----------------------------------------------------------------------------
# Test protocol (spec §2.4)


@pytest.mark.parametrize("name", ALL_TASKS)
def test_test_stream_scores_199_per_n(name):
    task = tasks.get_task(name)
    n_values = [2, 3, 7]
    s = tasks.test_stream(task, n_values)
    assert s.lengths.tolist() == [2] * 200 + [3] * 200 + [7] * 200
    assert s.inputs[0].item() == task.first_input
    assert s.inputs[1:].tolist() == s.targets[:-1].tolist()  # one continuous stream
    evaluated = s.evaluated
    for block in range(len(n_values)):
        ids = torch.arange(200 * block, 200 * (block + 1))
        assert evaluated[ids].tolist() == [True] * 199 + [False]
        assert not (s.sequence == ids[-1]).any()
    assert int(evaluated.sum()) == 3 * 199
    assert s.scored.tolist() == (s.sequence >= 0).tolist()
    # The next block's first character is not credited to the (unscored) last sequence of a block.
    assert not s.scored[s.starts[200]].item()
    assert not s.scored[s.starts[400]].item()


def test_test_stream_deterministic_per_seed():
    task = tasks.get_task("memorization")
    a = tasks.test_stream(task, [4], per_length=20)
    b = tasks.test_stream(task, [4], per_length=20)
    c = tasks.test_stream(task, [4], per_length=20, seed=11)
    assert a.targets.tolist() == b.targets.tolist()
    assert a.targets.tolist() != c.targets.tolist()


def test_full_protocol_size():
    # The code's protocol: n = 2..59, 200 sequences each (the largest stream, ~1.4M chars).
    s = tasks.test_stream(tasks.get_task("anbncndn"), range(2, 60))
    assert len(s) == 200 * 4 * sum(range(2, 60))
    assert int(s.evaluated.sum()) == 58 * 199
    # Each scored a^n b^n c^n d^n sequence scores 3n - 1 chars after the trigger plus the next 'a'.
    assert int(s.scored.sum()) == 199 * sum(3 * n for n in range(2, 60))
    acc = tasks.sequence_accuracy(s.targets == s.targets, s)
    assert acc == {n: 1.0 for n in range(2, 60)}


# -----------------------------------------------------------------------------
# Sequence accuracy (spec §6)


def test_sequence_accuracy_golden():
    task = tasks.get_task("anbn")
    # aabb aabb aaabbb aaabbb aaabbb; starts 0, 4, 8, 14, 20; L = 26
    s = tasks.make_stream(task, [2, 2, 3, 3, 3], rng())
    assert s.scored.nonzero().flatten().tolist() == [3, 4, 7, 8, 12, 13, 14, 18, 19, 20]
    assert s.evaluated.tolist() == [True, True, True, True, False]

    def acc_with_errors(*positions):
        correct = torch.ones(len(s), dtype=torch.bool)
        correct[list(positions)] = False
        return tasks.sequence_accuracy(correct, s)

    assert acc_with_errors() == {2: 1.0, 3: 1.0}
    assert acc_with_errors(7) == {2: 0.5, 3: 1.0}  # one scored char of sequence 1 fails it alone
    assert acc_with_errors(14) == {2: 1.0, 3: 0.5}  # next first char, credited to sequence 2
    assert acc_with_errors(7, 8) == {2: 0.5, 3: 1.0}
    assert acc_with_errors(3, 20) == {2: 0.5, 3: 0.5}
    # Unscored chars: the a's, the triggers (2, 6, 11, 17) and the unevaluated last sequence.
    assert acc_with_errors(0, 1, 2, 5, 6, 9, 10, 11, 16, 17, 21, 23, 24, 25) == {2: 1.0, 3: 1.0}
    assert tasks.sequence_accuracy(torch.zeros(len(s), dtype=torch.bool), s) == {2: 0.0, 3: 0.0}


def test_sequence_accuracy_shape_mismatch():
    s = tasks.make_stream(tasks.get_task("anbn"), [2, 2], rng())
    with pytest.raises(ValueError):
        tasks.sequence_accuracy(torch.ones(len(s) - 1, dtype=torch.bool), s)


def test_wrong_sequences_names_each_failed_sequence_by_its_place_in_its_block():
    """The record says which sequences of a length failed, not only how many: the position of each in its
    n block (0 = the block's first sequence; the first block's 0 opens the test stream)."""
    task = tasks.get_task("anbn")
    s = tasks.test_stream(task, [2, 3], per_length=5)
    correct = torch.ones(len(s), dtype=torch.bool)
    assert tasks.wrong_sequences(correct, s) == {}
    first = int(s.scored.nonzero()[0])  # the first scored character of the stream: sequence 0 of n = 2
    correct[first] = False
    # sequence 2 of the n = 3 block, through the next sequence's first 'a' credited to it
    third = int(s.starts[5 + 3])
    correct[third] = False
    # a character of the unscored last sequence of a block changes nothing
    correct[int(s.starts[4]) + 3] = False
    assert tasks.wrong_sequences(correct, s) == {2: [0], 3: [2]}
    assert tasks.sequence_accuracy(correct, s) == {2: 0.75, 3: 0.75}
    assert tasks.wrong_sequences(torch.zeros(len(s), dtype=torch.bool), s, limit=3) == {
        2: [0, 1, 2],
        3: [0, 1, 2],
    }
