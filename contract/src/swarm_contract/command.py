"""The command line of one node process: the same function builds a pod's command and the argv
`swarm run` starts, so the two cannot drift apart.

    node_argv(spec, "worker-5", address=dns, manifest="/etc/swarm/manifest.yaml",
              bind_port=5555, metrics_port=9090, workdir="/var/lib/swarm")
    == ["swarm", "node", "--manifest", "/etc/swarm/manifest.yaml", "--node-id", "worker-5",
        "--parent", dns("agg-1"), "--bind-port", "5555", "--metrics-port", "9090",
        "--workdir", "/var/lib/swarm"]

`address(node_id) -> "host:port"` is how the deployment reaches a node's data port: in Kubernetes
the pod's stable DNS name through the headless Service, locally a loopback port. Workers of a
reshuffled tree (`topology.reshuffle`, not reporting to the root directly) get `--peers` with every
bottom aggregator, since their parent changes every round. With root replicas
(`consensus.replicas` R > 1) each child of the root gets `--replicas` with the data address of
every replica (`root`, `root-1`, ... : swarm_contract.consensus.replica_ids), which it all talks to;
`address` must resolve those ids too. A replica itself gets `--consensus-port` and `--peers` with
the other replicas' consensus ports. The flags are those of `swarm node`
(swarm_worker.cli); the ones a pod leaves to their defaults (`--bind-host`, `--metrics-host`,
`--threads`) come last and only when given. Pure.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace

from swarm_contract.consensus import replica_ids, replica_index
from swarm_contract.spec import SwarmSpec
from swarm_contract.topology import ROOT_ID, TreeNode, bottom_aggregators, plan_tree

#: The installed entry point, as a container runs it.
PROGRAM: tuple[str, ...] = ("swarm",)


def needs_peers(spec: SwarmSpec, node: TreeNode) -> bool:
    """Whether `node` reports to a different bottom aggregator each round (and needs them all)."""
    return node.role == "worker" and spec.topology.reshuffle and node.parent != ROOT_ID


def process_ids(spec: SwarmSpec) -> list[str]:
    """Every node process of the job: the tree's nodes, then the root's extra replicas (`root-1`,
    ...: each binds a data port its children dial)."""
    tree = plan_tree(spec.workers.replicas, spec.topology.branching_factor)
    return [*tree.nodes, *replica_ids(spec.consensus.replicas)[1:]]


def process_node(spec: SwarmSpec, process_id: str) -> TreeNode:
    """The tree node a process runs as: its own, or for a root replica the root's under the
    replica's id (same role, level and children). KeyError for an id of neither."""
    tree = plan_tree(spec.workers.replicas, spec.topology.branching_factor)
    if process_id in tree.nodes:
        return tree.nodes[process_id]
    if replica_index(process_id, spec.consensus.replicas) is None:
        raise KeyError(f"no node or root replica {process_id!r} in the job")
    return replace(tree.node(ROOT_ID), id=process_id)


def is_root_replica(spec: SwarmSpec, node_id: str) -> bool:
    """Whether `node_id` is one of R > 1 root replicas (which talk to each other on their consensus
    ports); with one root, `root` is not."""
    return spec.consensus.replicas > 1 and replica_index(node_id, spec.consensus.replicas) is not None


def needs_replicas(spec: SwarmSpec, node: TreeNode) -> bool:
    """Whether `node` reports to the root's replicas (and needs every replica's address)."""
    return node.parent == ROOT_ID and spec.consensus.replicas > 1


def replica_addresses(spec: SwarmSpec, address: Callable[[str], str]) -> str:
    """`--replicas`' value: `root=host:port,root-1=host:port,...`, one per replica."""
    return ",".join(f"{r}={address(r)}" for r in replica_ids(spec.consensus.replicas))


def node_argv(
    spec: SwarmSpec,
    node_id: str,
    *,
    address: Callable[[str], str],
    manifest: str,
    bind_port: int,
    metrics_port: int,
    workdir: str,
    program: Sequence[str] = PROGRAM,
    bind_host: str | None = None,
    metrics_host: str | None = None,
    threads: int | None = None,
    keys: str | None = None,
    consensus: tuple[int, Callable[[str], str]] | None = None,
) -> list[str]:
    """The argv of node `node_id` of the job `spec` describes (a worker binds no port, but gets
    `--bind-port` like every node: one shape for every node and both deployments). A root replica
    (R > 1) needs `consensus`: its consensus port, and how to reach every replica's."""
    tree = plan_tree(spec.workers.replicas, spec.topology.branching_factor)
    replicas = spec.consensus.replicas
    replica = is_root_replica(spec, node_id)
    node = tree.node(ROOT_ID if replica else node_id)
    argv = [*program, "node", "--manifest", manifest, "--node-id", node_id]
    if replica:
        if consensus is None:
            raise ValueError(f"{node_id}: a root replica needs its consensus port")
        port, reach = consensus
        others = ",".join(f"{r}={reach(r)}" for r in replica_ids(replicas) if r != node_id)
        argv += ["--consensus-port", str(port), "--peers", others]
    if node.parent is not None:
        argv += ["--parent", address(node.parent)]
    if needs_peers(spec, node):
        argv += ["--peers", ",".join(f"{b.id}={address(b.id)}" for b in bottom_aggregators(tree))]
    if needs_replicas(spec, node):
        argv += ["--replicas", replica_addresses(spec, address)]
    argv += ["--bind-port", str(bind_port), "--metrics-port", str(metrics_port), "--workdir", workdir]
    if keys is not None:
        argv += ["--keys", keys]
    if bind_host is not None:
        argv += ["--bind-host", bind_host]
    if metrics_host is not None:
        argv += ["--metrics-host", metrics_host]
    if threads is not None:
        argv += ["--threads", str(threads)]
    return argv
