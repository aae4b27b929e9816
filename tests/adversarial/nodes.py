"""One real node process for the rogue to talk to, and a stand-in parent above it.

`node_process` starts one `swarm node` (the root, or an interior aggregator) with the argv `swarm run`
gives it (swarm_contract.command.node_argv), on loopback ports of its own, and waits until it serves
/healthz. The rest of its tree does not run: the test's peers (tests/adversarial/rogue.py) take the
children's slots, and `FakeParent` the parent's, so every message the node sees is one the test sent.
"""

from __future__ import annotations

import json
import os
import subprocess
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml
import zmq

from swarm_contract.command import node_argv
from swarm_contract.manifest import parse_manifest
from swarm_worker.local.launcher import NODE_PROGRAM, SOURCE_ROOTS
from swarm_worker.local.ports import free_ports
from swarm_worker.protocol.codec import Message, decode, encode
from tests.integration.swarm_helpers import metric_samples
from tests.polling import poll

HOST = "127.0.0.1"
#: θ's length for the digits MLP (64-128-10) that every manifest here trains.
NUMEL = 9_610


def manifest_doc(name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "swarm.ncrsh.io/v1alpha1",
        "kind": "SwarmTraining",
        "metadata": {"name": name},
        "spec": spec,
    }


@dataclass
class Node:
    proc: subprocess.Popen[bytes]
    node_id: str
    data_port: int
    metrics_port: int
    log_path: Path
    workdir: Path

    @property
    def address(self) -> str:
        return f"{HOST}:{self.data_port}"

    def alive(self) -> None:
        assert self.proc.poll() is None, f"{self.node_id} died:\n{self.log_path.read_text()[-4000:]}"

    def get(self, path: str) -> bytes:
        with urllib.request.urlopen(f"http://{HOST}:{self.metrics_port}{path}", timeout=10) as r:
            assert r.status == 200, f"GET {path}: {r.status}"
            body: bytes = r.read()
            return body

    def status(self) -> dict[str, Any]:
        """The root's GET /status (swarm_contract.records.RootStatus)."""
        out: dict[str, Any] = json.loads(self.get("/status"))
        return out

    def dropped(self) -> dict[str, int]:
        """swarm_messages_dropped_total by reason, from /metrics."""
        return {
            s.labels["reason"]: int(s.value)
            for s in metric_samples(self.metrics_port, "swarm_messages_dropped")
            if s.name.endswith("_total")
        }

    def wait_dropped(self, expected: dict[str, int], timeout: float = 60) -> None:
        """Until /metrics counts exactly `expected` by reason (counters only grow: an overshoot fails)."""
        seen: dict[str, int] = {}

        def counted() -> bool:
            self.alive()
            seen.clear()
            seen.update(self.dropped())
            over = {k: v for k, v in seen.items() if v > expected.get(k, 0)}
            assert not over, f"{self.node_id} dropped more than {expected}: {seen}"
            return seen == expected

        poll(lambda: f"drops {expected} at {self.node_id}, have {seen}", counted, timeout=timeout)

    def memory_kib(self, field: str = "VmRSS") -> int:
        """A /proc/<pid>/status memory figure of the node's process, in KiB (VmRSS, VmHWM)."""
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1])
        raise AssertionError(f"no {field} in /proc/{self.proc.pid}/status")


@contextmanager
def node_process(
    tmp_path: Path, doc: dict[str, Any], node_id: str, *, parent: str | None = None, keys: Path | None = None
) -> Iterator[Node]:
    """`swarm node --node-id node_id` of the job `doc`, its parent (if any) at `parent` (host:port)."""
    manifest_path = tmp_path / "manifest.yaml"
    manifest_path.write_text(yaml.safe_dump(doc))
    data_port, metrics_port = free_ports(HOST, 2)

    def address(other: str) -> str:
        assert parent is not None, f"{node_id} has a parent ({other}): pass its address"
        return parent

    argv = node_argv(
        parse_manifest(doc).spec,
        node_id,
        address=address,
        manifest=str(manifest_path),
        bind_port=data_port,
        metrics_port=metrics_port,
        workdir=str(tmp_path),
        program=NODE_PROGRAM,
        bind_host=HOST,
        metrics_host=HOST,
        threads=1,
        keys=None if keys is None else str(keys),
    )
    # The checkout's sources, as `swarm run` gives its nodes (local/launcher.py).
    pythonpath = os.pathsep.join(filter(None, [*SOURCE_ROOTS, os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": pythonpath}
    log_path = tmp_path / f"{node_id}.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=log, env=env)
    node = Node(proc, node_id, data_port, metrics_port, log_path, tmp_path)
    try:

        def serving() -> bool:
            node.alive()
            return node.get("/healthz") == b"ok"

        poll(f"{node_id} to serve /healthz", serving, timeout=120, interval=0.2, retry=(OSError,))
        yield node
    finally:
        proc.kill()
        proc.wait()


class FakeParent:
    """The parent's ROUTER, played by the test: it receives the node's UPDATEs (and HELLOs) and opens
    the node's next round with a dense MODEL, as the root would."""

    def __init__(self, job: str) -> None:
        self.job = job
        self.ctx: zmq.Context[Any] = zmq.Context()
        self.sock: zmq.Socket[Any] = self.ctx.socket(zmq.ROUTER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.port = self.sock.bind_to_random_port(f"tcp://{HOST}")
        self.address = f"{HOST}:{self.port}"

    def __enter__(self) -> FakeParent:
        return self

    def __exit__(self, *exc: object) -> None:
        self.sock.close(0)
        self.ctx.term()

    def expect_update(self, round_index: int, timeout: float = 60) -> Message:
        """The child's UPDATE for `round_index` (its HELLOs are skipped)."""
        while True:
            assert self.sock.poll(int(timeout * 1000)), f"no update for round {round_index} came up"
            msg = decode(self.sock.recv_multipart()[1:])
            if msg.type != "hello":
                assert (msg.type, msg.round) == ("update", round_index), (msg.type, msg.round)
                return msg

    def send_model(self, child: str, round_index: int, theta: torch.Tensor) -> None:
        """A dense MODEL for `round_index`: the child replaces θ by `theta` and opens that round."""
        meta = {"base_round": -1, "final": False}
        msg = Message("model", self.job, round_index, "root", meta, {"theta": theta})
        self.sock.send_multipart([child.encode(), *encode(msg)])
