"""The pods of a SwarmTraining: one per process of the job, as plain dicts.

    pod_nodes(spec)                       every process as a tree node: the root's replicas, then the
                                          aggregators top-down, then the workers (parents first)
    build_pod(spec, owner, node)          the pod `<job>-<node id>` of one of them
    build_pods(spec, owner)               all of them, in pod_nodes' order

Each pod runs `swarm node --manifest /etc/swarm/manifest.yaml --node-id <id> [--parent <host>:<port>]
--bind-port <dataPort> --metrics-port <metricsPort> --workdir /var/lib/swarm --keys ...`
(swarm_contract.command.node_argv); a child reaches its parent at `<job>-<parent id>.<job>.<ns>.svc`,
a name that survives the parent's replacement. With root replicas (`consensus.replicas` R > 1)
`root`, `root-1` ... `root-<R-1>` are pods alike, with a third port (`network.consensusPort`) for
the other replicas; only `root`'s checkpoints live on `checkpoint.claimName` (one ReadWriteOnce
claim cannot be mounted by R pods on several nodes, and a replaced replica catches up from the
others by state transfer anyway). Pure: no API calls.
"""

from __future__ import annotations

from typing import Any

from swarm_contract.command import is_root_replica, node_argv, process_ids, process_node
from swarm_contract.keys import KEYS_MOUNT
from swarm_contract.labels import GPU_FRACTION_ANNOTATION, configmap_name, node_host, pod_name
from swarm_contract.spec import SwarmSpec
from swarm_contract.topology import ROOT_ID, TreeNode
from swarm_operator.builders import (
    MANIFEST_DIR,
    MANIFEST_KEY,
    Body,
    job_name,
    job_namespace,
    object_metadata,
    tree_of,
)
from swarm_operator.keys import keys_mount, keys_volume
from swarm_operator.resources import (
    PodShape,
    cpu_threads,
    gpu_fraction,
    gpu_resources,
    http_probe,
    node_lost_tolerations,
    pod_shape,
)
from swarm_operator.settings import Settings

WORKDIR = "/var/lib/swarm"
DEFAULT_CHECKPOINT_DIR = f"{WORKDIR}/checkpoints"
CONTAINER_NAME = "swarm"
RUN_AS_USER = 10001


def pod_nodes(spec: SwarmSpec) -> list[TreeNode]:
    """Every process of the job as its tree node (a root replica: the root's under its own id), in
    creation order: parents exist before their children dial them."""
    nodes = [process_node(spec, p) for p in process_ids(spec)]
    roots = [n for n in nodes if n.role == "root"]
    aggregators = sorted((n for n in nodes if n.role == "aggregator"), key=lambda n: (-n.level, n.id))
    return [*roots, *aggregators, *(n for n in nodes if n.role == "worker")]


def node_command(spec: SwarmSpec, job: str, namespace: str, node: TreeNode) -> list[str]:
    """The exact process command of a node's container (the argv `swarm run` builds too)."""

    def host(node_id: str) -> str:
        return node_host(job, namespace, node_id)

    consensus = None
    if is_root_replica(spec, node.id):
        consensus = (spec.network.consensus_port, lambda r: f"{host(r)}:{spec.network.consensus_port}")
    return node_argv(
        spec,
        node.id,
        address=lambda node_id: f"{host(node_id)}:{spec.network.data_port}",
        manifest=f"{MANIFEST_DIR}/{MANIFEST_KEY}",
        bind_port=spec.network.data_port,
        metrics_port=spec.network.metrics_port,
        workdir=WORKDIR,
        keys=KEYS_MOUNT,
        consensus=consensus,
    )


def checkpoint_dir(spec: SwarmSpec) -> str:
    return spec.checkpoint.path or DEFAULT_CHECKPOINT_DIR


def checkpoint_claim(spec: SwarmSpec, node_id: str = ROOT_ID) -> str:
    """PVC of the root's checkpoints (`checkpoint.claimName`), for `root` only; empty: an emptyDir.
    The pod's fsGroup makes the claim writable by the non-root process where the volume type
    honours fsGroup."""
    return spec.checkpoint.claim_name if node_id == ROOT_ID else ""


def _env(spec: SwarmSpec, job: str, node: TreeNode, shape: PodShape) -> list[dict[str, Any]]:
    threads = str(cpu_threads(shape.cpu))
    env: list[dict[str, Any]] = [
        {"name": "SWARM_JOB", "value": job},
        {"name": "SWARM_NODE_ID", "value": node.id},
        {"name": "SWARM_ROLE", "value": node.role},
        {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": "POD_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
        {"name": "HOME", "value": WORKDIR},
        {"name": "PYTHONUNBUFFERED", "value": "1"},
        {"name": "OMP_NUM_THREADS", "value": threads},
        {"name": "MKL_NUM_THREADS", "value": threads},
    ]
    if node.role == "root":
        env.append({"name": "SWARM_CHECKPOINT_DIR", "value": checkpoint_dir(spec)})
    fraction = gpu_fraction(shape.gpus)
    if fraction is not None:
        # node/device.py caps the process's CUDA memory at this share: time-slicing isolates none.
        env.append({"name": "SWARM_GPU_FRACTION", "value": f"{fraction:g}"})
    return env


def _volumes(spec: SwarmSpec, job: str, node: TreeNode) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    volumes: list[dict[str, Any]] = [
        {"name": "manifest", "configMap": {"name": configmap_name(job)}},
        {"name": "workdir", "emptyDir": {}},
        {"name": "tmp", "emptyDir": {}},
    ]
    mounts: list[dict[str, Any]] = [
        {"name": "manifest", "mountPath": MANIFEST_DIR, "readOnly": True},
        {"name": "workdir", "mountPath": WORKDIR},
        {"name": "tmp", "mountPath": "/tmp"},
        keys_mount(),
    ]
    volumes.append(
        keys_volume(
            job, tree_of(spec), node.id, reshuffle=spec.topology.reshuffle, replicas=spec.consensus.replicas
        )
    )
    if node.role == "root":
        claim = checkpoint_claim(spec, node.id)
        source: dict[str, Any] = (
            {"persistentVolumeClaim": {"claimName": claim}} if claim else {"emptyDir": {}}
        )
        volumes.append({"name": "checkpoints", **source})
        mounts.append({"name": "checkpoints", "mountPath": checkpoint_dir(spec)})
    return volumes, mounts


def _ports(spec: SwarmSpec, node: TreeNode) -> list[dict[str, Any]]:
    ports = [
        {"name": "data", "containerPort": spec.network.data_port, "protocol": "TCP"},
        {"name": "metrics", "containerPort": spec.network.metrics_port, "protocol": "TCP"},
    ]
    if is_root_replica(spec, node.id):
        ports.append({"name": "consensus", "containerPort": spec.network.consensus_port, "protocol": "TCP"})
    return ports


def build_pod(
    spec: SwarmSpec, owner: Body, node: TreeNode, settings: Settings | None = None
) -> dict[str, Any]:
    """The pod of one process (`pod_nodes`); `restartPolicy: Never` because the operator replaces it.

    Workers take `workers.resources`, aggregators and the root's replicas
    `topology.aggregatorResources` (resources.pod_shape); GPUs come as the settings' whole or shared
    resource name (docs/gpu.md).
    """
    settings = settings or Settings()
    job, namespace = job_name(owner), job_namespace(owner)
    shape = pod_shape(spec, node.role)
    requests = {"cpu": shape.cpu, "memory": shape.memory}
    limits = {"memory": shape.memory}
    annotations: dict[str, str] = {}
    is_gpu = shape.gpus > 0
    if is_gpu:
        gpu_requests, gpu_limits = gpu_resources(
            shape.gpus, settings.gpu_resource_name, settings.shared_gpu_resource_name
        )
        requests.update(gpu_requests)
        limits.update(gpu_limits)
        annotations[GPU_FRACTION_ANNOTATION] = f"{shape.gpus:g}"
    volumes, mounts = _volumes(spec, job, node)
    container = {
        "name": CONTAINER_NAME,
        "image": spec.image,
        "imagePullPolicy": settings.image_pull_policy,
        "command": node_command(spec, job, namespace, node),
        "env": _env(spec, job, node, shape),
        "ports": _ports(spec, node),
        "resources": {"requests": requests, "limits": limits},
        # Importing torch takes a while: the startup probe allows five minutes before liveness counts.
        "startupProbe": http_probe(period=5, failures=60),
        "readinessProbe": http_probe(period=5, failures=3),
        "livenessProbe": http_probe(period=10, failures=6),
        "volumeMounts": mounts,
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "runAsNonRoot": True,
            "capabilities": {"drop": ["ALL"]},
        },
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }
    pod_spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "hostname": pod_name(job, node.id),
        "subdomain": job,
        "enableServiceLinks": False,
        "automountServiceAccountToken": False,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": RUN_AS_USER,
            "runAsGroup": RUN_AS_USER,
            "fsGroup": RUN_AS_USER,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": [container],
        "volumes": volumes,
        "tolerations": node_lost_tolerations(settings.node_lost_seconds),
    }
    if settings.pod_service_account:
        pod_spec["serviceAccountName"] = settings.pod_service_account
    if is_gpu and settings.gpu_runtime_class:
        pod_spec["runtimeClassName"] = settings.gpu_runtime_class
    metadata = object_metadata(owner, pod_name(job, node.id), node)
    if annotations:
        metadata["annotations"] = annotations
    return {"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": pod_spec}


def build_pods(spec: SwarmSpec, owner: Body, settings: Settings | None = None) -> list[dict[str, Any]]:
    return [build_pod(spec, owner, node, settings) for node in pod_nodes(spec)]
