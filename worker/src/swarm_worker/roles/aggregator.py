"""Aggregator processes: interior nodes of the tree and, with `RootCommit`, the root.

Round r at an aggregator (single thread, ZeroMQ poll over the children's ROUTER and the parent's
DEALER):
1. MODEL r arrives from the parent (the root makes it): apply it, forward it to every child (the
   same delta frames when the child holds round r-1, else the dense model), open round r.
2. UPDATEs for round r arrive from children. Each is validated (round, size, shape) before use; late,
   duplicate, quarantined or malformed ones are dropped and counted by reason.
3. The round closes when every (non-quarantined) child reported, or when the deadline passed with a
   quorum: interior aggregators need one update, the root needs `spec.quorum` workers in all.
   The deadline of a level is shorter than its parent's, so a slow subtree still reports in time.
4. The robust rule combines the updates (weights: samples x reputation, reputation <= 1 so it can
   only down-weight), reputations are updated from what was measured, and the result goes up as one
   UPDATE carrying the subtree's sample and worker counts, reputation records and traffic counters.
   The root instead applies the outer optimizer and broadcasts round r+1.
A HELLO from a child that is not on round r, or is on it but has no update here (this aggregator
restarted), is answered with the dense model; the child re-sends its cached update.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from typing import Any, Protocol

import torch
import zmq

from swarm_contract.spec import SwarmSpec
from swarm_contract.topology import round_assignment
from swarm_worker.maths import robust
from swarm_worker.maths.compression import VALUE_DTYPES, SparseVector, dense_to_sparse, k_for, sparsify
from swarm_worker.maths.reputation import ReputationBook, RoundObservation, cosines, duplicates
from swarm_worker.maths.support import initial_support, merge_votes, on_support, valid_support
from swarm_worker.node.model_sync import apply_model
from swarm_worker.node.runtime import NodeRuntime
from swarm_worker.protocol.codec import Message
from swarm_worker.protocol.transport import (
    Encoded,
    bind_router,
    connect_dealer,
    encode_message,
    receive,
    send,
)

log = logging.getLogger("swarm.aggregator")
POLL_MS = 50
HELLO_INTERVAL_S = 1.0


@dataclass(frozen=True)
class ChildUpdate:
    vector: torch.Tensor  # (d,) fp32, dense
    samples: int
    workers: int
    loss: float
    votes: SparseVector | None = None  # common support: where the subtree wants to send next


@dataclass(frozen=True)
class RoundResult:
    vector: torch.Tensor  # (d,) the robust aggregate
    samples: int
    workers: int
    loss: float
    contributors: tuple[str, ...]
    #: Mean over contributors of max(0, cos(update, aggregate)), in [0, 1]: how much the round agreed.
    agreement: float = 1.0
    #: Common support: the subtree's merged votes for the next round's support.
    votes: SparseVector | None = None


def to_wire(vector: torch.Tensor, value_dtype: torch.dtype) -> torch.Tensor | SparseVector:
    """An aggregate for the wire: its nonzeros in `value_dtype` when fewer than half are nonzero,
    else dense fp32. The receiver uses exactly these values (no error feedback on the way up)."""
    nnz = int(torch.count_nonzero(vector))
    return dense_to_sparse(vector, value_dtype) if 2 * nnz < vector.numel() else vector


def wire_dtype(spec: SwarmSpec) -> torch.dtype:
    """Aggregates and model deltas travel in the update's value dtype; fp32 without compression."""
    return VALUE_DTYPES[spec.compression.value_dtype] if spec.compression.method == "topk" else torch.float32


def _needs(rule: str, f: int) -> int:
    """Fewest inputs `rule` accepts with f Byzantine ones (see swarm_worker.maths.robust)."""
    if rule in ("mean", "weighted-mean"):
        return 1
    if rule in ("krum", "multi-krum"):
        return 2 * f + 3
    if rule == "bulyan":
        return 4 * f + 3
    return 2 * f + 1


def feasible_rule(rule: str, n: int, f: int, bucket: int = 1) -> tuple[str, int]:
    """The rule and f to use on n inputs: the spec's f lowered to what n allows; a rule that cannot
    run on n inputs at all (Krum on 2) falls back to the coordinate-wise median, never to the mean.
    With bucketing of size `bucket` the rule sees ceil(n / bucket) inputs."""
    if rule in ("mean", "weighted-mean"):
        return rule, 0  # no f to tolerate: these rules have breakdown point 0
    n = math.ceil(n / bucket)
    while f > 0 and n < _needs(rule, f):
        f -= 1
    if n < _needs(rule, f):
        return "median", 0
    return rule, f


def deadline_for(level: int, height: int, round_deadline: float) -> float:
    """Seconds a level waits: the root the full deadline, each level below 10% less (at least half)."""
    return round_deadline * max(0.5, 1.0 - 0.1 * (height - level))


class RoundSink(Protocol):
    """Where a closed round goes: up to the parent (interior) or into the outer step (root)."""

    def round_closed(self, agg: Aggregator, result: RoundResult) -> None: ...


class Aggregator:
    def __init__(self, rt: NodeRuntime, theta: torch.Tensor | None, round_index: int) -> None:
        self.rt = rt
        spec = rt.settings.spec
        self.spec = spec
        self.children = rt.node.children
        self.worker_count = {c: len(rt.tree.node(c).ranks) for c in self.children}
        # Bottom aggregators draw their children afresh every round (topology.round_assignment).
        self.reshuffle = spec.topology.reshuffle and rt.node.role == "aggregator" and rt.node.level == 1
        if self.reshuffle:
            self.worker_count = {w.id: 1 for w in rt.tree.workers}
            self.children = round_assignment(rt.tree, round_index, spec.training.seed)[rt.node.id]
        self.theta = theta
        self.round = round_index
        self.pending: dict[str, ChildUpdate] = {}
        self.closed = False
        self.round_started = time.monotonic()
        #: The deadline runs from the round's first update, not from its opening: slow starts
        #: (processes importing torch, a long first round) must not close a round on one update.
        self.first_update_at: float | None = None
        # Every process starts from θ_0 on round 0 (built from the shared seed, never sent).
        self.child_round: dict[str, int] = dict.fromkeys(self.children, 0)
        self.previous_aggregate: torch.Tensor | None = None
        rep = spec.robustness.reputation
        self.book = ReputationBook(rep.decay, rep.threshold, rep.quarantine_rounds)
        self.subtree_records: dict[str, dict[str, Any]] = {}
        self.deadline = deadline_for(rt.node.level, rt.tree.height, spec.training.round_deadline_seconds)
        self._dense_model: tuple[int, Encoded] | None = None
        self.ctx: zmq.Context[Any] = zmq.Context()
        max_bytes = spec.network.max_message_bytes
        self.router = bind_router(self.ctx, rt.settings.bind_host, rt.settings.bind_port, max_bytes)
        self.dealer = (
            connect_dealer(self.ctx, rt.node.id, rt.settings.parent, max_bytes)
            if rt.settings.parent
            else None
        )
        self.stopped: str | None = None
        #: Common support (swarm_worker.maths.support): the index set every update of this round must use.
        self.k = k_for(rt.numel, spec.compression.ratio)
        self.support: torch.Tensor | None = (
            initial_support(rt.numel, self.k, spec.training.seed) if spec.common_support else None
        )
        #: This round's update as sent up, kept to re-send when the parent lost it.
        self.forwarded: Encoded | None = None
        #: Set once training ended: later HELLOs are answered with STOP.
        self.done_reason: str | None = None

    # -- messages -------------------------------------------------------------------------------

    def message(self, msg_type: str, rnd: int, meta: dict[str, Any], tensors: dict[str, Any]) -> Message:
        return Message(msg_type, self.rt.settings.job, rnd, self.rt.node.id, meta, tensors)

    def dense_model(self) -> Encoded:
        assert self.theta is not None
        if self._dense_model is None or self._dense_model[0] != self.round:
            tensors: dict[str, Any] = {"theta": self.theta}
            if self.support is not None:
                tensors["support"] = self.support.to(torch.int32)
            msg = self.message("model", self.round, {"base_round": -1, "final": False}, tensors)
            self._dense_model = (self.round, encode_message(msg))
        return self._dense_model[1]

    def send_child(self, child: str, encoded: Encoded) -> None:
        send(self.router, encoded, self.rt.metrics, identity=child.encode())

    def broadcast(self, delta: Encoded | None, base_round: int) -> None:
        """Send round `self.round` to every child: `delta` to those on `base_round` (assumed of a child
        this node has not heard otherwise about), dense to others. A child that cannot apply a delta
        asks for the dense model."""
        for child in self.children:
            # Reshuffled children come from other groups: what this node last sent them is stale.
            known = base_round if self.reshuffle else self.child_round.get(child, base_round)
            fits = delta is not None and known == base_round
            self.send_child(child, delta if fits and delta is not None else self.dense_model())
            self.child_round[child] = self.round

    def stop_children(self, reason: str) -> None:
        self.done_reason = reason
        stop = encode_message(self.message("stop", max(self.round, 0), {"reason": reason}, {}))
        for child in self.children:
            self.send_child(child, stop)

    def open_round(self, round_index: int) -> None:
        self.round = round_index
        if self.reshuffle:
            assignment = round_assignment(self.rt.tree, round_index, self.spec.training.seed)
            self.children = assignment[self.rt.node.id]
        self.pending = {}
        self.closed = False
        self.round_started = time.monotonic()
        self.first_update_at = None
        self.rt.metrics.round.set(round_index)

    def on_hello(self, child: str, msg: Message) -> None:
        """Answer with the dense model a child on another round, or one whose update this node
        lacks (it restarted and lost it: the child re-sends its cached update on a model it answered)."""
        if self.done_reason is not None:
            stop = self.message("stop", max(self.round, 0), {"reason": self.done_reason}, {})
            self.send_child(child, encode_message(stop))
            return
        if self.theta is None:
            return
        if msg.round == 0 and self.round > 0 and self.book.reinstate(child):
            # Every process starts on round 0: this is a replacement of a quarantined node.
            log.info("%s: %s came back as a new process: reinstated on probation", self.rt.node.id, child)
        lost = msg.meta["answered"] and child not in self.pending and not self.closed
        if msg.round != self.round or lost:
            self.send_child(child, self.dense_model())
            self.child_round[child] = self.round

    def on_child(self, msg: Message) -> None:
        child = msg.node
        if child not in self.worker_count:
            self.rt.metrics.dropped("unknown-node")
            return
        if msg.type == "hello":
            self.on_hello(child, msg)
            return
        if msg.type != "update":
            self.rt.metrics.dropped("unexpected-type")
            return
        if child not in self.children:
            self.rt.metrics.dropped("not-assigned")  # reshuffled: it reports elsewhere this round
            return
        for record in msg.meta["nodes"]:
            # With reshuffling several aggregators score the same worker: keep the latest view.
            known = self.subtree_records.get(record["id"])
            if known is None or record["lastRound"] >= known["lastRound"]:
                self.subtree_records[record["id"]] = record
        self.rt.traffic.merge(msg.meta["traffic"])
        if self.theta is None or msg.round != self.round or self.closed:
            self.rt.metrics.dropped("late" if msg.round <= self.round else "future-round")
            return
        if child in self.pending:
            self.rt.metrics.dropped("duplicate")
            return
        if self.book.is_quarantined(child):
            self.rt.metrics.dropped("quarantined")
            return
        payload = msg.tensors.get("delta")
        votes = msg.tensors.get("votes")
        if payload is None or set(msg.tensors) - {"delta", "votes"}:
            self.rt.metrics.dropped("shape")
            return
        if votes is not None and (not isinstance(votes, SparseVector) or votes.numel != self.theta.numel()):
            self.rt.metrics.dropped("shape")
            return
        if self.support is not None and not (
            isinstance(payload, SparseVector) and on_support(payload, self.support)
        ):
            self.rt.metrics.dropped("support")
            return
        numel = payload.numel if isinstance(payload, SparseVector) else payload.numel()
        if numel != self.theta.numel():
            self.rt.metrics.dropped("shape")
            return
        vector = (
            payload.to_dense() if isinstance(payload, SparseVector) else payload.to(torch.float32).flatten()
        )
        if msg.meta["workers"] > self.worker_count[child]:
            self.rt.metrics.dropped("field")
            return
        if not self.pending:
            self.first_update_at = time.monotonic()
        self.pending[child] = ChildUpdate(
            vector, msg.meta["samples"], msg.meta["workers"], float(msg.meta["loss"]), votes
        )

    # -- closing a round ------------------------------------------------------------------------

    def expected(self) -> list[str]:
        return [c for c in self.children if not self.book.is_quarantined(c)]

    def quorum_reached(self) -> bool:
        """Root: `spec.quorum` workers in all. Interior: the same fraction of its live children, and
        at least as many inputs as its rule needs to tolerate f (never a robust rule over one input)."""
        if self.rt.node.role != "root":
            expected = len(self.expected())
            fraction = self.spec.quorum / self.spec.workers.replicas
            rule = self.spec.robustness.rule
            needed = max(math.ceil(fraction * expected), _needs(rule, self.spec.robustness.f))
            return len(self.pending) >= max(1, min(expected, needed))
        live_workers = sum(self.worker_count[c] for c in self.expected())
        return sum(u.workers for u in self.pending.values()) >= min(self.spec.quorum, max(1, live_workers))

    def ready_to_close(self) -> bool:
        if self.theta is None or self.closed or not self.pending:
            return False
        if all(c in self.pending for c in self.expected()):
            return True
        waited = time.monotonic() - (self.first_update_at or time.monotonic())
        return waited >= self.deadline and self.quorum_reached()

    def combine(self) -> RoundResult:
        started = time.perf_counter()
        names = sorted(self.pending)
        updates = torch.stack([self.pending[c].vector for c in names])
        samples = torch.tensor([float(self.pending[c].samples) for c in names])
        reputations = torch.tensor([self.book.weight(c) for c in names])
        rules = self.spec.robustness
        # `mean` is FedAvg: weighted by samples, so a tree of means equals the flat mean.
        use_reputation = rules.reputation.enabled and rules.rule != "mean"
        weights = samples * reputations if use_reputation else samples
        bucket = next((int(p.param or 2) for p in rules.pre_aggregation if p.name == "bucketing"), 1)
        rule, f = feasible_rule(
            "weighted-mean" if rules.rule == "mean" else rules.rule, len(names), rules.f, bucket
        )
        result = robust.aggregate(
            rule,
            updates,
            f=f,
            weights=weights,
            previous=self.previous_aggregate,
            pre_aggregation=[(p.name, p.param) for p in rules.pre_aggregation],
        )
        self.rt.metrics.aggregation_seconds.observe(time.perf_counter() - started)
        cos = cosines(updates, result.vector)
        if rules.reputation.enabled:
            mad = robust.mad_scores(updates) if len(names) >= 3 else torch.zeros(len(names))
            dup = duplicates(updates)
            for i, child in enumerate(names):
                obs = RoundObservation(
                    True, float(result.selected[i]), float(mad[i]), float(cos[i]), bool(dup[i])
                )
                self.book.observe(child, self.rt.tree.node(child).role, self.rt.node.id, obs, self.round)
            for child in self.expected():
                if child not in self.pending:
                    self.book.observe(
                        child,
                        self.rt.tree.node(child).role,
                        self.rt.node.id,
                        RoundObservation(False),
                        self.round,
                    )
            for child, rep in self.book.nodes.items():
                self.rt.metrics.reputation(child, rep.reputation)
        self.previous_aggregate = result.vector
        total = sum(self.pending[c].samples for c in names)
        loss = sum(self.pending[c].loss * self.pending[c].samples for c in names) / max(total, 1)
        return RoundResult(
            vector=result.vector,
            samples=total,
            workers=sum(self.pending[c].workers for c in names),
            loss=loss,
            contributors=tuple(names),
            agreement=float(cos.clamp_min(0).mean()),
            votes=merge_votes(
                [v for c in names if (v := self.pending[c].votes) is not None], self.rt.numel, self.k
            ),
        )

    def records(self) -> list[dict[str, Any]]:
        """Reputation records of this subtree: measured here for children, passed on from below."""
        merged = dict(self.subtree_records)
        merged.update({node_id: rep.record() for node_id, rep in self.book.nodes.items()})
        return [merged[k] for k in sorted(merged)]

    # -- the loop -------------------------------------------------------------------------------

    def run(self, sink: RoundSink) -> int:
        poller = zmq.Poller()
        poller.register(self.router, zmq.POLLIN)
        if self.dealer is not None:
            poller.register(self.dealer, zmq.POLLIN)
        last_heard = last_hello = 0.0
        resync_after = max(2.0, 2 * self.spec.training.round_deadline_seconds)
        job = self.rt.settings.job
        try:
            while self.stopped is None:
                now = time.monotonic()
                quiet = now - last_heard > resync_after and now - last_hello > HELLO_INTERVAL_S
                if self.dealer is not None and quiet:
                    meta = {"role": "aggregator", "answered": self.closed}
                    hello = self.message("hello", self.round, meta, {})
                    send(self.dealer, encode_message(hello), self.rt.metrics)
                    last_hello = now
                events = dict(poller.poll(POLL_MS))
                if self.router in events:
                    got = receive(self.router, self.rt.metrics, routed=True, job=job)
                    if got is not None:
                        self.rt.traffic.count(got.nbytes, got.dense_nbytes)
                        self.on_child(got.message)
                if self.dealer is not None and self.dealer in events:
                    got = receive(self.dealer, self.rt.metrics, routed=False, job=job)
                    if got is not None:
                        self.rt.traffic.count(got.nbytes, got.dense_nbytes)
                        last_heard = time.monotonic()
                        self.on_parent(got.message, got)
                if self.ready_to_close():
                    self.closed = True
                    self.rt.metrics.round_seconds.observe(time.monotonic() - self.round_started)
                    sink.round_closed(self, self.combine())
                sink_tick = getattr(sink, "tick", None)
                if sink_tick is not None:
                    sink_tick(self)
        finally:
            self.router.close(0)
            if self.dealer is not None:
                self.dealer.close(0)
            self.ctx.term()
        return 0

    def on_parent(self, msg: Message, got: Any) -> None:
        if msg.type == "stop":
            self.stop_children(msg.meta["reason"])
            self.stopped = msg.meta["reason"]
            return
        if msg.type != "model":
            self.rt.metrics.dropped("unexpected-type")
            return
        if msg.round == self.round and self.theta is not None:
            # The parent re-sent this round: it lost our update (it restarted). Send it again.
            if self.closed and self.forwarded is not None and self.dealer is not None:
                send(self.dealer, self.forwarded, self.rt.metrics)
            return
        base_round = self.round
        support = None
        if self.support is not None:  # checked before θ changes, so a bad message changes nothing
            support = valid_support(msg.tensors.get("support"), self.rt.numel, self.k)
            if support is None:
                self.rt.metrics.dropped("support")
                return
        theta = apply_model(self.theta, self.round, msg)
        if theta is None:
            self.rt.metrics.dropped("model-mismatch")
            return
        if support is not None:
            self.support = support
        self.theta = theta
        self.open_round(msg.round)
        self.forwarded = None
        delta = encode_message(msg) if msg.meta["base_round"] >= 0 else None
        self.broadcast(delta, base_round)


class ForwardUp:
    """Interior aggregators: send the round's aggregate to the parent."""

    def round_closed(self, agg: Aggregator, result: RoundResult) -> None:
        meta = {
            "samples": result.samples,
            "workers": result.workers,
            "loss": result.loss,
            "nodes": agg.records(),
            "traffic": agg.rt.traffic.entries(),
        }
        tensors: dict[str, Any] = {"delta": to_wire(result.vector, wire_dtype(agg.spec))}
        if agg.support is not None:
            # On the support, kept sparse even when nearly full, so the parent's support check holds.
            tensors["delta"] = sparsify(result.vector, agg.support, wire_dtype(agg.spec))
        if result.votes is not None:
            tensors["votes"] = result.votes
        msg = agg.message("update", agg.round, meta, tensors)
        agg.forwarded = encode_message(msg)
        if agg.dealer is not None:
            send(agg.dealer, agg.forwarded, agg.rt.metrics)
