"""Pipelined and step-by-step local training (training/pipeline.py): a run of H single steps is
run_round bit for bit, a model that changes θ mid-run leaves the run alone, each pipelined start is
θ_r - Δ_r, models of other rounds are handled by the table of `on_model`, adaptive steps re-plan a
run, and the pipelined protocol converges like the plain one on a least-squares problem."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
import torch
from torch import nn

from swarm_contract.spec import SpecError, Training
from swarm_worker.training.adaptive import StepClock
from swarm_worker.training.pipeline import (
    LocalRun,
    ModelAction,
    StepwiseRounds,
    fresh_start,
    on_model,
    pipelined_start,
)
from swarm_worker.training.steps import LocalTrainer, flat_parameters
from swarm_worker.training.tasks import batches

D, H, WORKERS, BATCH = 8, 5, 4, 8
_gen = torch.Generator().manual_seed(7)
W_TRUE = torch.randn(D, 1, generator=_gen)
X = torch.randn(WORKERS * 64, D, generator=_gen)
Y = X @ W_TRUE + 0.01 * torch.randn(WORKERS * 64, 1, generator=_gen)


def trainer(rank: int = 0, lr: float = 0.05, steps: int = H) -> LocalTrainer:
    """Rank's trainer on its 64 rows of the regression; every rank starts from the same weights."""
    torch.manual_seed(0)
    model = nn.Linear(D, 1, bias=False)
    x, y = X[rank * 64 : (rank + 1) * 64], Y[rank * 64 : (rank + 1) * 64]
    stream = batches(x, y, BATCH, torch.Generator().manual_seed(rank))
    return LocalTrainer(
        model, torch.optim.SGD(model.parameters(), lr=lr), stream, nn.MSELoss(), local_steps=steps, alpha=0.0
    )


def run_to_end(run: LocalRun) -> None:
    while not run.finished:
        run.step()


def test_h_single_steps_are_run_round_bit_for_bit() -> None:
    blocking, stepwise = trainer(), trainer()
    theta = flat_parameters(blocking.model)
    expected = blocking.run_round(theta)
    run = LocalRun(stepwise, 0, fresh_start(theta, 0.0, None), H)
    run_to_end(run)
    got = run.result()
    assert torch.equal(got.delta, expected.delta)
    assert got.loss == pytest.approx(expected.loss, rel=1e-12)
    assert (got.samples, run.done) == (expected.samples, H) == (H * BATCH, H)


def test_a_model_applied_mid_run_changes_theta_not_the_run() -> None:
    quiet, disturbed = trainer(), trainer()
    theta = flat_parameters(quiet.model)
    reference = LocalRun(quiet, 1, fresh_start(theta, 0.0, None), H)
    run_to_end(reference)
    run = LocalRun(disturbed, 1, fresh_start(theta, 0.0, None), H)
    run.step()
    theta += 1.0  # a delta MODEL is applied to θ in place (node.model_sync) while the steps run
    run_to_end(run)
    assert torch.equal(run.result().delta, reference.result().delta)


@pytest.mark.parametrize(
    ("model_round", "run_round", "answered", "expected"),
    [
        (5, 5, 4, ModelAction.KEEP),  # pipelined: θ_5 arrives while (or after) round 5's steps run
        (4, 5, 4, ModelAction.RESEND),  # the parent restarted and lost round 4's update
        (4, None, 4, ModelAction.RESEND),
        (5, None, 4, ModelAction.RESTART),  # not pipelined: θ_5 starts round 5
        (9, 5, 4, ModelAction.RESTART),  # the root closed rounds without us: drop the stale run
        (17, 1, 0, ModelAction.RESTART),  # a restarted worker catches up
        (2, 5, 4, ModelAction.RESTART),  # an older dense model (parent restored a checkpoint)
    ],
    ids=["keep", "resend", "resend-idle", "train", "skip-ahead", "catch-up", "older"],
)
def test_on_model(model_round: int, run_round: int | None, answered: int, expected: ModelAction) -> None:
    assert on_model(model_round, run_round, answered) is expected


def test_fresh_start_is_a_copy_or_the_alpha_blend() -> None:
    theta, end = torch.tensor([1.0, 2.0]), torch.tensor([3.0, 6.0])
    start = fresh_start(theta, 0.0, end)
    theta += 1
    assert torch.equal(start, torch.tensor([1.0, 2.0]))
    torch.testing.assert_close(fresh_start(torch.tensor([1.0, 2.0]), 0.25, end), torch.tensor([1.5, 3.0]))


def test_the_pipelined_run_starts_at_theta_minus_the_update_just_sent() -> None:
    t = trainer()
    theta0 = flat_parameters(t.model)
    rounds = StepwiseRounds(t, Training(pipeline=True, sync_every=H))
    first = rounds.begin(0, theta0)
    run_to_end(first)
    delta0 = rounds.finish().delta
    assert rounds.pending is None
    second = rounds.next_round(theta0)
    assert second is not None
    assert second is rounds.pending
    assert second.round == 1
    assert torch.equal(second.start, pipelined_start(theta0, delta0))
    torch.testing.assert_close(second.start, first.end)  # round 1 continues from round 0's local end
    run_to_end(second)
    theta1 = theta0 - 0.5 * delta0  # what the root committed meanwhile (any θ_1 will do)
    delta1 = rounds.finish().delta
    third = rounds.next_round(theta1)
    assert third is not None
    assert third.round == 2
    assert torch.equal(third.start, theta1 - delta1)  # the rebase onto the root's θ_1


def test_without_pipeline_the_next_model_starts_the_next_run() -> None:
    t = trainer()
    theta0 = flat_parameters(t.model)
    rounds = StepwiseRounds(t, Training(sync_every=H, adaptive_steps=True))
    run_to_end(rounds.begin(0, theta0))
    rounds.finish()
    assert rounds.next_round(theta0) is None
    assert rounds.pending_round is None
    assert rounds.begin(1, theta0).round == rounds.pending_round == 1


def test_begin_drops_the_pending_run() -> None:
    t = trainer()
    theta0 = flat_parameters(t.model)
    rounds = StepwiseRounds(t, Training(pipeline=True, sync_every=H))
    run_to_end(rounds.begin(0, theta0))
    rounds.finish()
    rounds.next_round(theta0)
    run = rounds.begin(9, theta0 + 1)
    assert rounds.pending is run
    assert run.round == 9
    assert torch.equal(run.start, theta0 + 1)


def test_pipeline_with_cooperative_alpha_is_refused() -> None:
    with pytest.raises(SpecError, match="alpha"):
        StepwiseRounds(trainer(), Training(pipeline=True, alpha=0.5))


def test_cooperative_alpha_blends_the_last_local_end() -> None:
    t = trainer()
    theta0 = flat_parameters(t.model)
    rounds = StepwiseRounds(t, Training(sync_every=H, adaptive_steps=True, alpha=0.5))
    first = rounds.begin(0, theta0)
    run_to_end(first)
    rounds.finish()
    assert first.end is not None
    torch.testing.assert_close(rounds.begin(1, theta0).start, 0.5 * theta0 + 0.5 * first.end)


def fake_timer(step_seconds: list[float]) -> Callable[[], float]:
    """A clock read twice per step (before, after) whose steps last `step_seconds`."""

    def readings() -> Iterator[float]:
        now = 0.0
        for seconds in step_seconds:
            yield now
            now += seconds
            yield now

    it = readings()
    return lambda: next(it)


def test_an_adaptive_run_re_plans_after_the_warm_up_step() -> None:
    clock = StepClock(budget_seconds=1.0, max_steps=10)
    run = LocalRun(trainer(), 0, flat_parameters(trainer().model), 10, clock, fake_timer([5.0] + [0.25] * 9))
    assert run.steps == 10  # speed unknown: syncEvery
    run_to_end(run)
    # The warm-up step is not counted in the budget either: 1 + 1.0 s / 0.25 s.
    assert (run.done, run.steps, run.samples) == (5, 5, 5 * BATCH)
    assert run.seconds == pytest.approx(6.0)
    assert run.counted_seconds == pytest.approx(1.0)


def test_an_adaptive_run_stops_early_when_the_steps_slow_down() -> None:
    clock = StepClock(budget_seconds=1.0, max_steps=10)
    clock.observe(3.0)  # the process's warm-up step was in an earlier round
    clock.observe(0.1)
    run = LocalRun(
        trainer(), 0, flat_parameters(trainer().model), 10, clock, fake_timer([0.1, 0.1, 0.5, 0.5])
    )
    assert run.steps == 10
    run_to_end(run)
    # After 0.1 + 0.1 + 0.5 s the estimate is 0.18 s per step: one more fits in the 0.3 s left.
    assert (run.done, run.steps) == (4, 4)


def test_a_run_refuses_steps_past_its_end_and_a_result_before_it() -> None:
    run = LocalRun(trainer(), 3, flat_parameters(trainer().model), 2)
    with pytest.raises(RuntimeError, match="run 0 of 2"):
        run.result()
    run_to_end(run)
    run.resize(1)
    assert run.steps == 2  # never below the steps already run
    with pytest.raises(RuntimeError, match="all done"):
        run.step()


def regression_loss(theta: torch.Tensor) -> float:
    return float(((X @ theta.view(D, 1) - Y) ** 2).mean())


def train_swarm(pipeline: bool, rounds: int) -> torch.Tensor:
    """WORKERS workers and a FedAvg root in one process, in the pipelined order when `pipeline`: each
    worker's next run starts (and runs) right after its update is sent, before θ_{r+1} exists."""
    trainers = [trainer(rank) for rank in range(WORKERS)]
    theta = flat_parameters(trainers[0].model)
    workers = [StepwiseRounds(t, Training(pipeline=pipeline, sync_every=H)) for t in trainers]
    for w in workers:
        w.begin(0, theta)
    for r in range(rounds):
        deltas = []
        for w in workers:
            assert w.pending is not None
            assert w.pending.round == r
            run_to_end(w.pending)
            deltas.append(w.finish().delta)
            upcoming = w.next_round(theta)
            if upcoming is not None:
                run_to_end(upcoming)  # while the update is in flight
        theta = theta - torch.stack(deltas).mean(0)
        if not pipeline:
            for w in workers:
                w.begin(r + 1, theta)
    return theta


def test_the_pipelined_protocol_converges_like_the_plain_one() -> None:
    initial = regression_loss(train_swarm(pipeline=False, rounds=0))
    plain = regression_loss(train_swarm(pipeline=False, rounds=12))
    pipelined = regression_loss(train_swarm(pipeline=True, rounds=12))
    noise_floor = float(((X @ W_TRUE - Y) ** 2).mean())
    assert plain < 0.01 * initial
    assert pipelined < 0.01 * initial
    assert pipelined - noise_floor < 2.0 * (plain - noise_floor) + 1e-4
