"""Manifest builders: plain functions from a SwarmTraining to the dicts of its children.

    owner = {"apiVersion": ..., "kind": ..., "metadata": {"name", "namespace", "uid"}}
    build_service(spec, owner)            headless Service `<job>` that gives every pod its DNS name
    build_configmap(spec, owner)          `<job>-config` with `manifest.yaml` for `swarm node`
    build_pod(spec, owner, node)          the pod `<job>-<node id>` of one tree node
    build_pods(spec, owner)               every pod of the tree, root first, workers last

Pure: no API calls. The handlers create what these return; tests assert on the dicts.
Each pod runs `swarm node --manifest /etc/swarm/manifest.yaml --node-id <id> [--parent <host>:<port>]
--bind-port <dataPort> --metrics-port <metricsPort> --workdir /var/lib/swarm`; a child reaches its
parent at `<job>-<parent id>.<job>.<namespace>.svc`, a name that survives the parent's replacement.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

import yaml

from swarm_contract.spec import API_GROUP, API_VERSION, KIND, SwarmSpec, spec_to_dict
from swarm_contract.topology import ROOT_ID, Tree, TreeNode, plan_tree
from swarm_operator.settings import Settings

JOB_LABEL = f"{API_GROUP}/job"
ROLE_LABEL = f"{API_GROUP}/role"
NODE_LABEL = f"{API_GROUP}/node"
GPU_FRACTION_ANNOTATION = f"{API_GROUP}/gpu-fraction"
GPU_RESOURCE = "nvidia.com/gpu"

MANIFEST_DIR = "/etc/swarm"
MANIFEST_KEY = "manifest.yaml"
WORKDIR = "/var/lib/swarm"
DEFAULT_CHECKPOINT_DIR = f"{WORKDIR}/checkpoints"
CONTAINER_NAME = "swarm"
RUN_AS_USER = 10001

Body = Mapping[str, Any]


def job_name(owner: Body) -> str:
    return str(owner["metadata"]["name"])


def job_namespace(owner: Body) -> str:
    return str(owner["metadata"].get("namespace") or "default")


def pod_name(job: str, node_id: str) -> str:
    return f"{job}-{node_id}"


def configmap_name(job: str) -> str:
    return f"{job}-config"


def node_host(job: str, namespace: str, node_id: str) -> str:
    """Stable DNS name of a node's pod through the headless Service `<job>`."""
    return f"{pod_name(job, node_id)}.{job}.{namespace}.svc"


def labels(job: str, node: TreeNode | None = None) -> dict[str, str]:
    out = {
        "app.kubernetes.io/name": "ncrsh-swarm",
        "app.kubernetes.io/instance": job,
        "app.kubernetes.io/part-of": "ncrsh-swarm",
        "app.kubernetes.io/managed-by": "ncrsh-swarm-operator",
        JOB_LABEL: job,
    }
    if node is not None:
        out["app.kubernetes.io/component"] = node.role
        out[ROLE_LABEL] = node.role
        out[NODE_LABEL] = node.id
    return out


def owner_reference(owner: Body) -> dict[str, Any]:
    """Controller reference: deleting the SwarmTraining garbage-collects the child."""
    return {
        "apiVersion": owner.get("apiVersion", f"{API_GROUP}/{API_VERSION}"),
        "kind": owner.get("kind", KIND),
        "name": job_name(owner),
        "uid": owner["metadata"]["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }


def _metadata(owner: Body, name: str, node: TreeNode | None = None) -> dict[str, Any]:
    return {
        "name": name,
        "namespace": job_namespace(owner),
        "labels": labels(job_name(owner), node),
        "ownerReferences": [owner_reference(owner)],
    }


def build_service(spec: SwarmSpec, owner: Body) -> dict[str, Any]:
    """Headless Service; publishes not-ready pods so children resolve a parent that is starting."""
    job = job_name(owner)
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _metadata(owner, job),
        "spec": {
            "clusterIP": "None",
            "publishNotReadyAddresses": True,
            "selector": {JOB_LABEL: job},
            "ports": [
                {"name": "data", "port": spec.network.data_port, "targetPort": "data", "protocol": "TCP"},
                {"name": "metrics", "port": spec.network.metrics_port, "targetPort": "metrics"},
            ],
        },
    }


def manifest_document(spec: SwarmSpec, owner: Body) -> dict[str, Any]:
    """The SwarmTraining as `swarm node --manifest` reads it, every default filled in."""
    return {
        "apiVersion": f"{API_GROUP}/{API_VERSION}",
        "kind": KIND,
        "metadata": {"name": job_name(owner), "namespace": job_namespace(owner)},
        "spec": spec_to_dict(spec),
    }


def build_configmap(spec: SwarmSpec, owner: Body) -> dict[str, Any]:
    text = yaml.safe_dump(manifest_document(spec, owner), sort_keys=False)
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": _metadata(owner, configmap_name(job_name(owner))),
        "data": {MANIFEST_KEY: text},
    }


def node_command(spec: SwarmSpec, job: str, namespace: str, node: TreeNode) -> list[str]:
    """The exact process command of a node's container."""
    cmd = ["swarm", "node", "--manifest", f"{MANIFEST_DIR}/{MANIFEST_KEY}", "--node-id", node.id]
    if node.parent is not None:
        cmd += ["--parent", f"{node_host(job, namespace, node.parent)}:{spec.network.data_port}"]
    if node.role == "worker" and spec.topology.reshuffle and node.parent != ROOT_ID:
        # Reshuffled workers report to a different bottom aggregator each round: give them all.
        tree = plan_tree(spec.workers.replicas, spec.topology.branching_factor)
        bottom = sorted(n.id for n in tree.aggregators if n.level == 1)
        port = spec.network.data_port
        cmd += ["--peers", ",".join(f"{b}={node_host(job, namespace, b)}:{port}" for b in bottom)]
    cmd += [
        "--bind-port",
        str(spec.network.data_port),
        "--metrics-port",
        str(spec.network.metrics_port),
        "--workdir",
        WORKDIR,
    ]
    return cmd


def checkpoint_dir(spec: SwarmSpec) -> str:
    return spec.checkpoint.path or DEFAULT_CHECKPOINT_DIR


def checkpoint_claim(spec: SwarmSpec) -> str:
    """PVC of the root's checkpoints, once the spec has `checkpoint.claimName`; empty: emptyDir."""
    return str(getattr(spec.checkpoint, "claim_name", "") or "")


def gpu_resources(gpus: float) -> tuple[dict[str, str], dict[str, str]]:
    """(extra requests, extra limits) for `gpus` per worker.

    Extended resources cannot be overcommitted, so requests equal limits. A fraction asks for one
    whole device: sharing it is the job of the NVIDIA device plugin's time-slicing, which
    advertises each GPU as several `nvidia.com/gpu`; the pod's `gpu-fraction` annotation and
    SWARM_GPU_FRACTION tell the worker how much memory to keep to.
    """
    if gpus <= 0:
        return {}, {}
    count = str(max(1, math.ceil(gpus)))
    return {GPU_RESOURCE: count}, {GPU_RESOURCE: count}


def _http_probe(period: int, failures: int) -> dict[str, Any]:
    return {
        "httpGet": {"path": "/healthz", "port": "metrics"},
        "periodSeconds": period,
        "timeoutSeconds": 2,
        "failureThreshold": failures,
    }


def cpu_threads(cpu: str) -> int:
    """Compute threads for a pod's CPU request ("200m", "1", "2.5" -> 1, 1, 2): torch would
    otherwise start one thread per host core in every pod, and pods sharing a node slow each other
    down many times over."""
    match = re.fullmatch(r"(\d+(?:\.\d+)?)(m?)", cpu.strip())
    if match is None:
        return 1
    cores = float(match.group(1)) / (1000 if match.group(2) else 1)
    return max(1, math.floor(cores))


def _env(spec: SwarmSpec, job: str, node: TreeNode) -> list[dict[str, Any]]:
    threads = str(cpu_threads(spec.workers.resources.cpu))
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
    gpus = spec.workers.resources.gpus
    if node.role == "worker" and 0 < gpus < 1:
        env.append({"name": "SWARM_GPU_FRACTION", "value": f"{gpus:g}"})
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
    ]
    if node.role == "root":
        claim = checkpoint_claim(spec)
        source: dict[str, Any] = (
            {"persistentVolumeClaim": {"claimName": claim}} if claim else {"emptyDir": {}}
        )
        volumes.append({"name": "checkpoints", **source})
        mounts.append({"name": "checkpoints", "mountPath": checkpoint_dir(spec)})
    return volumes, mounts


def node_lost_tolerations(seconds: int) -> list[dict[str, Any]]:
    """Leave a node that stopped answering after `seconds`, not the default five minutes: a round
    waits for the quorum, so a lost node's pods are better replaced on another node soon."""
    return [
        {"key": key, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": seconds}
        for key in ("node.kubernetes.io/unreachable", "node.kubernetes.io/not-ready")
    ]


def build_pod(
    spec: SwarmSpec, owner: Body, node: TreeNode, settings: Settings | None = None
) -> dict[str, Any]:
    """The pod of one tree node; `restartPolicy: Never` because the operator replaces it."""
    settings = settings or Settings()
    job, namespace = job_name(owner), job_namespace(owner)
    res = spec.workers.resources
    requests = {"cpu": res.cpu, "memory": res.memory}
    limits = {"memory": res.memory}
    annotations: dict[str, str] = {}
    is_gpu = node.role == "worker" and res.gpus > 0
    if is_gpu:
        gpu_requests, gpu_limits = gpu_resources(res.gpus)
        requests.update(gpu_requests)
        limits.update(gpu_limits)
        annotations[GPU_FRACTION_ANNOTATION] = f"{res.gpus:g}"
    volumes, mounts = _volumes(spec, job, node)
    container = {
        "name": CONTAINER_NAME,
        "image": spec.image,
        "imagePullPolicy": settings.image_pull_policy,
        "command": node_command(spec, job, namespace, node),
        "env": _env(spec, job, node),
        "ports": [
            {"name": "data", "containerPort": spec.network.data_port, "protocol": "TCP"},
            {"name": "metrics", "containerPort": spec.network.metrics_port, "protocol": "TCP"},
        ],
        "resources": {"requests": requests, "limits": limits},
        # Importing torch takes a while: the startup probe allows five minutes before liveness counts.
        "startupProbe": _http_probe(period=5, failures=60),
        "readinessProbe": _http_probe(period=5, failures=3),
        "livenessProbe": _http_probe(period=10, failures=6),
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
    metadata = _metadata(owner, pod_name(job, node.id), node)
    if annotations:
        metadata["annotations"] = annotations
    return {"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": pod_spec}


def tree_of(spec: SwarmSpec) -> Tree:
    return plan_tree(spec.workers.replicas, spec.topology.branching_factor)


def creation_order(tree: Tree) -> list[TreeNode]:
    """Root, then aggregators top-down, then workers: parents exist before their children dial."""
    aggregators = sorted(tree.aggregators, key=lambda n: (-n.level, n.id))
    return [tree.node(ROOT_ID), *aggregators, *tree.workers]


def build_pods(spec: SwarmSpec, owner: Body, settings: Settings | None = None) -> list[dict[str, Any]]:
    return [build_pod(spec, owner, node, settings) for node in creation_order(tree_of(spec))]
