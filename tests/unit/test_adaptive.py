"""Adaptive local steps (training/adaptive.py): the steps that fit half the round deadline at the
measured speed, the warm-up step left out of the moving average, and the bounds [1, syncEvery]."""

from __future__ import annotations

import pytest

from swarm_contract.spec import Training
from swarm_worker.training.adaptive import DECAY, StepClock, steps_within


@pytest.mark.parametrize(
    ("seconds_per_step", "budget", "max_steps", "expected"),
    [
        (None, 5.0, 50, 50),
        (0.1, 5.0, 50, 50),
        (0.1, 3.0, 50, 30),
        (0.1, 0.3, 50, 3),
        (0.7, 1.0, 50, 1),
        (3.0, 1.0, 50, 1),
        (0.0, 1.0, 50, 50),
        (1e-6, 1.0, 7, 7),
    ],
    ids=["unknown", "fast-capped", "fits-30", "exact-fit", "floor", "too-slow-still-1", "zero", "cap"],
)
def test_steps_within(seconds_per_step: float | None, budget: float, max_steps: int, expected: int) -> None:
    assert steps_within(seconds_per_step, budget, max_steps) == expected


@pytest.mark.parametrize(
    ("used", "done", "expected"),
    [(0.0, 0, 10), (0.5, 5, 10), (0.8, 3, 5), (1.2, 4, 4), (5.0, 0, 1), (0.05, 9, 10)],
    ids=["start", "on-plan", "slowed", "over-budget-stops", "never-zero", "capped"],
)
def test_steps_within_counts_what_is_left_of_the_budget(used: float, done: int, expected: int) -> None:
    assert steps_within(0.1, 1.0, 10, used=used, done=done) == expected


def test_steps_within_refuses_a_zero_cap() -> None:
    with pytest.raises(ValueError, match="max_steps"):
        steps_within(0.1, 1.0, 0)


def test_the_first_step_is_warm_up_and_not_measured() -> None:
    clock = StepClock(budget_seconds=1.0, max_steps=100)
    assert clock.observe(30.0) is False  # first step: allocator, lazy init, kernel loading
    assert clock.seconds_per_step is None
    assert clock.steps() == 100
    assert clock.observe(0.1) is True
    assert clock.seconds_per_step == pytest.approx(0.1)
    assert clock.steps() == 10
    assert clock.steps(used=0.45, done=4) == 9


def test_the_estimate_is_an_exponential_moving_average() -> None:
    clock = StepClock(budget_seconds=1.0, max_steps=100)
    for seconds in (9.0, 0.1, 0.2):
        clock.observe(seconds)
    assert clock.seconds_per_step == pytest.approx(DECAY * 0.1 + (1 - DECAY) * 0.2)


def test_a_slowdown_shrinks_the_steps_and_a_speedup_restores_them() -> None:
    clock = StepClock(budget_seconds=1.0, max_steps=20)
    clock.observe(1.0)
    clock.observe(0.05)
    assert clock.steps() == 20
    for _ in range(30):
        clock.observe(0.5)
    assert clock.steps() == 2
    for _ in range(60):
        clock.observe(0.01)
    assert clock.steps() == 20


def test_the_clock_of_a_training_section_uses_half_the_deadline() -> None:
    clock = StepClock.for_training(Training(round_deadline_seconds=4.0, sync_every=25))
    assert (clock.budget_seconds, clock.max_steps) == (2.0, 25)


@pytest.mark.parametrize(
    ("budget", "max_steps", "decay", "message"),
    [(0.0, 10, 0.5, "budget"), (1.0, 0, 0.5, "max_steps"), (1.0, 10, 1.0, "decay")],
    ids=["budget", "max-steps", "decay"],
)
def test_the_clock_refuses_bad_settings(budget: float, max_steps: int, decay: float, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        StepClock(budget, max_steps, decay)
