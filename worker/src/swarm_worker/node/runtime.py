"""What every node process shares: its settings, task, device, metrics server and traffic accounting.

`NodeSettings` is the one typed config object of a node process (from `swarm node`'s flags and the
manifest), validated once at start.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from swarm_contract.consensus import replica_index
from swarm_contract.manifest import Manifest
from swarm_contract.spec import SwarmSpec
from swarm_contract.topology import ROOT_ID, Tree, TreeNode, plan_tree
from swarm_worker.node.device import node_device
from swarm_worker.node.telemetry import NodeMetrics, StatusServer
from swarm_worker.node.traffic import Traffic
from swarm_worker.protocol.curve import NodeKeys, load_node_keys
from swarm_worker.training.steps import flat_parameters
from swarm_worker.training.tasks import TaskBundle, build_task, initial_model

log = logging.getLogger("swarm")
#: Exit status of a node stopped by SIGTERM or SIGINT before training ended (128 + SIGTERM, as a
#: shell reports it): non-zero, so neither the launcher nor the operator mistakes it for the end.
SIGNALLED_EXIT_CODE = 143


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
    #: A child of the root with `consensus.replicas` > 1: replica id -> host:port of each replica's
    #: data port (`--replicas`; node.parents talks to all of them). Empty otherwise.
    replicas: dict[str, str] = field(default_factory=dict)
    #: The job's CURVE key directory (`--keys`); None: plain links.
    keys: Path | None = None
    #: A root replica's consensus port (`--consensus-port`, R > 1); its `peers` are then the
    #: other replicas' consensus ports.
    consensus_port: int | None = None

    @property
    def spec(self) -> SwarmSpec:
        return self.manifest.spec

    @property
    def job(self) -> str:
        return self.manifest.name


class NodeRuntime:
    """Task, tree position, device, metrics and status server of one node process.

    The model lives on `device` (`node.device.node_device`: the spec's choice for this role). It is
    built on the CPU from the shared seed and then moved: CUDA's initialisation kernels draw other
    numbers than the CPU's, so a model built on the GPU would start every device on a different θ_0.
    A move is a bit-exact copy, hence θ_0 is the same bits on every node, whatever its device.
    """

    def __init__(self, settings: NodeSettings, stop_requested: threading.Event | None = None) -> None:
        self.settings = settings
        #: Set when the process is asked to stop (SIGTERM or SIGINT, installed by `swarm node`): every
        #: role loop checks it each poll turn and returns (the root writes its checkpoint first).
        self.stop_requested = threading.Event() if stop_requested is None else stop_requested
        spec = settings.spec
        self.tree: Tree = plan_tree(spec.workers.replicas, spec.topology.branching_factor)
        # A root replica (`root-1`, ...) is the tree's root; its own id names its keys and metrics.
        replica = replica_index(settings.node_id, spec.consensus.replicas) is not None
        self.node: TreeNode = self.tree.node(ROOT_ID if replica else settings.node_id)
        #: This node's CURVE keys, read once at start (KeyFileError names a missing file).
        self.keys: NodeKeys | None = (
            load_node_keys(
                settings.keys,
                self.tree,
                settings.node_id,
                reshuffle=spec.topology.reshuffle,
                replicas=spec.consensus.replicas,
            )
            if settings.keys is not None
            else None
        )
        self.bundle: TaskBundle = build_task(spec.task.name, spec.task.options, spec.training.seed)
        self.device: torch.device = node_device(spec, self.node.role)
        self.model = initial_model(self.bundle, spec.training.seed).to(self.device)
        self.numel = sum(p.numel() for p in self.model.parameters())
        self.metrics = NodeMetrics(settings.node_id, self.node.role)
        self.server = StatusServer(self.metrics, settings.metrics_host, settings.metrics_port)
        self.traffic = Traffic(self.node.id)
        self.started = time.monotonic()

    def initial_theta(self) -> torch.Tensor:
        """θ_0 (d,) fp32 on this node's device, bit-identical on every node (see the class)."""
        return flat_parameters(self.model)

    def start(self) -> None:
        self.server.start()
        log.info(
            "%s (%s) up on %s: parent=%s, children=%d, metrics on :%d",
            self.node.id,
            self.node.role,
            self.device,
            self.settings.parent,
            len(self.node.children),
            self.server.port,
        )

    def close(self) -> None:
        self.server.close()
