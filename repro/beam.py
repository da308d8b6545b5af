"""Free-running decoding of a word-by-word caption model: greedy and beam search, batched over inputs (Show,
Attend and Tell's decoder, which Scheduled Sampling subclasses, and LSTM-E).

A model is given to both as one function, ``step(words, state, *static) -> (log_probs, state, trace)``:

* ``words`` (R): the word each row fed at this step (−1 at the first step: no word yet);
* ``state``: a tuple of tensors whose first dimension is the R rows (LSTM h and c), reordered with the rows;
* ``static``: per-input tensors the step reads but never changes (an image's annotation vectors, a video's
  embedding), first dimension the rows too; beam search repeats them k times and never reorders them (a
  hypothesis only ever moves within its own input's k rows);
* ``log_probs`` (R × V): the log-probabilities of the next word;
* ``trace``: None, or a tensor (R × ...) the decoder records at every step for the chosen hypotheses (an
  attention map), returned stacked as ``Decoded.trace`` (B × T × ...).

Word ``eos`` ends a caption. Beam search keeps k hypotheses per input (rows input·k .. input·k + k − 1); each
step extends each by every word and keeps the k best sums of log-probabilities of the input. A hypothesis that
has written ``eos`` stays in its beam with its score frozen (it extends only by ``eos``, at no cost), so it
competes with the live ones until the end. No length normalisation. With k = 1 it makes the greedy choice at
every step (tested against :func:`greedy`, which is written separately).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch

Tensors = tuple[torch.Tensor, ...]
Step = Callable[..., tuple[torch.Tensor, Tensors, torch.Tensor | None]]


class Decoded(NamedTuple):
    words: torch.Tensor  # B × T, eos after a caption's end
    scores: torch.Tensor  # B: log p of the caption (its eos included when it has one)
    trace: torch.Tensor | None  # B × T × ...: what the step recorded for each word (None: nothing)


@torch.no_grad()
def greedy(step: Step, state: Tensors, max_length: int, eos: int = 0, static: Tensors = ()) -> Decoded:
    """The most likely word at each step, fed back, until every row wrote ``eos`` or ``max_length`` words."""
    rows = len(state[0])
    device = state[0].device
    words = torch.full((rows,), -1, dtype=torch.int64, device=device)
    finished = torch.zeros(rows, dtype=torch.bool, device=device)
    scores = torch.zeros(rows, device=device)
    chosen, traces = [], []
    for _ in range(max_length):
        log_probs, state, trace = step(words, state, *static)
        words = torch.where(finished, eos, log_probs.argmax(-1))
        scores = scores + torch.where(finished, 0.0, log_probs.gather(1, words[:, None]).squeeze(1))
        chosen.append(words)
        traces.append(trace)
        finished = finished | (words == eos)
        if finished.all():
            break
    return Decoded(torch.stack(chosen, 1), scores, None if traces[0] is None else torch.stack(traces, 1))


@torch.no_grad()
def beam_search(
    step: Step, state: Tensors, beam_size: int, max_length: int, eos: int = 0, static: Tensors = ()
) -> Decoded:
    """The best caption that beam search of width ``beam_size`` finds for every input (row of ``state``)."""
    batch = len(state[0])
    k = beam_size
    device = state[0].device
    state = tuple(s.repeat_interleave(k, dim=0) for s in state)
    static = tuple(s.repeat_interleave(k, dim=0) for s in static)
    words = torch.full((batch * k,), -1, dtype=torch.int64, device=device)
    scores = torch.full((batch, k), float("-inf"), device=device)
    scores[:, 0] = 0.0  # the k rows start identical: only one may be extended at the first step
    finished = torch.zeros(batch * k, dtype=torch.bool, device=device)
    history = torch.zeros(batch * k, 0, dtype=torch.int64, device=device)
    traces = None
    for _ in range(max_length):
        log_probs, state, trace = step(words, state, *static)
        vocab = log_probs.shape[1]
        only_eos = torch.full_like(log_probs[0], float("-inf"))
        only_eos[eos] = 0.0
        log_probs = torch.where(finished[:, None], only_eos, log_probs)
        scores, best = (scores.view(-1, 1) + log_probs).view(batch, k * vocab).topk(k, dim=1)
        origin = (best // vocab + torch.arange(batch, device=device)[:, None] * k).view(-1)
        words = (best % vocab).view(-1)
        state = tuple(s[origin] for s in state)
        history = torch.cat([history[origin], words[:, None]], dim=1)
        if trace is not None:
            traces = (
                trace[origin, None] if traces is None else torch.cat([traces[origin], trace[origin, None]], 1)
            )
        finished = finished[origin] | (words == eos)
        if finished.all():
            break
    top = torch.arange(batch, device=device) * k  # topk sorts: each input's first row is its best
    return Decoded(history[top], scores[:, 0], None if traces is None else traces[top])
