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

from collections.abc import Mapping
from typing import Any

import yaml

from swarm_contract.command import node_argv
from swarm_contract.keys import KEYS_MOUNT
from swarm_contract.labels import (
    GPU_FRACTION_ANNOTATION,
    JOB_LABEL,
    configmap_name,
    labels,
    node_host,
    pod_name,
)
from swarm_contract.manifest import spec_to_dict
from swarm_contract.spec import API_GROUP, API_VERSION, KIND, SwarmSpec
from swarm_contract.topology import ROOT_ID, Tree, TreeNode, plan_tree
from swarm_operator.keys import build_keys_secret, keys_mount, keys_secret_name, keys_volume
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
    """The exact process command of a node's container (the argv `swarm run` builds too)."""
    return node_argv(
        spec,
        node.id,
        address=lambda node_id: f"{node_host(job, namespace, node_id)}:{spec.network.data_port}",
        manifest=f"{MANIFEST_DIR}/{MANIFEST_KEY}",
        bind_port=spec.network.data_port,
        metrics_port=spec.network.metrics_port,
        workdir=WORKDIR,
        keys=KEYS_MOUNT,
    )


def checkpoint_dir(spec: SwarmSpec) -> str:
    return spec.checkpoint.path or DEFAULT_CHECKPOINT_DIR


def checkpoint_claim(spec: SwarmSpec) -> str:
    """PVC of the root's checkpoints (`checkpoint.claimName`); empty: an emptyDir. The pod's fsGroup
    makes the claim writable by the non-root process where the volume type honours fsGroup."""
    return spec.checkpoint.claim_name


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
        claim = checkpoint_claim(spec)
        source: dict[str, Any] = (
            {"persistentVolumeClaim": {"claimName": claim}} if claim else {"emptyDir": {}}
        )
        volumes.append({"name": "checkpoints", **source})
        mounts.append({"name": "checkpoints", "mountPath": checkpoint_dir(spec)})
    return volumes, mounts


def build_pod(
    spec: SwarmSpec, owner: Body, node: TreeNode, settings: Settings | None = None
) -> dict[str, Any]:
    """The pod of one tree node; `restartPolicy: Never` because the operator replaces it.

    Workers take `workers.resources`, aggregators and the root `topology.aggregatorResources`
    (resources.pod_shape); GPUs come as the settings' whole or shared resource name (docs/gpu.md).
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
        "ports": [
            {"name": "data", "containerPort": spec.network.data_port, "protocol": "TCP"},
            {"name": "metrics", "containerPort": spec.network.metrics_port, "protocol": "TCP"},
        ],
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
    metadata = _metadata(owner, pod_name(job, node.id), node)
    if annotations:
        metadata["annotations"] = annotations
    return {"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": pod_spec}


def build_secret(spec: SwarmSpec, owner: Body) -> dict[str, Any]:
    """The job's CURVE keys (swarm_operator.keys): created once, before the pods, never replaced."""
    job = job_name(owner)
    metadata = _metadata(owner, keys_secret_name(job))
    return build_keys_secret(job, metadata, tree_of(spec), spec.consensus.replicas)


def tree_of(spec: SwarmSpec) -> Tree:
    return plan_tree(spec.workers.replicas, spec.topology.branching_factor)


def creation_order(tree: Tree) -> list[TreeNode]:
    """Root, then aggregators top-down, then workers: parents exist before their children dial."""
    aggregators = sorted(tree.aggregators, key=lambda n: (-n.level, n.id))
    return [tree.node(ROOT_ID), *aggregators, *tree.workers]


def build_pods(spec: SwarmSpec, owner: Body, settings: Settings | None = None) -> list[dict[str, Any]]:
    return [build_pod(spec, owner, node, settings) for node in creation_order(tree_of(spec))]
