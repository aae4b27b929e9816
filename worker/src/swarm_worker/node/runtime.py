"""What every node process shares: its settings, task, metrics server and traffic accounting.

`NodeSettings` is the one typed config object of a node process (from `swarm node`'s flags and the
manifest), validated once at start.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from swarm_contract.spec import Manifest, SwarmSpec
from swarm_contract.topology import Tree, TreeNode, plan_tree
from swarm_worker.node.telemetry import NodeMetrics, StatusServer
from swarm_worker.training.steps import flat_parameters
from swarm_worker.training.tasks import TaskBundle, build_task, initial_model

log = logging.getLogger("swarm")


@dataclass(frozen=True)
class NodeSettings:
    manifest: Manifest
    node_id: str
    #: host:port of the parent's ROUTER; None for the root.
    parent: str | None
    bind_host: str
    bind_port: int
    metrics_host: str
    metrics_port: int
    workdir: Path
    #: Workers with `topology.reshuffle`: node id -> host:port of every bottom aggregator.
    peers: dict[str, str] = field(default_factory=dict)

    @property
    def spec(self) -> SwarmSpec:
        return self.manifest.spec

    @property
    def job(self) -> str:
        return self.manifest.name


@dataclass
class Traffic:
    """Bytes received per process incarnation, merged up the tree (max of cumulative counters)."""

    node_id: str
    incarnation: int = field(default_factory=lambda: time.time_ns() // 1_000_000)
    received: int = 0
    dense_received: int = 0
    known: dict[tuple[str, int], tuple[int, int]] = field(default_factory=dict)

    def count(self, nbytes: int, dense_nbytes: int) -> None:
        self.received += nbytes
        self.dense_received += dense_nbytes

    def merge(self, entries: list[list[object]]) -> None:
        for node_id, inc, got, dense in entries:
            key = (str(node_id), int(inc))  # type: ignore[call-overload]
            old = self.known.get(key, (0, 0))
            self.known[key] = (max(old[0], int(got)), max(old[1], int(dense)))  # type: ignore[call-overload]

    def entries(self) -> list[list[object]]:
        own = {(self.node_id, self.incarnation): (self.received, self.dense_received)}
        merged = {**self.known, **own}
        return [[k[0], k[1], v[0], v[1]] for k, v in sorted(merged.items())]

    def totals(self) -> tuple[int, int]:
        entries = self.entries()
        return sum(int(e[2]) for e in entries), sum(int(e[3]) for e in entries)  # type: ignore[call-overload]


class NodeRuntime:
    """Task, tree position, metrics and status server of one node process."""

    def __init__(self, settings: NodeSettings) -> None:
        self.settings = settings
        spec = settings.spec
        self.tree: Tree = plan_tree(spec.workers.replicas, spec.topology.branching_factor)
        self.node: TreeNode = self.tree.node(settings.node_id)
        self.bundle: TaskBundle = build_task(spec.task.name, spec.task.options, spec.training.seed)
        self.model = initial_model(self.bundle, spec.training.seed)
        self.numel = sum(p.numel() for p in self.model.parameters())
        self.metrics = NodeMetrics(self.node.id, self.node.role)
        self.server = StatusServer(self.metrics, settings.metrics_host, settings.metrics_port)
        self.traffic = Traffic(self.node.id)
        self.started = time.monotonic()

    def initial_theta(self) -> torch.Tensor:
        return flat_parameters(self.model)

    def start(self) -> None:
        self.server.start()
        log.info(
            "%s (%s) up: parent=%s, children=%d, metrics on :%d",
            self.node.id,
            self.node.role,
            self.settings.parent,
            len(self.node.children),
            self.server.port,
        )

    def close(self) -> None:
        self.server.close()
