"""The worker process: receive θ_r, train H local steps, send the compressed update Δ up.

Loop (single thread, ZeroMQ poll):
- at start every process holds θ_0 (built from the shared seed, so it is never sent) and trains
  round 0 at once; it also sends HELLO (its round, and whether it already answered it). A parent on
  another round answers with the dense model, so a restarted worker catches up after one wasted round.
- nothing heard from the parent for a while: HELLO again.
- MODEL dense: replace θ. MODEL delta: apply it when its base round is ours, else ask for a dense one.
- a MODEL for a round this worker already answered means the parent lost the update (it restarted):
  send the cached update again rather than training twice.
- STOP: exit 0.
With `topology.reshuffle` the worker holds a DEALER to every bottom aggregator (`--peers`) and sends
each round's update (and its HELLOs) to the one `topology.parent_in_round` names; models may come
from any of them. A child of the root with root replicas (`consensus.replicas` > 1) sends to every
replica (node.parents); with keys, a MODEL is applied only with a valid commit certificate
(node.certified: refusals counted as `certificate`).

`training.pipeline` or `training.adaptiveSteps`: local steps run one at a time (`LocalRun`) with a
non-blocking poll between them. Pipelined, the worker starts round r+1's steps from θ_r - Δ_r once
round r's update is sent, and sends them when θ_{r+1} is held (maths and rules: training.pipeline);
adaptive steps fit each round in half the deadline (training.adaptive); each round's line logs them.

A rank listed in `spec.simulation.byzantine` runs the same loop as an attacker (`byzantine.py`):
label-flip trains on flipped labels, update attacks replace the honest Δ by a crafted one before
compression, `crash` exits with status 3 on its third round of each incarnation, `silent` sends
nothing at all and only listens for STOP.
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any

import torch
import zmq

from swarm_contract.spec import SpecError
from swarm_contract.topology import ROOT_ID, parent_in_round
from swarm_worker.maths.compression import VALUE_DTYPES, ErrorFeedbackCompressor, SparseVector, k_for
from swarm_worker.maths.support import initial_support, valid_support
from swarm_worker.node.model_sync import accepted_round, apply_model, model_digest
from swarm_worker.node.parents import ParentLinks, open_parents
from swarm_worker.node.runtime import SIGNALLED_EXIT_CODE, NodeRuntime
from swarm_worker.protocol.codec import Message
from swarm_worker.protocol.transport import Encoded, effective_max_message_bytes, encode_message
from swarm_worker.simulation.byzantine import (
    CRASH_AFTER_ROUNDS,
    CRASH_EXIT_CODE,
    Attacker,
    make_trainer,
    plan_for,
)
from swarm_worker.training.pipeline import LocalRun, ModelAction, StepwiseRounds, on_model
from swarm_worker.training.shards import honest_trainer
from swarm_worker.training.steps import LocalResult

log = logging.getLogger("swarm.worker")
POLL_MS = 100
HELLO_INTERVAL_S = 1.0


class Worker:
    def __init__(self, rt: NodeRuntime) -> None:
        self.rt = rt
        spec = rt.settings.spec
        self.rank = rt.node.ranks[0]
        self.plan = plan_for(spec, self.rank)
        flip = self.plan is not None and self.plan.flips_labels
        self.trainer = (
            make_trainer(spec, rt.bundle, rt.model, self.rank, flip=True)
            if flip
            else honest_trainer(spec, rt.bundle, rt.model, self.rank)
        )
        self.attacker = (
            Attacker(self.plan, spec, rt.bundle, rt.model)
            if self.plan is not None and self.plan.crafts_update
            else None
        )
        if self.plan is not None:
            log.warning("%s: Byzantine rank %d, attack %s", rt.node.id, self.rank, self.plan.attack)
        comp = spec.compression
        self.compressor = (
            ErrorFeedbackCompressor(
                rt.numel,
                ratio=comp.ratio,
                value_dtype=VALUE_DTYPES[comp.value_dtype],
                selector=comp.selector,
                error_feedback=comp.error_feedback,
                seed=spec.training.seed + self.rank,
            )
            if comp.method == "topk"
            else None
        )
        self.k = k_for(rt.numel, comp.ratio)
        #: Common support (swarm_worker.maths.support): where this round's update must lie.
        self.support = initial_support(rt.numel, self.k, spec.training.seed) if spec.common_support else None
        self.theta: torch.Tensor | None = rt.initial_theta()
        self.round = 0
        self.answered_round = -1
        #: Rounds trained by this process (the crash attack counts them per incarnation).
        self.rounds_trained = 0
        self.last_update: Encoded | None = None
        self.resync_after = max(2.0, spec.training.round_deadline_seconds)
        self.silent = self.plan is not None and self.plan.silent
        #: Local steps one at a time between polls (pipeline, adaptive steps; a silent rank never
        #: trains); round 0 is pending at once, from θ_0, without waiting for the parent.
        self.stepwise: StepwiseRounds | None = None
        if not self.silent and (spec.training.pipeline or spec.training.adaptive_steps):
            self.stepwise = StepwiseRounds(self.trainer, spec.training)
            self.stepwise.begin(0, self.theta)

    def _message(self, msg_type: str, rnd: int, meta: dict[str, Any], tensors: dict[str, Any]) -> Message:
        return Message(msg_type, self.rt.settings.job, rnd, self.rt.node.id, meta, tensors)

    def _update_for_wire(self, delta: torch.Tensor) -> dict[str, torch.Tensor | SparseVector]:
        """The honest Δ (d,), or the attacker's crafted one, as the update's tensors on the wire."""
        if self.attacker is not None:
            assert self.theta is not None
            delta = self.attacker.craft(delta, self.theta)
            if self.attacker.plan.sends_dense:
                return {"delta": delta}  # NaN stays NaN on the wire; the codec does not check on send
        if self.compressor is None:
            return {"delta": delta}
        if self.support is not None:
            sparse, votes = self.compressor.compress_on_support(delta, self.support)
            return {"delta": sparse, "votes": votes}
        return {"delta": self.compressor.compress(delta)}

    def parent_for(self, round_index: int) -> str:
        """The aggregator this worker reports to in `round_index`."""
        spec = self.rt.settings.spec
        if spec.topology.reshuffle and self.rt.node.parent != ROOT_ID:
            return parent_in_round(self.rt.tree, self.rt.node.id, round_index, spec.training.seed)
        assert self.rt.node.parent is not None
        return self.rt.node.parent

    def _crash_if_due(self) -> None:
        if self.plan is not None and self.plan.crashes and self.rounds_trained == CRASH_AFTER_ROUNDS:
            log.warning("%s: crash attack, exiting with %d", self.rt.node.id, CRASH_EXIT_CODE)
            logging.shutdown()
            os._exit(CRASH_EXIT_CODE)  # like a segfault: no cleanup, no goodbye to the parent

    def _train_and_send(self, to: str) -> None:
        """Blocking path (no pipeline, no adaptive steps): H steps from θ_r in one call, then send."""
        assert self.theta is not None
        if self.silent:
            self.answered_round = self.round  # alive, never heard
            return
        self._crash_if_due()
        started = time.monotonic()
        result = self.trainer.run_round(self.theta)
        self._send_update(to, result, started, self.trainer.local_steps)

    def _step(self, to: str, stepwise: StepwiseRounds, run: LocalRun) -> None:
        """Stepwise path: run's next step; once done and θ of its round is held, send its update."""
        if not run.finished:
            if run.done == 0:
                self._crash_if_due()
            run.step()
        if run.finished and run.round == self.round:
            assert self.theta is not None
            started = time.monotonic() - run.seconds  # as if the steps had run just now, back to back
            self._send_update(to, stepwise.finish(), started, run.done)
            stepwise.next_round(self.theta)  # pipelined: round r+1 from θ_r - Δ_r at once

    def _send_update(self, to: str, result: LocalResult, started: float, steps: int) -> None:
        """Compress and send `result`, `steps` local steps from θ_r begun at `started`, for round r,
        to parent `to` (to every root replica, signed, with replicas: node.parents)."""
        assert self.theta is not None
        hashing = time.monotonic()
        digest = model_digest(self.theta)  # θ_r as this worker holds it: every node logs the same
        started += time.monotonic() - hashing  # a check, not the round's work: left out of its time
        tensors = self._update_for_wire(result.delta)
        elapsed = time.monotonic() - started
        m = self.rt.metrics
        m.loss.set(result.loss)
        m.samples_per_second.set(result.samples / max(elapsed, 1e-9))
        meta = {
            "samples": result.samples,
            "workers": 1,
            "loss": result.loss,
            "nodes": [],
            "traffic": self.rt.traffic.entries(),
        }
        self.last_update = self.parents.seal(self._message("update", self.round, meta, tensors))
        self.answered_round = self.round
        self.rounds_trained += 1
        self.parents.send(self.last_update, to)
        m.round_seconds.observe(elapsed)
        # One line per round: what `kubectl logs` of a worker shows.
        log.info(
            "%s: round %d: loss %.4f, %d samples in %.2f s (%d steps), update %d bytes, model %s",
            self.rt.node.id,
            self.round,
            result.loss,
            result.samples,
            elapsed,
            steps,
            self.last_update.nbytes,
            digest,
        )

    def run(self) -> int:
        rt = self.rt
        assert rt.settings.parent is not None
        ctx: zmq.Context[Any] = zmq.Context()
        parents = open_parents(ctx, rt, effective_max_message_bytes(rt.settings.spec, rt.numel))
        assert parents is not None
        self.parents: ParentLinks = parents
        try:
            if self.parent_for(0) not in parents.sockets:
                missing = self.parent_for(0)
                raise SpecError(f"--peers: no address for {missing}, which {rt.node.id} reports to")
            poller = zmq.Poller()
            parents.register(poller)
            return self._loop(poller)
        finally:
            parents.close()
            ctx.term()

    def _loop(self, poller: zmq.Poller) -> int:
        rt = self.rt
        # One HELLO at start (a restarted worker learns the parent's round at once), then only after
        # silence, counted from the start: HELLOs that queue while the parent is busy would each be
        # answered with the dense model once it has moved to the next round.
        last_heard, last_hello, greeted = time.monotonic(), 0.0, False
        while True:
            if rt.stop_requested.is_set():
                log.info("%s: stopping on a signal at round %d", rt.node.id, self.round)
                return SIGNALLED_EXIT_CODE
            now = time.monotonic()
            quiet = now - last_heard > self.resync_after and now - last_hello > HELLO_INTERVAL_S
            to = self.parent_for(self.round)
            if (quiet or not greeted) and not self.silent:
                meta = {"role": "worker", "answered": self.answered_round == self.round}
                self.parents.send(encode_message(self._message("hello", self.round, meta, {})), to)
                last_hello, greeted = now, True
            if self.answered_round < 0 and self.stepwise is None:
                self._train_and_send(to)  # round 0 from θ_0, without waiting for the parent
                last_heard = time.monotonic()  # the parent answers with round 1's model: wait from now
                continue
            run = self.stepwise.pending if self.stepwise is not None else None
            busy = run is not None and not run.finished
            if self.stepwise is not None and run is not None:
                self._step(to, self.stepwise, run)
            for ready, _ in poller.poll(0 if busy else POLL_MS):
                heard = self.parents.receive(ready, self.round)  # certified, deduplicated: node.parents
                if heard is None:
                    continue
                last_heard = time.monotonic()
                if (msg := heard.message) is None:
                    continue
                if msg.type == "stop":
                    log.info("%s: stop (%s)", rt.node.id, msg.meta["reason"])
                    return 0
                if msg.type != "model":
                    rt.metrics.dropped("unexpected-type")
                    continue
                support = None
                if self.support is not None:  # checked before θ changes
                    support = valid_support(msg.tensors.get("support"), rt.numel, self.k)
                    if support is None:
                        rt.metrics.dropped("support")
                        last_heard = 0.0
                        continue
                pending = self.stepwise.pending_round if self.stepwise is not None else None
                action = on_model(msg.round, pending, self.answered_round)
                theta = apply_model(self.theta, self.round, msg)
                if theta is None:
                    rt.metrics.dropped("model-mismatch")
                    last_heard = 0.0  # ask for a dense model at once
                    continue
                self.theta, self.round = theta, accepted_round(rt.metrics, rt.node.id, self.round, msg)
                if support is not None:
                    self.support = support
                rt.metrics.round.set(self.round)
                parent = self.parent_for(self.round)
                if action is ModelAction.RESEND and self.last_update is not None:
                    self.parents.send(self.last_update, parent)  # the parent lost it
                    continue
                if action is ModelAction.KEEP:
                    continue  # the pending steps are for this round: sent when they are done
                if self.stepwise is not None:
                    self.stepwise.begin(self.round, self.theta)
                else:
                    self._train_and_send(parent)
