"""The I/O shell of an aggregating node (interior aggregator or root) around `node.round.RoundState`.

One thread polls the children's ROUTER and, below the root, the parent's DEALERs (node.parents: one
per root replica for a child of the root; certificates checked, duplicates filtered). From a child: a
HELLO is answered (dense model, or STOP after the end), anything else goes to `RoundState.accept`
(a refusal is counted by reason). From the parent: MODEL r is applied (`node.model_sync`),
forwarded to every child (the same delta frames to a child known to hold the base round, else the
dense model, which carries the certificate of the round held) and opens round r; a MODEL for the
round already held means the parent lost this node's update: it is sent again; STOP is passed down
and ends the loop. When `RoundState.ready`, the round is closed and its result handed to the
`RoundSink` (roles.aggregator sends it up, roles.root commits it), which sees this node only
through `Links`. A SIGTERM ends the loop within one poll, after the sink's `stopping`.

θ and the round's updates live on the node's device (`NodeRuntime.device`); what goes on the wire
is copied to the host. At start the round's aggregation memory is checked against what the device
has (`node.aggregation_memory`): a spec that cannot fit is refused with a one-line error.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Protocol

import torch
import zmq

from swarm_worker.maths.support import valid_support
from swarm_worker.node.aggregation_memory import aggregation_need, available_bytes, check_fits
from swarm_worker.node.model_sync import accepted_round, apply_model, model_digest
from swarm_worker.node.parents import ParentLinks, open_parents
from swarm_worker.node.round import RoundResult, RoundState
from swarm_worker.node.runtime import SIGNALLED_EXIT_CODE, NodeRuntime
from swarm_worker.protocol.codec import Message
from swarm_worker.protocol.gate import ChildGate
from swarm_worker.protocol.transport import (
    Encoded,
    Routes,
    bind_router,
    effective_max_message_bytes,
    encode_message,
    receive,
    send,
)

log = logging.getLogger("swarm.aggregator")
POLL_MS = 50
HELLO_INTERVAL_S = 1.0


class Links(Protocol):
    """What a round sink may do with its node: read the round state, talk to the tree, end it."""

    @property
    def state(self) -> RoundState: ...

    certificate: dict[str, Any] | None

    def message(self, msg_type: str, rnd: int, meta: dict[str, Any], tensors: dict[str, Any]) -> Message: ...

    def send_up(self, update: Message) -> None: ...

    def advance(self, round_index: int, theta: torch.Tensor) -> None: ...

    def broadcast(self, delta: Encoded | None, base_round: int) -> None: ...

    def finish(self, reason: str) -> None: ...

    def exit(self, reason: str) -> None: ...


class RoundSink(Protocol):
    """Where a closed round goes: up to the parent (interior) or into the outer step (root)."""

    def round_closed(self, links: Links, result: RoundResult) -> None: ...

    def tick(self, links: Links, now: float) -> None: ...

    def stopping(self, links: Links) -> None: ...


class AggregatorShell:
    """Sockets and the poll loop of one aggregating node; the round logic is `self.state`'s."""

    def __init__(self, rt: NodeRuntime, theta: torch.Tensor | None, round_index: int) -> None:
        self.rt = rt
        spec = rt.settings.spec
        children_aggregate = any(rt.tree.node(c).role != "worker" for c in rt.node.children)
        need = aggregation_need(spec, rt.numel, len(rt.node.children), children_aggregate)
        check_fits(need, *available_bytes(rt.device), rt.node.id)
        self._state = RoundState(
            spec, rt.tree, rt.node, rt.numel, rt.traffic, theta, round_index, time.monotonic(), rt.device
        )
        # Every process starts from θ_0 on round 0 (built from the shared seed, never sent).
        self.child_round: dict[str, int] = dict.fromkeys(self._state.worker_count, 0)
        self._dense_model: tuple[int, Encoded] | None = None
        self.ctx: zmq.Context[Any] = zmq.Context()
        max_bytes = effective_max_message_bytes(spec, rt.numel)
        keys = rt.keys
        # The ZAP handler before the bind: a CURVE ROUTER without one would admit any key.
        self.gate = ChildGate(self.ctx, keys, on_refused=rt.metrics.dropped) if keys is not None else None
        self.router = bind_router(
            self.ctx, rt.settings.bind_host, rt.settings.bind_port, max_bytes, gate=self.gate
        )
        #: Where each child is reached: its node id, or under CURVE the connection it proved its key on.
        self.routes = Routes(authenticated=keys is not None)
        self.parents = open_parents(self.ctx, rt, max_bytes)  # None for the root
        #: What the loop waits on; a subclass may register more sockets, which its sink's `tick` reads.
        self.poller = zmq.Poller()
        self.poller.register(self.router, zmq.POLLIN)
        if self.parents is not None:
            self.parents.register(self.poller)
        self.stopped: str | None = None
        #: This round's update as sent up, kept to re-send when the parent lost it.
        self.forwarded: Encoded | None = None
        #: Set once training ended: later HELLOs are answered with STOP.
        self.done_reason: str | None = None
        #: The certificate (wire form, protocol.certificate) of the round held: the dense model carries it.
        self.certificate: dict[str, Any] | None = None
        rt.metrics.round.set(round_index)

    # -- Links --------------------------------------------------------------------------------------

    @property
    def state(self) -> RoundState:
        return self._state

    def message(self, msg_type: str, rnd: int, meta: dict[str, Any], tensors: dict[str, Any]) -> Message:
        return Message(msg_type, self.rt.settings.job, rnd, self.rt.node.id, meta, tensors)

    def send_up(self, update: Message) -> None:
        if self.parents is not None:  # signed for root replicas, sent to each of them
            self.forwarded = self.parents.seal(update)
            self.parents.send(self.forwarded)

    def advance(self, round_index: int, theta: torch.Tensor) -> None:
        """Open `round_index` on θ = `theta` (the parent's model, or the root's outer step)."""
        self._state.open(round_index, theta, time.monotonic())
        self.forwarded = None
        self.rt.metrics.round.set(round_index)
        log.info("%s: round %d: model %s", self.rt.node.id, round_index, model_digest(theta))

    def broadcast(self, delta: Encoded | None, base_round: int) -> None:
        """Send the open round down: `delta` to children known to hold `base_round`, the dense model
        to the others (a child that cannot apply a delta asks for the dense model)."""
        round_index = self._state.round
        for child in self._state.children:
            # Reshuffled children come from other groups: what this node last sent them is stale.
            known = base_round if self._state.reshuffle else self.child_round.get(child, base_round)
            fits = delta is not None and known == base_round
            self._send_child(child, delta if fits and delta is not None else self._dense())
            self.child_round[child] = round_index

    def finish(self, reason: str) -> None:
        """Training ended: STOP to every child now, and to any child that says HELLO later."""
        self.done_reason = reason
        stop = encode_message(self.message("stop", max(self._state.round, 0), {"reason": reason}, {}))
        for child in self._state.children:
            self._send_child(child, stop)

    def exit(self, reason: str) -> None:
        self.stopped = reason

    # -- messages -----------------------------------------------------------------------------------

    def _dense(self) -> Encoded:
        state = self._state
        assert state.theta is not None
        if self._dense_model is None or self._dense_model[0] != state.round:
            tensors: dict[str, Any] = {"theta": state.theta.cpu()}  # the codec reads host memory
            if state.support is not None:
                tensors["support"] = state.support.to(torch.int32)
            meta: dict[str, Any] = {"base_round": -1, "final": False}
            if self.certificate is not None:
                meta["cert"] = self.certificate
            msg = self.message("model", state.round, meta, tensors)
            self._dense_model = (state.round, encode_message(msg))
        return self._dense_model[1]

    def _send_child(self, child: str, encoded: Encoded) -> None:
        route = self.routes.of(child)
        if route is None:  # CURVE: not heard from yet; a child that hears nothing says HELLO
            return
        send(self.router, encoded, self.rt.metrics, identity=route)

    def on_child(self, msg: Message) -> None:
        child, state = msg.node, self._state
        if msg.type == "hello" and state.knows(child):
            if self.done_reason is not None:
                stop = self.message("stop", max(state.round, 0), {"reason": self.done_reason}, {})
                self._send_child(child, encode_message(stop))
                return
            reply = state.hello(child, msg.round, bool(msg.meta["answered"]))
            if reply.reinstated:
                log.info("%s: %s came back as a new process: reinstated on probation", self.rt.node.id, child)
            if reply.dense_model:
                self._send_child(child, self._dense())
                self.child_round[child] = state.round
            return
        invalid_before = state.invalid_records
        reason = state.accept(msg, time.monotonic())
        if reason is not None:
            self.rt.metrics.dropped(reason.value)
        for _ in range(state.invalid_records - invalid_before):
            self.rt.metrics.dropped("record")

    def on_parent(self, msg: Message) -> None:
        state = self._state
        if msg.type == "stop":
            self.finish(msg.meta["reason"])
            self.stopped = msg.meta["reason"]
            return
        if msg.type != "model":
            self.rt.metrics.dropped("unexpected-type")
            return
        if msg.round == state.round and state.theta is not None:
            # The parent re-sent this round: it lost our update (it restarted). Send it again.
            if state.closed and self.forwarded is not None and self.parents is not None:
                self.parents.send(self.forwarded)
            return
        base_round = state.round
        support = None
        if state.support is not None:  # checked before θ changes, so a bad message changes nothing
            support = valid_support(msg.tensors.get("support"), self.rt.numel, state.k)
            if support is None:
                self.rt.metrics.dropped("support")
                return
        theta = apply_model(state.theta, state.round, msg)
        if theta is None:
            self.rt.metrics.dropped("model-mismatch")
            return
        if support is not None:
            state.support = support
        delta = encode_message(msg) if msg.meta["base_round"] >= 0 else None
        self.certificate = msg.meta.get("cert")  # certified by node.parents: the dense model's
        self.advance(accepted_round(self.rt.metrics, self.rt.node.id, base_round, msg), theta)
        self.broadcast(delta, base_round)

    # -- the loop -----------------------------------------------------------------------------------

    def run(self, sink: RoundSink) -> int:
        poller = self.poller
        # One HELLO at start, then only after silence counted from the start (see roles/worker.py).
        last_heard, last_hello, greeted = time.monotonic(), 0.0, False
        resync_after = max(2.0, 2 * self.rt.settings.spec.training.round_deadline_seconds)
        job, metrics, state = self.rt.settings.job, self.rt.metrics, self._state
        try:
            while self.stopped is None:
                if self.rt.stop_requested.is_set():
                    sink.stopping(self)
                    log.info("%s: stopping on a signal at round %d", self.rt.node.id, state.round)
                    return SIGNALLED_EXIT_CODE
                now = time.monotonic()
                quiet = now - last_heard > resync_after and now - last_hello > HELLO_INTERVAL_S
                if self.parents is not None and (quiet or not greeted):
                    meta = {"role": "aggregator", "answered": state.closed}
                    self.parents.send(encode_message(self.message("hello", state.round, meta, {})))
                    last_hello, greeted = now, True
                events = dict(poller.poll(POLL_MS))
                if self.router in events:
                    got = receive(self.router, metrics, routed=True, job=job)
                    if got is not None:
                        self.routes.learn(got)
                        self.rt.traffic.count(got.nbytes, got.dense_nbytes)
                        self.on_child(got.message)
                if self.parents is not None and self._from_parents(self.parents, events):
                    last_heard = time.monotonic()
                if state.ready(time.monotonic()):
                    self._close_round(sink)
                sink.tick(self, time.monotonic())
        finally:
            if self.gate is not None:
                self.gate.close()  # its threads hold sockets of ctx: before ctx.term()
            self.router.close(0)
            if self.parents is not None:
                self.parents.close()
            self.ctx.term()
        return 0

    def _from_parents(self, parents: ParentLinks, events: dict[Any, int]) -> bool:
        """Act on what the parents sent (node.parents filtered it); whether any was heard."""
        heard = False
        for sock in parents.ready(events):  # one at a time: each against the round now held
            got = parents.receive(sock, self._state.round)
            heard = heard or got is not None
            if got is not None and got.message is not None and self.stopped is None:
                self.on_parent(got.message)
        return heard

    def _close_round(self, sink: RoundSink) -> None:
        state, metrics = self._state, self.rt.metrics
        metrics.round_seconds.observe(time.monotonic() - state.opened_at)
        started = time.perf_counter()
        result = state.close()
        metrics.aggregation_seconds.observe(time.perf_counter() - started)
        for child, rep in state.book.nodes.items():
            metrics.reputation(child, rep.reputation)
        sink.round_closed(self, result)
