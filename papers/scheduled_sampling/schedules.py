"""The decay schedules of Scheduled Sampling (Bengio et al. 2015, spec §3): ε_i, the probability of feeding
the true previous word at training update i (i counts minibatch updates from 0, spec pitfall 3).

    linear            ε_i = max(ε, k − c·i)       0 ≤ ε < 1 the floor, k the offset (usually 1), c > 0 slope
    exponential       ε_i = kⁱ                    0 < k < 1
    inverse sigmoid   ε_i = k / (k + exp(i/k))    k ≥ 1

and the suite's ``constant`` schedule, ε_i = ε for every i, which gives the paper's three comparisons: the
teacher-forced baseline (ε = 1), Always Sampling (ε = 0) and Uniform Scheduled Sampling (a constant mixing
probability; the paper's constant is [unverified], the configs use 0.5).

The linear schedule is capped at 1 (spec §8: ε_0 = k, capped at 1), as a probability must be; the other two
start at or below 1 by their constraints on k.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

SCHEDULES = ("constant", "linear", "exponential", "inverse_sigmoid")


def linear(i: int, k: float, c: float, epsilon: float) -> float:
    return min(1.0, max(epsilon, k - c * i))


def exponential(i: int, k: float) -> float:
    return k**i


def inverse_sigmoid(i: int, k: float) -> float:
    if i / k > 700:  # exp would overflow a float; ε is below k·e⁻⁷⁰⁰ (< 1e-290 for any k a config holds)
        return 0.0
    return k / (k + math.exp(i / k))


@dataclass(frozen=True)
class Schedule:
    """ε_i of one schedule: ``schedule(i)``. Which constants matter depends on the schedule: ``k`` (linear,
    exponential, inverse sigmoid), ``c`` (linear) and ``epsilon`` (linear: the floor; constant: ε itself)."""

    name: str
    k: float = 1.0
    c: float = 0.0
    epsilon: float = 0.0

    def __post_init__(self):
        if self.name not in SCHEDULES:
            raise ValueError(f"model.schedule must be one of {', '.join(SCHEDULES)}, not {self.name!r}")
        if self.name == "constant" and not 0 <= self.epsilon <= 1:
            raise ValueError(f"a constant schedule's model.epsilon must be in [0, 1], not {self.epsilon}")
        if self.name == "linear" and not (0 <= self.epsilon < 1 and self.c > 0):
            raise ValueError(f"linear needs 0 <= model.epsilon < 1 and model.c > 0: {self.epsilon}, {self.c}")
        if self.name == "exponential" and not 0 < self.k < 1:
            raise ValueError(f"exponential needs 0 < model.k < 1, not {self.k}")
        if self.name == "inverse_sigmoid" and self.k < 1:
            raise ValueError(f"inverse sigmoid needs model.k >= 1, not {self.k}")

    def __call__(self, i: int) -> float:
        if self.name == "linear":
            return linear(i, self.k, self.c, self.epsilon)
        if self.name == "exponential":
            return exponential(i, self.k)
        if self.name == "inverse_sigmoid":
            return inverse_sigmoid(i, self.k)
        return self.epsilon
