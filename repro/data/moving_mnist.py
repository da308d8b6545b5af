"""The Moving MNIST generator ("bouncing MNIST"), by the rule of the official handler (``data_handler.py``,
``BouncingMNISTDataHandler``, mansimov/unsupervised-videos @ 29407a8; specs/video_lstm.md §2.1), shared by
the papers that build videos from it (Unsupervised Video LSTMs: ``papers/video_lstm/data.py``; LSTM-E's
captioned videos: ``papers/lstm_e/data.py``).

A trajectory starts at a normalised position y, x ~ U[0, 1) with direction θ ~ U[0, 2π), velocity
(v_y, v_x) = (sin θ, cos θ) (y grows downwards: rows), and for each frame i = 0..T-1, in this order:

    y += 0.1 · v_y;  x += 0.1 · v_x                              move (a fixed step: 0.1 of the range)
    x <= 0: x = 0, v_x = -v_x;  x >= 1: x = 1, v_x = -v_x        bounce (then the same for y)
    top_i = int(36 · y);  left_i = int(36 · x)                    record (36 = 64 - 28; truncation)

Frame i is zeros with each digit pasted at (top_i, left_i) by a pixel-wise **max**; the digits of a stream
walk a shuffled permutation of the digit pool, reshuffled when it is exhausted (``digit_stream``).
"""

from __future__ import annotations

import numpy as np

CANVAS, DIGIT = 64, 28
FREE = CANVAS - DIGIT  # 36: the range of a digit's top-left corner
FRAMES, STEP = 20, 0.1


def trajectories(
    y: np.ndarray, x: np.ndarray, theta: np.ndarray, frames: int = FRAMES, step: float = STEP
) -> tuple[np.ndarray, np.ndarray]:
    """Each trajectory's top and left corner in every frame (n × frames, int): move, bounce, record."""
    y, x = np.array(y, dtype=np.float64), np.array(x, dtype=np.float64)
    v_y, v_x = np.sin(theta), np.cos(theta)
    tops = np.empty((len(y), frames), dtype=np.int64)
    lefts = np.empty((len(y), frames), dtype=np.int64)
    for i in range(frames):
        y += v_y * step
        x += v_x * step
        for pos, vel in ((x, v_x), (y, v_y)):  # the handler's order: x, then y; low edge, then high
            low = pos <= 0
            pos[low], vel[low] = 0.0, -vel[low]
            high = pos >= 1
            pos[high], vel[high] = 1.0, -vel[high]
        tops[:, i] = (FREE * y).astype(np.int32)
        lefts[:, i] = (FREE * x).astype(np.int32)
    return tops, lefts


def random_trajectories(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """n trajectories drawn as the handler draws them: all y, then all x, then all θ."""
    y, x = rng.random(n), rng.random(n)
    theta = rng.random(n) * 2 * np.pi
    return trajectories(y, x, theta)


def render(digits: np.ndarray, tops: np.ndarray, lefts: np.ndarray) -> np.ndarray:
    """Sequences (n × frames × 64 × 64 uint8) of ``digits`` (n × k × 28 × 28: k digits a sequence) at the
    corners ``tops``/``lefts`` (n × k × frames), pasted by pixel-wise max."""
    n, k, frames = tops.shape
    out = np.zeros((n, frames, CANVAS, CANVAS), dtype=np.uint8)
    seq = np.arange(n)[:, None, None]
    span = np.arange(DIGIT)
    for d in range(k):
        for i in range(frames):
            rows = tops[:, d, i, None, None] + span[None, :, None]
            cols = lefts[:, d, i, None, None] + span[None, None, :]
            out[seq, i, rows, cols] = np.maximum(out[seq, i, rows, cols], digits[:, d])
    return out


def digit_stream(seed: int, pool: int, start: int, count: int) -> np.ndarray:
    """Positions start..start+count-1 of the digit stream: position p is entry p mod pool of permutation
    p // pool, drawn from (seed, p // pool) (the handler's shuffled index, reshuffled when exhausted)."""
    out, p = [], start
    while p < start + count:
        block = p // pool
        perm = np.random.default_rng([seed, 1, block]).permutation(pool)
        stop = min(start + count, (block + 1) * pool)
        out.append(perm[p - block * pool : stop - block * pool])
        p = stop
    return np.concatenate(out) if out else np.zeros(0, dtype=np.int64)


def sequences(images: np.ndarray, digit_idx: np.ndarray, tops, lefts, digits: int = 2) -> np.ndarray:
    """Render the sequences whose digits are ``images[digit_idx]`` (2 per sequence, in stream order) on the
    trajectories ``tops``/``lefts`` (2 per sequence, in draw order: trajectory 2j + d is digit d of j)."""
    n = len(digit_idx) // digits
    shape = (n, digits, -1)
    return render(
        images[digit_idx].reshape(n, digits, DIGIT, DIGIT), tops.reshape(shape), lefts.reshape(shape)
    )
