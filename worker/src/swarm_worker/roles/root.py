"""The root: the outer optimizer, evaluation, checkpoints, status and the end of training.

When a round closes the root computes the change of θ with the outer optimizer, applies it exactly as
every child will (θ[idx] += δ[idx], so all copies stay bit-identical), evaluates on the held-out test
split, checkpoints every K rounds (atomically), appends a line to `metrics.jsonl`, and broadcasts the
new model as a sparse delta or dense. After the last round it writes `result.json` (the final
status), sends STOP down the tree and exits 0. A restarted root resumes from its last checkpoint;
children still on later rounds are re-synced with the dense model by their next HELLO.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Any

import torch

from swarm_worker.maths.compression import dense_to_sparse
from swarm_worker.maths.reputation import NodeReputation
from swarm_worker.maths.support import next_support
from swarm_worker.node.checkpoint import load_checkpoint, save_checkpoint
from swarm_worker.node.runtime import NodeRuntime
from swarm_worker.protocol.transport import encode_message
from swarm_worker.roles.aggregator import Aggregator, RoundResult, wire_dtype
from swarm_worker.training.steps import OuterStep, load_flat
from swarm_worker.training.tasks import evaluate

log = logging.getLogger("swarm.root")
STOP_LINGER_S = 2.0


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


class RootCommit:
    def __init__(self, rt: NodeRuntime) -> None:
        self.rt = rt
        spec = rt.settings.spec
        self.spec = spec
        self.checkpoint_dir = (
            Path(spec.checkpoint.path) if spec.checkpoint.path else rt.settings.workdir / "checkpoints"
        )
        self.outer = OuterStep(spec.training.outer_optimizer, rt.numel)
        self.history: list[dict[str, Any]] = []
        self.elapsed_before = 0.0
        self.started = time.monotonic()
        self.phase = "Running"
        self.finished_at: float | None = None
        self.last_eval: tuple[float | None, float | None] = (None, None)
        self.round_started = time.monotonic()

    # -- start: fresh or from a checkpoint ------------------------------------------------------

    def initial_state(self) -> tuple[torch.Tensor, int, dict[str, Any] | None]:
        state = load_checkpoint(self.checkpoint_dir)
        if state is None:
            return self.rt.initial_theta(), 0, None
        theta = state["theta"]
        if theta.numel() != self.rt.numel:
            raise ValueError(f"checkpoint in {self.checkpoint_dir} is for another model")
        if self.outer.momentum is not None and state.get("momentum") is not None:
            self.outer.momentum = state["momentum"]
        self.history = list(state["history"])
        self.elapsed_before = float(state["elapsed"])
        self._rewrite_metrics()
        log.info("root: resumed from checkpoint at round %d", state["round"])
        return theta, int(state["round"]), state

    def restore_book(self, agg: Aggregator, state: dict[str, Any] | None) -> None:
        if state is None:
            return
        for record in state["reputations"]:
            agg.book.nodes[record["node_id"]] = NodeReputation(**record)
        agg.subtree_records = {r["id"]: r for r in state["subtree_records"]}
        agg.rt.traffic.merge(state["traffic"])
        if agg.support is not None and state.get("support") is not None:
            agg.support = state["support"]

    def checkpoint(self, agg: Aggregator) -> None:
        assert agg.theta is not None
        state = {
            "round": agg.round,
            "theta": agg.theta.clone(),
            "momentum": self.outer.momentum,
            "history": self.history,
            "elapsed": self.elapsed(),
            "reputations": [vars(rep).copy() for rep in agg.book.nodes.values()],
            "subtree_records": list(agg.subtree_records.values()),
            "traffic": agg.rt.traffic.entries(),
            "support": agg.support,
        }
        save_checkpoint(self.checkpoint_dir, state)

    # -- rounds ---------------------------------------------------------------------------------

    def elapsed(self) -> float:
        return self.elapsed_before + time.monotonic() - self.started

    def round_closed(self, agg: Aggregator, result: RoundResult) -> None:
        assert agg.theta is not None
        change = self.outer.step(result.vector, result.agreement)
        broadcast_delta = self.spec.compression.broadcast == "delta"
        # The root applies exactly the (rounded) values it sends, so every copy of θ stays identical.
        wire = dense_to_sparse(change, wire_dtype(self.spec)) if broadcast_delta else None
        if wire is not None and 2 * wire.indices.numel() >= change.numel():
            wire = None  # nearly dense (e.g. outer momentum): the dense model is smaller
        base_round = agg.round
        if wire is not None:
            agg.theta[wire.indices.long()] += wire.values.to(torch.float32)  # exactly what every child does
        else:
            agg.theta = agg.theta + change
        finished_round = agg.round
        self._record(agg, result, finished_round)
        agg.open_round(finished_round + 1)
        if agg.support is not None:
            agg.support = next_support(result.votes, self.rt.numel, agg.k, self.spec.training.seed, agg.round)
        agg.forwarded = None
        if (agg.round % self.spec.checkpoint.every_rounds == 0) or agg.round >= self.spec.training.rounds:
            self.checkpoint(agg)
        if agg.round >= self.spec.training.rounds:
            self.finish(agg)
            return
        delta = None
        if wire is not None:
            tensors: dict[str, Any] = {"theta": wire}
            if agg.support is not None:
                tensors["support"] = agg.support.to(torch.int32)
            msg = agg.message("model", agg.round, {"base_round": base_round, "final": False}, tensors)
            delta = encode_message(msg)
        agg.broadcast(delta, base_round)

    def _record(self, agg: Aggregator, result: RoundResult, finished_round: int) -> None:
        rounds = self.spec.training.rounds
        last = finished_round + 1 >= rounds
        if (finished_round + 1) % self.spec.training.eval_every == 0 or last:
            assert agg.theta is not None
            load_flat(self.rt.model, agg.theta)
            self.last_eval = evaluate(self.rt.model, self.rt.bundle)
        now = time.monotonic()
        round_seconds = now - self.round_started
        self.round_started = now
        sent, dense = agg.rt.traffic.totals()
        samples_per_second = result.samples / max(round_seconds, 1e-9)
        line = {
            "round": finished_round + 1,
            "testLoss": self.last_eval[0],
            "accuracy": self.last_eval[1],
            "trainLoss": result.loss,
            "workers": result.workers,
            "samples": result.samples,
            "samplesPerSecond": samples_per_second,
            "bytesSent": sent,
            "denseEquivalentBytes": dense,
            "wallSeconds": round(self.elapsed(), 3),
        }
        self.history.append(line)
        with (self.rt.settings.workdir / "metrics.jsonl").open("a") as f:
            f.write(json.dumps(line) + "\n")
        m = agg.rt.metrics
        test_loss, accuracy = self.last_eval
        if test_loss is not None:
            m.loss.set(test_loss)
        if accuracy is not None:
            m.accuracy.set(accuracy)
        m.samples_per_second.set(samples_per_second)
        self.publish(agg)

    def _rewrite_metrics(self) -> None:
        text = "".join(json.dumps(line) + "\n" for line in self.history)
        _write_atomic(self.rt.settings.workdir / "metrics.jsonl", text)

    def status(self, agg: Aggregator) -> dict[str, Any]:
        last = self.history[-1] if self.history else {}
        sent, dense = agg.rt.traffic.totals()
        return {
            "job": self.rt.settings.job,
            "phase": self.phase,
            "round": len(self.history),
            "rounds": self.spec.training.rounds,
            "loss": last.get("testLoss"),
            "accuracy": last.get("accuracy"),
            "bytesSent": sent,
            "denseEquivalentBytes": dense,
            "samplesPerSecond": last.get("samplesPerSecond", 0.0),
            "wallSeconds": round(self.elapsed(), 3),
            "nodes": agg.records(),
            "dropped": dict(agg.rt.metrics.dropped_by_reason),
        }

    def publish(self, agg: Aggregator) -> None:
        self.rt.server.publish(self.status(agg))

    def finish(self, agg: Aggregator) -> None:
        self.phase = "Succeeded"
        status = self.status(agg)
        self.rt.server.publish(status)
        _write_atomic(self.rt.settings.workdir / "result.json", json.dumps(status, indent=2))
        write_termination_message(status, TERMINATION_LOG)
        agg.stop_children("training finished")
        self.finished_at = time.monotonic()
        log.info("root: finished %d rounds, accuracy %s", len(self.history), status["accuracy"])

    def tick(self, agg: Aggregator) -> None:
        """Called every loop turn: after the end, answer stragglers with STOP for a moment, then exit."""
        if self.finished_at is not None and time.monotonic() - self.finished_at > STOP_LINGER_S:
            agg.stopped = "finished"


#: Kubernetes' default terminationMessagePath: the operator reads the final status from the pod
#: itself, because its last GET of /status may predate the last rounds.
TERMINATION_LOG = Path("/dev/termination-log")
#: The kubelet keeps at most 4096 bytes of a termination message.
TERMINATION_MESSAGE_BYTES = 4096


def write_termination_message(status: dict[str, Any], path: Path) -> bool:
    """Leave the final status where the kubelet reports it (outside a pod the file does not exist);
    without `nodes` when the whole would not fit. Returns whether it was written."""
    if not path.exists():
        return False
    text = json.dumps(status, separators=(",", ":"))
    if len(text.encode()) > TERMINATION_MESSAGE_BYTES:
        text = json.dumps({k: v for k, v in status.items() if k != "nodes"}, separators=(",", ":"))
    try:
        path.write_text(text)
    except OSError as e:
        log.warning("root: cannot write the termination message to %s: %s", path, e)
        return False
    return True


def run_root(rt: NodeRuntime) -> int:
    commit = RootCommit(rt)
    theta, round_index, state = commit.initial_state()
    agg = Aggregator(rt, theta, round_index)
    commit.restore_book(agg, state)
    agg.open_round(round_index)
    commit.publish(agg)
    if round_index >= rt.settings.spec.training.rounds:
        commit.finish(agg)
    return agg.run(commit)
