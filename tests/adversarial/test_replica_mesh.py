"""The replica mesh's gate (protocol.gate with `admitted=keys.replica_peers`): a root replica's
consensus port, a ROUTER on a real TCP port on loopback in a context of its own beside the data
port's, admits the other replicas under their own ids and refuses its children, whose keys the data
port admits. R = 4 replicas over plan_tree(3, 4): the three workers report to every replica."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import zmq

from swarm_contract.topology import plan_tree
from swarm_worker.protocol.curve import NodeKeys, load_node_keys, write_job_keys
from swarm_worker.protocol.gate import ChildGate
from swarm_worker.protocol.transport import bind_router, receive
from tests.adversarial.rogue import Rogue
from tests.polling import poll

pytestmark = pytest.mark.integration

HOST = "127.0.0.1"
JOB = "mesh"
TREE = plan_tree(3, 4)
REPLICAS = 4


class _Count:
    def __init__(self) -> None:
        self.total = 0.0

    def inc(self, amount: float = 1) -> None:
        self.total += amount


class Port(threading.Thread):
    """One ROUTER behind one gate, in its own context: records (sender, type) of what it admits."""

    def __init__(self, keys: NodeKeys, admitted: dict[str, bytes] | None) -> None:
        super().__init__(name="mesh-port", daemon=True)
        self.bytes_sent, self.bytes_received = _Count(), _Count()
        self.drops: Counter[str] = Counter()
        self._lock = threading.Lock()
        self.ctx: zmq.Context[Any] = zmq.Context()
        self.gate = ChildGate(self.ctx, keys, on_refused=self.dropped, admitted=admitted)
        self.router = bind_router(self.ctx, HOST, 0, 1 << 20, gate=self.gate)
        self.address = self.router.getsockopt_string(zmq.LAST_ENDPOINT).removeprefix("tcp://")
        self.admitted: list[tuple[str, str]] = []
        self.stopping = threading.Event()

    def dropped(self, reason: str) -> None:
        with self._lock:
            self.drops[reason] += 1

    def run(self) -> None:
        while not self.stopping.is_set():
            if self.router.poll(50) and (got := receive(self.router, self, routed=True, job=JOB)):
                self.admitted.append((got.message.node, got.message.type))

    def close(self) -> None:
        self.stopping.set()
        self.join()
        self.gate.close()
        self.router.close(0)
        self.ctx.term()


@pytest.fixture
def keys_dir(tmp_path: Path) -> Path:
    return write_job_keys(tmp_path / "keys", TREE, REPLICAS)


@pytest.fixture
def ports(keys_dir: Path) -> Iterator[tuple[Port, Port]]:
    """root-2's data port (its children) and consensus port (the other replicas), side by side."""
    keys = load_node_keys(keys_dir, TREE, "root-2", reshuffle=False, replicas=REPLICAS)
    data, mesh = Port(keys, None), Port(keys, keys.replica_peers)
    data.start()
    mesh.start()
    try:
        yield data, mesh
    finally:
        mesh.close()
        data.close()


def keys_of(keys_dir: Path, node_id: str) -> NodeKeys:
    return load_node_keys(keys_dir, TREE, node_id, reshuffle=False, replicas=REPLICAS)


def say_hello(port: Port, keys_dir: Path, node_id: str) -> None:
    """Dial `port` as `node_id` with its own keys (a replica as a mesh peer, a child as a child)."""
    keys = keys_of(keys_dir, node_id)
    curve = keys.peer_client("root-2") if node_id.startswith("root") else keys.client("root-2")
    with Rogue(port.address, node_id, JOB, curve=curve) as peer:
        peer.hello(0)
        poll(
            lambda: f"{node_id}'s hello or a refusal, have {port.admitted} and {dict(port.drops)}",
            lambda: (node_id, "hello") in port.admitted or port.drops["unknown-key"] >= 1,
            timeout=20,
        )


def test_the_consensus_port_admits_the_other_replicas_only(ports: tuple[Port, Port], keys_dir: Path) -> None:
    data, mesh = ports
    say_hello(mesh, keys_dir, "root")
    say_hello(mesh, keys_dir, "root-3")
    assert mesh.admitted == [("root", "hello"), ("root-3", "hello")]
    # A child holds root-2's public key (root-2 is one of its parents) but is no replica.
    say_hello(mesh, keys_dir, "worker-1")
    assert set(mesh.drops) == {"unknown-key"}
    # The same child reaches the data port, where a replica's key is refused in turn.
    say_hello(data, keys_dir, "worker-1")
    assert data.admitted == [("worker-1", "hello")]
    say_hello(data, keys_dir, "root-3")
    assert data.admitted == [("worker-1", "hello")]
    assert set(data.drops) == {"unknown-key"}
