"""Manifest builders: plain functions from a SwarmTraining to the dicts of its children (the pods
are swarm_operator.pods').

    owner = {"apiVersion": ..., "kind": ..., "metadata": {"name", "namespace", "uid"}}
    build_service(spec, owner)            headless Service `<job>` that gives every pod its DNS name
    build_configmap(spec, owner)          `<job>-config` with `manifest.yaml` for `swarm node`
    build_secret(spec, owner)             `<job>-keys`, the job's CURVE and signing keys

Pure: no API calls. The handlers create what these return; tests assert on the dicts.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import yaml

from swarm_contract.labels import (
    JOB_LABEL,
    configmap_name,
    labels,
)
from swarm_contract.manifest import spec_to_dict
from swarm_contract.spec import API_GROUP, API_VERSION, KIND, SwarmSpec
from swarm_contract.topology import Tree, TreeNode, plan_tree
from swarm_operator.keys import build_keys_secret, keys_secret_name

MANIFEST_DIR = "/etc/swarm"
MANIFEST_KEY = "manifest.yaml"

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


def object_metadata(owner: Body, name: str, node: TreeNode | None = None) -> dict[str, Any]:
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
        "metadata": object_metadata(owner, job),
        "spec": {
            "clusterIP": "None",
            "publishNotReadyAddresses": True,
            "selector": {JOB_LABEL: job},
            "ports": [
                {"name": "data", "port": spec.network.data_port, "targetPort": "data", "protocol": "TCP"},
                {"name": "metrics", "port": spec.network.metrics_port, "targetPort": "metrics"},
                *(
                    [{"name": "consensus", "port": spec.network.consensus_port, "targetPort": "consensus"}]
                    if spec.consensus.replicas > 1
                    else []
                ),
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
        "metadata": object_metadata(owner, configmap_name(job_name(owner))),
        "data": {MANIFEST_KEY: text},
    }


def build_secret(spec: SwarmSpec, owner: Body) -> dict[str, Any]:
    """The job's CURVE keys (swarm_operator.keys): created once, before the pods, never replaced."""
    job = job_name(owner)
    metadata = object_metadata(owner, keys_secret_name(job))
    return build_keys_secret(job, metadata, tree_of(spec), spec.consensus.replicas)


def tree_of(spec: SwarmSpec) -> Tree:
    return plan_tree(spec.workers.replicas, spec.topology.branching_factor)
