"""Adaptive local steps (`training.adaptiveSteps`): size a round's local steps to this worker's speed.

A worker measures the seconds each local step takes and keeps their exponential moving average
(decay `DECAY`, the first step of the process left out: it pays one-off costs such as the
allocator's first requests, lazy module initialisation and, on CUDA, kernel loading). It then runs

    H_r = clamp(floor(budget / EMA), 1, syncEvery),    budget = roundDeadlineSeconds / 2

local steps, so its training fits in half the root's round deadline and the other half is left to
the exchange (update up, aggregation, model down). A fast worker keeps `syncEvery`; a slow one, or
one slowed down by a noisy neighbour, does fewer steps and still reports in time. The worker
re-plans after every step: the steps already run plus as many more as fit in what is left of the
budget at the newest estimate (`StepClock.steps`). So its very first round is sized too once the
warm-up step is behind it, one slow step costs only its own time, and a worker that slows down
mid-round stops early.

The update then carries H_r batches, and the worker reports the samples it really used
(H_r x batch size): the aggregators weight updates by samples, so a worker that did fewer steps
counts for less in the mean.

Pure: no clock of its own; the caller passes the measured seconds in.
"""

from __future__ import annotations

import math

from swarm_contract.spec import Training

#: Weight of the old estimate in the moving average of seconds per step: 0.8 follows a change of
#: speed within about five steps while one slow step (a GC pause) moves the estimate by only 20%.
DECAY = 0.8
#: Steps at the start of the process whose time is not measured (warm-up).
WARMUP_STEPS = 1


def steps_within(
    seconds_per_step: float | None, budget_seconds: float, max_steps: int, *, used: float = 0.0, done: int = 0
) -> int:
    """A round's steps in all: `done` already run (in `used` of the budget's seconds) plus as many
    more of `seconds_per_step` as fit in the rest of `budget_seconds`; in [1, max_steps], and
    `max_steps` while the speed is unknown (None) or too small to measure."""
    if max_steps < 1:
        raise ValueError(f"steps_within: max_steps must be at least 1, got {max_steps}")
    if seconds_per_step is None or seconds_per_step <= 0:
        return max_steps
    # The small epsilon keeps an exact fit (budget 0.3, 0.1 s per step) from flooring to one less.
    more = math.floor(max(0.0, budget_seconds - used) / seconds_per_step + 1e-9)
    return max(1, min(max_steps, done + more))


class StepClock:
    """The moving average of one worker's seconds per local step, and the steps that fit its budget."""

    def __init__(self, budget_seconds: float, max_steps: int, decay: float = DECAY) -> None:
        if budget_seconds <= 0:
            raise ValueError(f"StepClock: the budget must be positive, got {budget_seconds} s")
        if not 0 <= decay < 1:
            raise ValueError(f"StepClock: decay must be in [0, 1), got {decay}")
        if max_steps < 1:
            raise ValueError(f"StepClock: max_steps must be at least 1, got {max_steps}")
        self.budget_seconds = budget_seconds
        self.max_steps = max_steps
        self.decay = decay
        self.seen = 0
        #: The EMA of seconds per step; None until a step after the warm-up was measured.
        self.seconds_per_step: float | None = None

    @classmethod
    def for_training(cls, training: Training) -> StepClock:
        """The clock of the spec's training section: half the round deadline, at most syncEvery."""
        return cls(training.round_deadline_seconds / 2, training.sync_every)

    def observe(self, seconds: float) -> bool:
        """Record one step's duration; False for the first `WARMUP_STEPS` of the process (not
        counted, neither in the estimate nor in the round's budget)."""
        self.seen += 1
        if self.seen <= WARMUP_STEPS:
            return False
        if self.seconds_per_step is None:
            self.seconds_per_step = seconds
        else:
            self.seconds_per_step = self.decay * self.seconds_per_step + (1 - self.decay) * seconds
        return True

    def steps(self, used: float = 0.0, done: int = 0) -> int:
        """A round's steps in all, from the current estimate, when `done` steps took `used` s of
        its budget (both 0 at the start of a round)."""
        return steps_within(self.seconds_per_step, self.budget_seconds, self.max_steps, used=used, done=done)
