"""Streams of generated sequences for training, validation and test (spec §2.1, §2.4).

Training: ``batch_size`` parallel streams (a fixed *global* number: under DDP each rank takes every
world-size-th stream), each ``sequences_per_stream`` sequences long per epoch, with n drawn from the
curriculum of spec §2.4 and the stacks emptied every ``reset_every`` sequences and at every epoch start.
Streams are cut to a common length and served as consecutive windows of ``bptt`` characters, so the
module carries its state from one batch to the next. Every epoch's data comes from its own generator,
seeded by (seed, epoch, stream), which makes a resumed run see exactly the data of an uninterrupted one.

Validation: one stream of ``validation_sequences`` sequences, n uniform on
{validation_nmin..validation_nmax-1} (by default 2..max(N, 20)-1, beyond the curriculum), fresh each epoch.
Test: the code's protocol on one continuous stream, n = 2..61 in order, 200 sequences each, fixed seed;
the stacks are emptied before its first step and, for binary addition (train_add.cpp), every
``test_reset_every`` sequences of each n block.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset

from papers.stack_rnn.tasks import Stream, curriculum_nmax, get_task, make_stream, sample_ns, test_stream
from repro.data.modules import RunAwareDataModule


def windows(stream_batch: dict[str, torch.Tensor], length: int, keep_tail: bool):
    """Consecutive [B, length] slices of every tensor in ``stream_batch``; the shorter last one is kept only
    with ``keep_tail`` (evaluation must see every character; training windows all have ``bptt`` steps)."""
    total = stream_batch["inputs"].shape[1]
    stop = total if keep_tail else total - length + 1
    for start in range(0, max(stop, 0), length):
        yield {k: v[:, start : start + length] for k, v in stream_batch.items()}


def stack_streams(
    streams: list[Stream],
    reset_every: int,
    supervised: bool,
    training: bool = True,
    empty_after_first_step: bool | None = None,
) -> dict[str, torch.Tensor]:
    """Batch streams cut to their common length; marks the steps where the stacks are emptied.

    The steps follow the code's training loop (train_toy.cpp, train_add.cpp): ``emptyStacks()`` before
    sequence iseq when iseq % nreset == 0 empties the stacks that the *next* forward step reads, and that
    step is the one that predicts the sequence's first character (its input is the previous sequence's
    last character). At the start of an epoch (iseq = 0) the code also empties the stacks again right
    after the first step and does not back-propagate that step, so the step that reads the first
    character sees empty stacks too, and step 0 makes no update (``training``: its loss mask is 0).
    Validation (``training=False``) empties the stacks before step 0, and again before step 1 only with
    ``empty_after_first_step`` (train_add.cpp's validation does, train_toy.cpp's does not); the default
    is ``training``.
    """
    if empty_after_first_step is None:
        empty_after_first_step = training
    length = min(len(s) for s in streams)
    resets = torch.zeros(len(streams), length, dtype=torch.bool)
    resets[:, 0] = True
    if empty_after_first_step and length > 1:
        resets[:, 1] = True
    for row, stream in enumerate(streams):
        # Sequence k * reset_every: empty before the step whose target is its first character.
        steps = stream.starts[reset_every::reset_every]
        resets[row, steps[steps < length]] = True
    stacked = {
        "inputs": torch.stack([s.inputs[:length] for s in streams]),
        "targets": torch.stack([s.targets[:length] for s in streams]),
        "resets": resets,
    }
    if supervised:
        stacked["loss_mask"] = torch.stack([s.scored[:length] for s in streams]).float()
    else:
        stacked["loss_mask"] = torch.ones(len(streams), length)
    if training:
        stacked["loss_mask"][:, 0] = 0.0  # the epoch's first step makes no update [code]
    return stacked


def periodic_resets(stream: Stream, block: int, every: int | None) -> torch.Tensor:
    """[L] bool: the steps of a test stream before which the stacks are emptied. Always step 0 (the code
    empties them once before its test); with ``every``, also before each sequence whose place in its block
    of ``block`` sequences (one n) is a multiple of ``every``: train_add.cpp's test empties them before
    sequence iseq when iseq % nreset == 0, iseq counting from 0 in each n block. As in training, the step
    is the one that predicts the sequence's first character."""
    resets = torch.zeros(len(stream), dtype=torch.bool)
    resets[0] = True
    if every:
        place = torch.arange(len(stream.lengths)) % block
        resets[stream.starts[place % every == 0]] = True
    return resets


class _Windows(IterableDataset):
    """Re-creates its batch on every iteration from a builder, so each epoch gets its own data."""

    def __init__(self, build, length: int, keep_tail: bool):
        self.build, self.length, self.keep_tail = build, length, keep_tail

    def __iter__(self):
        yield from windows(self.build(), self.length, self.keep_tail)


class _Whole(IterableDataset):
    """One batch per epoch: the whole of what ``build`` makes (each epoch its own data)."""

    def __init__(self, build):
        self.build = build

    def __iter__(self):
        yield self.build()


class StackTaskData(RunAwareDataModule):
    """Generated data for one Stack-RNN task.

    Args:
        task: generator name (see ``papers.stack_rnn.tasks.TASKS``).
        nmax: N of the curriculum; training n < N (the code's ``-nmax``).
        batch_size: global number of parallel training streams (split evenly over DDP ranks).
        sequences_per_stream: sequences in each stream per epoch.
        reset_every: empty the stacks every this many sequences (1000; 100 memorization; 10 addition).
        train_nmin: smallest training n (2, train_toy.cpp's nmin; 0 for addition: train_add.cpp sets nmin
            = 0 in its epoch loop, so its epoch 0 trains on T = 0, 1, 2).
        bptt: truncated-BPTT window in characters (50).
        validation_sequences: sequences in the validation stream (1000).
        validation_nmin / validation_nmax: n range of validation (None: 2 and max(N, 20)).
        validation_empty_after_first_step: empty the stacks again right after validation's first step, as
            train_add.cpp does (train_toy.cpp empties them once, before it).
        test_lengths: [first, last] n of the test stream (2..61: the code's 2..59 plus two so that 60
            lengths give the paper's k/60).
        test_per_length: sequences per n in the test stream (200; the code scores 199).
        test_reset_every: also empty the stacks before every this-many-th sequence of each n block of the
            test stream (train_add.cpp: its nreset, 10); None: only before the first step (train_toy.cpp).
        test_seed: generator seed of the test stream (the code uses srand(10)).
        window: characters per batch at validation and test (no gradient, so long windows are fine).
        seed: run seed; the harness sets it to the seed of the run.
        protocol: ``batched`` (training served as windows of ``bptt`` characters) or ``online`` (the
            code's: one stream, ``batch_size`` 1, served whole each epoch; the model's online kernel
            back-propagates ``bptt`` steps per character).
    """

    def __init__(
        self,
        task: str = "anbn",
        nmax: int = 15,
        batch_size: int = 32,
        sequences_per_stream: int = 250,
        reset_every: int = 1000,
        train_nmin: int = 2,
        bptt: int = 50,
        validation_sequences: int = 1000,
        validation_nmin: int | None = None,
        validation_nmax: int | None = None,
        validation_empty_after_first_step: bool = False,
        test_lengths: tuple[int, int] = (2, 61),
        test_per_length: int = 200,
        test_reset_every: int | None = None,
        test_seed: int = 10,
        window: int = 1000,
        seed: int = 0,
        protocol: str = "batched",
    ):
        super().__init__()
        if protocol not in ("batched", "online"):
            raise ValueError(f"unknown data.protocol '{protocol}'; valid: batched, online")
        if protocol == "online" and batch_size != 1:
            raise ValueError(f"data.protocol=online trains one stream (data.batch_size=1), not {batch_size}")
        self.save_hyperparameters()
        self.task = get_task(task)
        self._test_stream: Stream | None = None

    def train_batches(self, epoch: int) -> dict[str, torch.Tensor]:
        """This rank's streams for ``epoch``, cut to the common length of *all* global streams."""
        hp = self.hparams
        world, rank = self.world
        if hp.batch_size % world:
            raise ValueError(f"data.batch_size={hp.batch_size} streams cannot be split over {world} devices")
        nmax = curriculum_nmax(epoch, hp.nmax)
        streams = []
        for index in range(hp.batch_size):
            rng = np.random.default_rng([hp.seed, epoch, index])
            ns = sample_ns(rng, hp.sequences_per_stream, hp.train_nmin, nmax)
            streams.append(make_stream(self.task, ns, rng))
        batch = stack_streams(streams, hp.reset_every, self.task.supervised)
        return {k: v[rank::world] for k, v in batch.items()}

    def validation_batch(self, epoch: int) -> dict[str, torch.Tensor]:
        hp = self.hparams
        rng = np.random.default_rng([hp.seed, epoch, 1_000_003])  # apart from every training stream
        nmin = hp.validation_nmin or 2
        nmax = hp.validation_nmax or max(hp.nmax, 20)
        stream = make_stream(self.task, sample_ns(rng, hp.validation_sequences, nmin, nmax), rng)
        return stack_streams(
            [stream],
            hp.validation_sequences + 1,
            self.task.supervised,
            training=False,
            empty_after_first_step=hp.validation_empty_after_first_step,
        )

    @property
    def test_stream(self) -> Stream:
        if self._test_stream is None:
            first, last = self.hparams.test_lengths
            self._test_stream = test_stream(
                self.task, range(first, last + 1), self.hparams.test_per_length, self.hparams.test_seed
            )
        return self._test_stream

    def train_dataloader(self):
        if self.hparams.protocol == "online":  # the whole epoch in one batch: the kernel runs it in place
            return DataLoader(_Whole(lambda: self.train_batches(self.epoch)), batch_size=None)
        return DataLoader(
            _Windows(lambda: self.train_batches(self.epoch), self.hparams.bptt, False), batch_size=None
        )

    def val_dataloader(self):
        return DataLoader(
            _Windows(lambda: self.validation_batch(self.epoch), self.hparams.window, True), batch_size=None
        )

    def test_dataloader(self):
        def build():
            s, hp = self.test_stream, self.hparams
            resets = periodic_resets(s, hp.test_per_length, hp.test_reset_every)
            return {"inputs": s.inputs[None], "targets": s.targets[None], "resets": resets[None]}

        return DataLoader(_Windows(build, self.hparams.window, True), batch_size=None)
