"""Identity under CURVE: a parent's ROUTER behind a ChildGate (protocol.gate), on a real TCP port on
loopback, with the transport's own `bind_router` / `receive`, and peers dialling
it from their own ZeroMQ contexts (tests/adversarial/rogue.py): an honest child, a peer without a
key, a peer with a key of its own outside the tree, and a peer that holds worker-1's key and says it
is worker-2. The parent answers an admitted HELLO with the dense model, as an aggregator does.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
import zmq

from swarm_contract.topology import ROOT_ID, plan_tree
from swarm_worker.protocol.codec import Message
from swarm_worker.protocol.curve import ClientKeys, NodeKeys, load_node_keys, write_job_keys
from swarm_worker.protocol.gate import ChildGate
from swarm_worker.protocol.transport import Routes, bind_router, encode_message, receive, send
from tests.adversarial.rogue import Rogue, dense_of, random_sparse
from tests.polling import poll

pytestmark = pytest.mark.integration

HOST = "127.0.0.1"
JOB = "curve"
NUMEL = 1_000
#: The root with three workers below it (replicas <= branching: no interior aggregator).
TREE = plan_tree(3, 4)


class _Count:
    def __init__(self) -> None:
        self.total = 0.0

    def inc(self, amount: float = 1) -> None:
        self.total += amount


class Wire:
    """transport.WireCounters for the test: drops by reason, from any thread."""

    def __init__(self) -> None:
        self.bytes_sent, self.bytes_received = _Count(), _Count()
        self.drops: Counter[str] = Counter()
        self._lock = threading.Lock()

    def dropped(self, reason: str) -> None:
        with self._lock:
            self.drops[reason] += 1


class Parent(threading.Thread):
    """The root's data port: records every message it admits, answers a HELLO with the model."""

    def __init__(self, keys: NodeKeys) -> None:
        super().__init__(name="curve-parent", daemon=True)
        self.wire = Wire()
        self.ctx: zmq.Context[Any] = zmq.Context()
        self.gate = ChildGate(self.ctx, keys, on_refused=self.wire.dropped)
        self.router = bind_router(self.ctx, HOST, 0, 1 << 20, gate=self.gate)
        self.address = self.router.getsockopt_string(zmq.LAST_ENDPOINT).removeprefix("tcp://")
        self.admitted: list[tuple[str, str]] = []
        self.routes = Routes(authenticated=True)
        self.stopping = threading.Event()
        model = Message(
            "model", JOB, 0, ROOT_ID, {"base_round": -1, "final": False}, {"theta": torch.zeros(NUMEL)}
        )
        self.model = encode_message(model)

    def run(self) -> None:
        while not self.stopping.is_set():
            if not self.router.poll(50):
                continue
            got = receive(self.router, self.wire, routed=True, job=JOB)
            if got is None:
                continue
            self.routes.learn(got)
            self.admitted.append((got.message.node, got.message.type))
            if got.message.type == "hello":
                send(self.router, self.model, self.wire, identity=self.routes.of(got.message.node))

    def close(self) -> None:
        self.stopping.set()
        self.join()
        self.gate.close()
        self.router.close(0)
        self.ctx.term()

    def wait_drop(self, reason: str) -> None:
        poll(
            lambda: f"a drop for {reason!r}, have {dict(self.wire.drops)}",
            lambda: self.wire.drops[reason] >= 1,
            timeout=20,
        )


@pytest.fixture
def keys_dir(tmp_path: Path) -> Path:
    return write_job_keys(tmp_path / "keys", TREE)


@pytest.fixture
def parent(keys_dir: Path) -> Iterator[Parent]:
    server = Parent(load_node_keys(keys_dir, TREE, ROOT_ID, reshuffle=False))
    server.start()
    try:
        yield server
    finally:
        server.close()


def child_keys(keys_dir: Path, node_id: str) -> ClientKeys:
    return load_node_keys(keys_dir, TREE, node_id, reshuffle=False).client(ROOT_ID)


def outsider_keys(keys_dir: Path) -> ClientKeys:
    """A valid key pair of its own, and the root's public key (public: anyone may know it)."""
    public, secret = zmq.curve_keypair()
    return ClientKeys(
        public=public, secret=secret, server=(keys_dir / f"{ROOT_ID}.public").read_text().strip().encode()
    )


def test_the_honest_child_gets_through_with_its_id(parent: Parent, keys_dir: Path) -> None:
    with Rogue(parent.address, "worker-0", JOB, curve=child_keys(keys_dir, "worker-0")) as child:
        child.hello(0)
        model = child.expect("model", timeout=20)
        assert model.node == ROOT_ID
        assert dense_of(model.tensors["theta"]).numel() == NUMEL
        child.update(0, random_sparse(NUMEL, seed=1))
        poll("worker-0's update", lambda: ("worker-0", "update") in parent.admitted, timeout=20)
    assert parent.admitted == [("worker-0", "hello"), ("worker-0", "update")]
    assert sum(parent.wire.drops.values()) == 0


def test_a_peer_without_a_key_gets_nothing_through(parent: Parent) -> None:
    with Rogue(parent.address, "worker-0", JOB) as plain:
        plain.hello(0)
        plain.update(0, random_sparse(NUMEL, seed=1))
        parent.wait_drop("unauthenticated")
        assert plain.receive(timeout=0.5) is None, "a peer without CURVE got an answer"
    assert parent.admitted == []


def test_a_key_outside_the_tree_is_refused_at_the_handshake(parent: Parent, keys_dir: Path) -> None:
    with Rogue(parent.address, "worker-1", JOB, curve=outsider_keys(keys_dir)) as outsider:
        outsider.hello(0)
        outsider.update(0, random_sparse(NUMEL, seed=2))
        parent.wait_drop("unknown-key")
        assert outsider.receive(timeout=0.5) is None, "a peer outside the tree got the model"
    assert parent.admitted == []
    assert set(parent.wire.drops) == {"unknown-key"}  # refused at the ZAP stage, no message read


def test_a_child_that_dials_with_the_wrong_server_key_fails_the_handshake(
    parent: Parent, keys_dir: Path
) -> None:
    """A client that expects another server (here: worker-2's key as the server key) never completes
    the handshake: the parent counts it, and nothing crosses."""
    own = child_keys(keys_dir, "worker-0")
    wrong = ClientKeys(public=own.public, secret=own.secret, server=zmq.curve_keypair()[0])
    with Rogue(parent.address, "worker-0", JOB, curve=wrong) as lost:
        lost.hello(0)
        parent.wait_drop("unauthenticated")
        assert lost.receive(timeout=0.5) is None
    assert parent.admitted == []


@pytest.mark.parametrize("routing_id", ["worker-2", "worker-1"], ids=["route-of-the-victim", "own-route"])
def test_a_stolen_key_cannot_speak_as_another_node(parent: Parent, keys_dir: Path, routing_id: str) -> None:
    """worker-1's key (a Byzantine worker's own, or stolen) with worker-2's id in the header: the
    connection is worker-1's, so every such message is dropped as `identity`, HELLOs included."""
    stolen = child_keys(keys_dir, "worker-1")
    with Rogue(parent.address, "worker-2", JOB, identity=routing_id, curve=stolen) as impostor:
        impostor.hello(0)
        impostor.update(0, random_sparse(NUMEL, seed=3))
        poll(
            lambda: f"two identity drops, have {dict(parent.wire.drops)}",
            lambda: parent.wire.drops["identity"] >= 2,
            timeout=20,
        )
        assert impostor.receive(timeout=0.5) is None, "the impostor got an answer as worker-2"
    assert parent.admitted == []


def test_a_curve_router_without_its_gate_admits_nobody(keys_dir: Path) -> None:
    """A ROUTER made a CURVE server by hand, with no ZAP handler in its context, lets CURVE clients
    in (libzmq) but stamps no User-Id: `receive` then refuses every message rather than trust it."""
    wire = Wire()
    ctx: zmq.Context[Any] = zmq.Context()
    router = ctx.socket(zmq.ROUTER)
    load_node_keys(keys_dir, TREE, ROOT_ID, reshuffle=False).apply_server(router)
    port = router.bind_to_random_port(f"tcp://{HOST}")
    try:
        with Rogue(f"{HOST}:{port}", "worker-0", JOB, curve=child_keys(keys_dir, "worker-0")) as child:
            child.hello(0)
            assert router.poll(20_000), "the hello never arrived"
            assert receive(router, wire, routed=True, job=JOB) is None
        assert wire.drops == Counter({"identity": 1})
    finally:
        router.close(0)
        ctx.term()


def test_a_member_cannot_take_a_siblings_route(parent: Parent, keys_dir: Path) -> None:
    """worker-1, with its own key, dials with the routing id `worker-2` (ROUTER_HANDOVER would hand
    it worker-2's route were routing ids node ids): worker-2 still hears its parent, worker-1 not."""
    with Rogue(parent.address, "worker-2", JOB, curve=child_keys(keys_dir, "worker-2")) as honest:
        honest.hello(1)
        honest.expect("model", timeout=20)
        with Rogue(
            parent.address, "worker-2", JOB, identity="worker-2", curve=child_keys(keys_dir, "worker-1")
        ) as thief:
            thief.hello(1)
            poll("the thief's hello dropped", lambda: parent.wire.drops["identity"] >= 1, timeout=20)
            honest.hello(1)
            honest.expect("model", timeout=20)
            assert thief.receive(timeout=0.5) is None, "the thief got worker-2's model"
    assert parent.admitted == [("worker-2", "hello"), ("worker-2", "hello")]
