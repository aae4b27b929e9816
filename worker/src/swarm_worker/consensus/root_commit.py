"""The root's commit of a round: the outer optimizer, evaluation, checkpoints, status, the end.

When a round commits (at once with one root, roles.root; after agreement with replicas,
roles.replica) the root computes the change of θ with the outer optimizer, applies it exactly as
every child will (θ[idx] += δ[idx], so all copies stay bit-identical), evaluates on the held-out test
split, checkpoints every K rounds (atomically), appends a line to `metrics.jsonl`, and broadcasts the
new model as a sparse delta or dense, with its commit certificate (consensus.outcome). After the
last round it writes `result.json` (the final status), sends STOP down the tree and exits 0. A
restarted root resumes from its last checkpoint; children still on later rounds are re-synced with
the dense model by their next HELLO.

Device: θ, the outer step's momentum, the change and evaluation live on the root's device
(`NodeRuntime.device`); the change is computed there in fp32, rounded to the wire dtype, and θ adds
exactly those rounded values (one fp32 addition per coordinate, correctly rounded on CPU and CUDA
alike: node.model_sync), then the same values are copied to the host for the message. Checkpoints
hold host tensors, so a checkpoint loads on any machine; a resumed root moves them to its device.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from swarm_contract.records import ConsensusStatus, NodeRecord, Phase, RootStatus
from swarm_worker.consensus.outcome import (
    Outcome,
    compute_outcome,
    inputs_digest,
    own_certificate,
)
from swarm_worker.node.aggregating import Links
from swarm_worker.node.checkpoint import load_checkpoint, save_checkpoint
from swarm_worker.node.model_sync import model_digest
from swarm_worker.node.round import RoundResult
from swarm_worker.node.runtime import NodeRuntime
from swarm_worker.protocol.certificate import Certificate, certificate_json, certificate_to_wire
from swarm_worker.protocol.transport import encode_message
from swarm_worker.training.steps import OuterStep, load_flat
from swarm_worker.training.tasks import evaluate

log = logging.getLogger("swarm.root")
STOP_LINGER_S = 2.0


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


class RootCommit:
    """Round sink of the root: the outer step, evaluation, checkpoints, status, the end."""

    def __init__(self, rt: NodeRuntime) -> None:
        self.rt = rt
        spec = rt.settings.spec
        self.spec = spec
        self.checkpoint_dir = (
            Path(spec.checkpoint.path) if spec.checkpoint.path else rt.settings.workdir / "checkpoints"
        )
        if rt.settings.node_id != rt.node.id:  # a replica other than the first: a directory of its own
            self.checkpoint_dir = self.checkpoint_dir / rt.settings.node_id
        self.device = rt.device
        self.outer = OuterStep(spec.training.outer_optimizer, rt.numel, self.device)
        self.history: list[dict[str, Any]] = []
        self.elapsed_before = 0.0
        self.started = time.monotonic()
        self.phase: Phase = "Running"
        self.finished_at: float | None = None
        self.last_eval: tuple[float | None, float | None] = (None, None)
        self.round_started = time.monotonic()
        #: A replica's agreement status (roles.replica), None with one root.
        self.consensus: Callable[[], dict[str, Any]] | None = None

    # -- start: fresh or from a checkpoint ------------------------------------------------------

    def initial_state(self) -> tuple[torch.Tensor, int, dict[str, Any] | None]:
        state = load_checkpoint(self.checkpoint_dir)
        if state is None:
            return self.rt.initial_theta(), 0, None
        theta = state["theta"].to(self.device)
        if theta.numel() != self.rt.numel:
            raise ValueError(f"checkpoint in {self.checkpoint_dir} is for another model")
        if self.outer.momentum is not None and state.get("momentum") is not None:
            self.outer.momentum = state["momentum"].to(self.device)
        self.history = list(state["history"])
        self.elapsed_before = float(state["elapsed"])
        self._rewrite_metrics()
        log.info("%s: resumed from checkpoint at round %d", self.rt.settings.node_id, state["round"])
        return theta, int(state["round"]), state

    def restore(self, links: Links, state: dict[str, Any] | None) -> None:
        if state is None:
            return
        links.state.restore(state["reputations"], state["subtree_records"], state.get("support"))
        links.state.traffic.merge(state["traffic"])

    def checkpoint(self, links: Links) -> None:
        round_state = links.state
        assert round_state.theta is not None
        state = {
            "round": round_state.round,
            "theta": round_state.theta.to("cpu", copy=True),
            "momentum": None if self.outer.momentum is None else self.outer.momentum.to("cpu", copy=True),
            "history": self.history,
            "elapsed": self.elapsed(),
            "traffic": round_state.traffic.entries(),
            **round_state.books(),
        }
        save_checkpoint(self.checkpoint_dir, state)

    # -- rounds ---------------------------------------------------------------------------------

    def elapsed(self) -> float:
        return self.elapsed_before + time.monotonic() - self.started

    def round_closed(self, links: Links, result: RoundResult) -> None:
        state = links.state
        assert state.theta is not None
        inputs = inputs_digest([(child, b"") for child in result.contributors])
        outcome = compute_outcome(
            self.spec, self.rt.settings.job, 0, self.outer, state.theta, state.support, state.round,
            result, inputs, self.rt.numel,
        )  # fmt: skip
        keys = self.rt.keys
        self.commit(links, outcome, own_certificate(outcome.point, keys) if keys is not None else None)

    def commit(self, links: Links, outcome: Outcome, certificate: Certificate | None) -> None:
        """Apply a round's outcome: record it, send θ_{r+1} down with its certificate (None: plain
        links, no keys), checkpoint when due, finish after the last round."""
        state, base_round, theta = links.state, outcome.base_round, outcome.theta
        next_round = base_round + 1
        self._record(links, outcome.result, base_round, theta, certificate)
        if outcome.support is not None:
            state.support = outcome.support
        cert = certificate_to_wire(certificate) if certificate is not None else None
        delta = None
        if outcome.delta_tensors is not None:
            meta: dict[str, Any] = {"base_round": base_round, "final": False}
            if cert is not None:
                meta["cert"] = cert
            delta = encode_message(links.message("model", next_round, meta, outcome.delta_tensors))
        finished = next_round >= self.spec.training.rounds
        links.certificate = cert  # before the round opens: its dense model carries it
        links.advance(next_round, theta)
        if next_round % self.spec.checkpoint.every_rounds == 0 or finished:
            self.checkpoint(links)  # before the model leaves: no child holds a round the root lost
        if finished:
            self.finish(links)
        else:
            links.broadcast(delta, base_round)

    def _record(
        self,
        links: Links,
        result: RoundResult,
        finished_round: int,
        theta: torch.Tensor,
        certificate: Certificate | None,
    ) -> None:
        """Evaluate θ_{r+1} when due, append round r's line to metrics.jsonl (with the certificate
        of θ_{r+1}: the certified chain of the run), publish the status."""
        last = finished_round + 1 >= self.spec.training.rounds
        if (finished_round + 1) % self.spec.training.eval_every == 0 or last:
            load_flat(self.rt.model, theta)
            self.last_eval = evaluate(self.rt.model, self.rt.bundle)
        now = time.monotonic()
        round_seconds = now - self.round_started
        self.round_started = now
        sent, dense = links.state.traffic.totals()
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
            # θ_{r+1}, the model that opens the next round: every node logs the digest it holds.
            "modelDigest": model_digest(theta),
            "certificate": None if certificate is None else certificate_json(certificate),
        }
        self.history.append(line)
        with (self.rt.settings.workdir / "metrics.jsonl").open("a") as f:
            f.write(json.dumps(line) + "\n")
        m = self.rt.metrics
        test_loss, accuracy = self.last_eval
        if test_loss is not None:
            m.loss.set(test_loss)
        if accuracy is not None:
            m.accuracy.set(accuracy)
        m.samples_per_second.set(samples_per_second)
        self.publish(links)

    def adopt_history(self, history: list[dict[str, Any]], elapsed: float) -> None:
        """Another replica's committed history (state transfer): this one's metrics go on from it."""
        self.history = history
        self.elapsed_before, self.started = elapsed, time.monotonic()
        self._rewrite_metrics()

    def _rewrite_metrics(self) -> None:
        text = "".join(json.dumps(line) + "\n" for line in self.history)
        _write_atomic(self.rt.settings.workdir / "metrics.jsonl", text)

    def status(self, links: Links) -> dict[str, Any]:
        """The root's status in its one shape (swarm_contract.records.RootStatus), as JSON values."""
        last = self.history[-1] if self.history else {}
        sent, dense = links.state.traffic.totals()
        status = RootStatus(
            job=self.rt.settings.job,
            phase=self.phase,
            round=len(self.history),
            rounds=self.spec.training.rounds,
            loss=last.get("testLoss"),
            accuracy=last.get("accuracy"),
            bytes_sent=sent,
            dense_equivalent_bytes=dense,
            samples_per_second=last.get("samplesPerSecond", 0.0),
            wall_seconds=round(self.elapsed(), 3),
            nodes=[NodeRecord.model_validate(r) for r in links.state.records()],
            dropped=dict(self.rt.metrics.dropped_by_reason),
            consensus=ConsensusStatus.model_validate(self.consensus()) if self.consensus else None,
        )
        return status.model_dump(by_alias=True, mode="json")

    def publish(self, links: Links) -> None:
        self.rt.server.publish(self.status(links))

    def finish(self, links: Links) -> None:
        self.phase = "Succeeded"
        status = self.status(links)
        self.rt.server.publish(status)
        _write_atomic(self.rt.settings.workdir / "result.json", json.dumps(status, indent=2))
        write_termination_message(status, TERMINATION_LOG)
        links.finish("training finished")
        self.finished_at = time.monotonic()
        me = self.rt.settings.node_id
        log.info("%s: finished %d rounds, accuracy %s", me, len(self.history), status["accuracy"])

    def tick(self, links: Links, now: float) -> None:
        """After the end, answer stragglers with STOP for a moment, then exit."""
        if self.finished_at is not None and now - self.finished_at > STOP_LINGER_S:
            links.exit("finished")

    def stopping(self, links: Links) -> None:
        """SIGTERM (a deleted pod, `swarm run` interrupted): keep the round reached."""
        if self.finished_at is None and links.state.theta is not None:
            self.checkpoint(links)
            me = self.rt.settings.node_id
            log.info("%s: stopping at round %d, checkpoint written", me, links.state.round)


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
