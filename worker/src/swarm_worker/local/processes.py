"""The processes of a local swarm: one `swarm node` per node of the tree and per root replica, each
with its argv (swarm_contract.command.node_argv, what a pod runs), ports, log and working directory.

Every process gets a data and a metrics port on loopback (a worker binds no data port but is given
one like every node), and with root replicas (`consensus.replicas` R > 1) each replica a consensus
port. Replicas other than `root` work in replicas/<id>/ under the output directory: their own
metrics.jsonl, result.json and checkpoints.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from swarm_contract.command import is_root_replica, node_argv, process_ids, process_node
from swarm_contract.consensus import replica_ids
from swarm_contract.spec import SwarmSpec
from swarm_contract.topology import ROOT_ID, TreeNode
from swarm_worker.local.ports import named_ports


@dataclass
class NodeProcess:
    node: TreeNode
    argv: list[str]
    log_path: Path
    metrics_port: int
    workdir: Path
    #: The node's data port (a worker's unused).
    data_port: int
    proc: subprocess.Popen[bytes] | None = None
    restarts: int = 0
    restart_at: float | None = None
    exits: list[int] = field(default_factory=list)


def plan_processes(
    spec: SwarmSpec,
    output: Path,
    manifest: Path,
    keys: Path,
    host: str,
    threads: int,
    program: Sequence[str],
) -> dict[str, NodeProcess]:
    """Node id -> its process (not started), in the tree's order, then the extra replicas."""
    ids, replicas = process_ids(spec), replica_ids(spec.consensus.replicas)
    data_ports, metrics_ports, consensus_ports = named_ports(host, ids, ids, replicas)

    def consensus(node_id: str) -> tuple[int, Callable[[str], str]] | None:
        if not is_root_replica(spec, node_id):
            return None
        return consensus_ports[node_id], lambda r: f"{host}:{consensus_ports[r]}"

    processes: dict[str, NodeProcess] = {}
    for node_id in ids:
        replica = consensus(node_id) is not None
        workdir = output / "replicas" / node_id if replica and node_id != ROOT_ID else output
        argv = node_argv(
            spec, node_id, address=lambda n: f"{host}:{data_ports[n]}", manifest=str(manifest),
            bind_port=data_ports[node_id], metrics_port=metrics_ports[node_id], workdir=str(workdir),
            program=program, bind_host=host, metrics_host=host, threads=threads, keys=str(keys),
            consensus=consensus(node_id),
        )  # fmt: skip
        node = process_node(spec, node_id)
        log = output / "logs" / f"{node_id}.log"
        ports = metrics_ports[node_id], workdir, data_ports[node_id]
        processes[node_id] = NodeProcess(node, argv, log, *ports)
    return processes
