"""Overlap of compute and exchange (`training.pipeline`): a worker trains round r+1 while its update
for round r is in flight; the maths, the rules for arriving models, and one round's local steps run
one step at a time (`LocalRun`) so the worker polls its sockets between steps. docs/pipeline.md has
the same with the timeline and the measurements.

Notation (d = number of parameters; all flat fp32 vectors on the model's device): θ_r is the model
of round r, identical on every node; worker i's update for round r is

    Δ_r = s_r - e_r       s_r the start of its local steps, e_r their end (H steps later)

and the root commits θ_{r+1} = θ_r - lr · outer(A_r), A_r the robust aggregate of the compressed
C(Δ_r^i). Δ is always relative to the start it was computed from.

Without pipeline, s_r = θ_r (steps.py; cooperative alpha blends in the last local end): the worker
waits for θ_r, trains, sends Δ_r, and is idle until θ_{r+1} arrives.

With pipeline:
    s_0     = θ_0                                      (every node has it from the seed)
    s_{r+1} = θ_r - Δ_r = θ_r + (e_r - s_r)            right after Δ_r is sent, before θ_{r+1} exists
    Δ_{r+1} = s_{r+1} - e_{r+1}                        sent tagged r+1 once θ_{r+1} is held and the
                                                       H steps are done, whichever comes last
For r = 0, s_1 = e_0: the worker continues from its own local end. From then on each start is the
newest model the worker holds plus its own latest progress, the part the root has not applied yet
(it is in flight): a rebase onto the root's model each round. A MODEL that arrives while the steps
run changes θ only (θ and the trainer's parameters are separate tensors, and a start is a copy):
the steps run to their end, Δ_{r+1} = s_{r+1} - e_{r+1} is still the pseudo-gradient of H steps from
s_{r+1}, and the next start is s_{r+2} = θ_{r+1} - Δ_{r+1}. Every node's θ changes only by MODELs
(`node.model_sync`), so θ stays the root's bit for bit; only the worker's training state differs.

Why the raw local progress and not θ_r - C(Δ_r), the worker's own compressed update: with top-1%
compression C(Δ_r) holds 1% of the coordinates and the rest waits in the error-feedback residual,
so θ_r - C(Δ_r) is almost θ_r and the lookahead would be lost. The raw Δ_r is where local SGD would
continue without a sync. It enters one start only: s_{r+2} is rebuilt from θ_{r+1}, so the worker
never drifts further than one round of its own progress from the root's model, and what it has
not sent yet reaches θ through the residual, once.

Staleness: Δ_{r+1} is applied to θ_{r+1} but computed from s_{r+1} = θ_r - Δ_r, one round old.
The gap s_{r+1} - θ_{r+1} = lr · outer(A_r) - Δ_r is the difference between the worker's own raw
update and the committed step: zero for a single worker with FedAvg (lr 1, no momentum) and no
compression, in general of the order of one round's progress (without the lookahead, s_{r+1} = θ_r,
the gap would be the whole step, PipeSGD's setting). The delay never exceeds one round: a MODEL for
any other round than the one being trained drops the run (see `on_model`). What we rely on, not
prove for this exact scheme: SGD with gradients delayed by a bounded τ keeps the rate of undelayed
SGD once the step size is below about 1/(τ L), also with compressed error-feedback updates (Stich &
Karimireddy 2020, "The error-feedback framework"); Pipe-SGD (Li et al. 2018) trains with one-step
stale gradients; Overlap Local-SGD (Wang, Liang & Joshi 2020), Streaming DiLoCo's overlapping
communication (Douillard et al. 2025) and DiLoCo's eager updates (Kale et al. 2025) overlap one
round of communication with the next round's local steps at a small cost in quality. The benchmark
(benchmarks/bench_pipeline.py) measures the final accuracy with pipeline on and off.

A MODEL for round m, while a run for round p is pending and a is the last round answered:
    m == p    keep: the update is sent as soon as the steps are done
    m == a    the parent lost our update (it restarted): send the cached one again, keep the run
    other     (a restarted worker catching up, a round the root closed without us) drop the run and
              train round m from s_m = θ_m: there is no update of ours in flight to look ahead by
With cooperative alpha > 0 the pipelined start would mix two notions of "own progress": refused.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Callable

import torch

from swarm_contract.spec import SpecError, Training
from swarm_worker.training.adaptive import StepClock
from swarm_worker.training.steps import LocalResult, LocalTrainer, flat_parameters, load_flat


class ModelAction(enum.Enum):
    KEEP = "keep"  # the model of the round being trained: send when the steps are done
    RESEND = "resend"  # the model of the round already answered: the parent lost the update
    RESTART = "restart"  # any other round: train that round now, from its model


def on_model(model_round: int, run_round: int | None, answered_round: int) -> ModelAction:
    """What a worker does with a MODEL of `model_round` (applied to θ already), given the round of
    its pending run (None: none) and the last round it answered."""
    if run_round is not None and model_round == run_round:
        return ModelAction.KEEP
    if model_round == answered_round:
        return ModelAction.RESEND
    return ModelAction.RESTART


def pipelined_start(theta: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
    """s_{r+1} = θ_r - Δ_r (d,): the newest model held plus the progress of the update just sent."""
    return theta - delta


def fresh_start(theta: torch.Tensor, alpha: float, last_end: torch.Tensor | None) -> torch.Tensor:
    """s_r = θ_r, or (1 - alpha) θ_r + alpha e_{r-1} with cooperative alpha (as `LocalTrainer`);
    always a tensor of its own, since a delta MODEL changes θ in place while the steps run."""
    if alpha > 0 and last_end is not None:
        return (1 - alpha) * theta + alpha * last_end
    return theta.clone()


class LocalRun:
    """One round's local steps from `start`, run one step at a time on the trainer's model.

    Only one run trains at a time (they share the trainer's model and optimizer); creating a run
    loads its start into the model. With a `StepClock` (adaptive steps) the run measures each step
    and re-plans after each one: the steps run plus those that fit in the rest of the clock's
    budget at its newest estimate (training.adaptive); else it runs `steps`.
    """

    def __init__(
        self,
        trainer: LocalTrainer,
        round_index: int,
        start: torch.Tensor,
        steps: int,
        step_clock: StepClock | None = None,
        timer: Callable[[], float] = time.perf_counter,
    ) -> None:
        self.trainer = trainer
        #: The round whose update this is (its θ may not have arrived yet).
        self.round = round_index
        self.start = start
        self.steps = max(1, step_clock.steps() if step_clock is not None else steps)
        self.done = 0
        self.samples = 0
        #: Seconds spent in the steps so far (each step waits for the device, see `step`).
        self.seconds = 0.0
        #: Seconds of the steps the step clock counted (the process's warm-up step is not).
        self.counted_seconds = 0.0
        self._loss_sum = 0.0
        self._step_clock = step_clock
        self._timer = timer
        self._result: LocalResult | None = None
        #: e, the parameters after the last step (set by `result`; cooperative alpha starts from it).
        self.end: torch.Tensor | None = None
        load_flat(trainer.model, start)
        trainer.model.train()

    @property
    def finished(self) -> bool:
        return self.done >= self.steps

    def resize(self, steps: int) -> None:
        """Run `steps` steps in all, but never fewer than those already run (nor than 1)."""
        self.steps = max(1, self.done, steps)

    def step(self) -> float:
        """Run the next step; its seconds. Reading the loss waits for the device, so the time is the
        step's own and the worker's polls between steps are not queued behind the device's work."""
        if self.finished:
            raise RuntimeError(f"LocalRun: round {self.round}'s {self.steps} steps are all done")
        started = self._timer()
        loss, samples = self.trainer.step()
        self._loss_sum += float(loss)
        seconds = self._timer() - started
        self.done += 1
        self.samples += samples
        self.seconds += seconds
        if self._step_clock is not None:
            if self._step_clock.observe(seconds):
                self.counted_seconds += seconds
            self.resize(self._step_clock.steps(self.counted_seconds, self.done))
        return seconds

    def result(self) -> LocalResult:
        """Δ = start - end (d,), the mean loss and the samples of the steps run (computed once)."""
        if not self.finished:
            raise RuntimeError(f"LocalRun: round {self.round} has run {self.done} of {self.steps} steps")
        if self._result is None:
            self.end = flat_parameters(self.trainer.model)
            self._result = LocalResult(
                delta=self.start - self.end, loss=self._loss_sum / self.done, samples=self.samples
            )
        return self._result


class StepwiseRounds:
    """A stepwise worker's training state, apart from θ: the pending run, the last local end
    (cooperative alpha) and the step clock (adaptive steps); where each run starts (see above).

    The worker calls `begin` when a model asks for a round to be trained from it, `finish` when the
    pending run is done and θ of its round is held, and `next_round` once that update is sent.
    """

    def __init__(self, trainer: LocalTrainer, training: Training) -> None:
        if training.pipeline and training.alpha > 0:
            raise SpecError("training.pipeline cannot be combined with training.alpha > 0")
        self.trainer = trainer
        self.pipeline = training.pipeline
        self.alpha = training.alpha
        self.clock = StepClock.for_training(training) if training.adaptive_steps else None
        self.pending: LocalRun | None = None
        self.last_end: torch.Tensor | None = None
        self._sent: tuple[int, torch.Tensor] | None = None

    @property
    def pending_round(self) -> int | None:
        return self.pending.round if self.pending is not None else None

    def _start(self, round_index: int, start: torch.Tensor) -> LocalRun:
        self.pending = LocalRun(self.trainer, round_index, start, self.trainer.local_steps, self.clock)
        return self.pending

    def begin(self, round_index: int, theta: torch.Tensor) -> LocalRun:
        """Drop any pending run; train `round_index` from its model θ: s = θ (or alpha's blend)."""
        self._sent = None
        return self._start(round_index, fresh_start(theta, self.alpha, self.last_end))

    def finish(self) -> LocalResult:
        """The finished pending run's update, for its round; it is no longer pending."""
        run = self.pending
        if run is None:
            raise RuntimeError("StepwiseRounds.finish: no run is pending")
        result = run.result()
        self.last_end, self.pending = run.end, None
        self._sent = (run.round, result.delta)
        return result

    def next_round(self, theta: torch.Tensor) -> LocalRun | None:
        """Pipelined, after the update of round r went out with θ_r held: start round r+1 from
        s_{r+1} = θ_r - Δ_r at once. Without pipeline, nothing: the next model starts the next run."""
        sent, self._sent = self._sent, None
        if not self.pipeline or sent is None:
            return None
        round_index, delta = sent
        return self._start(round_index + 1, pipelined_start(theta, delta))
