"""Fake nodes of control-plane mode: a Node object with ``nvidia.com/gpu`` capacity, kept Ready by a
heartbeat process (fakenode.py), so the scheduler binds pods to it; they never run."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from .binaries import versions
from .rundir import RunDir

HERE = Path(__file__).resolve().parent


def node_capacity(cluster: RunDir) -> dict[str, str]:
    """Capacity and allocatable of every fake node."""
    return {
        "cpu": "8",
        "memory": "32Gi",
        "pods": "110",
        "ephemeral-storage": "100Gi",
        "nvidia.com/gpu": str(cluster.spec.gpus_per_node),
    }


def start(cluster: RunDir, name: str) -> None:
    """Create the Node ``name``, start its heartbeat and wait until KCM lets pods be scheduled on it."""
    cap = node_capacity(cluster)
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    node = {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "labels": {
                "kubernetes.io/hostname": name,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64",
                "node.ncrsh.dev/fake": "true",
                "nvidia.com/gpu.present": "true",
            },
        },
        "status": {
            "capacity": cap,
            "allocatable": cap,
            "conditions": [
                {
                    "type": "Ready",
                    "status": "True",
                    "reason": "KubeletReady",
                    "message": "fake node",
                    "lastHeartbeatTime": now,
                    "lastTransitionTime": now,
                }
            ],
            "addresses": [
                {"type": "InternalIP", "address": "127.0.0.1"},
                {"type": "Hostname", "address": name},
            ],
            "nodeInfo": {
                "kubeletVersion": versions()["K8S_VERSION"],
                "containerRuntimeVersion": "fake://0",
                "operatingSystem": "linux",
                "architecture": "amd64",
                "osImage": "fake",
                "kernelVersion": "",
                "kubeProxyVersion": "",
                "machineID": "",
                "systemUUID": "",
                "bootID": "",
            },
        },
    }
    cluster.kubectl("create", "-f", "-", input=json.dumps(node))
    # Status on create is not guaranteed to be kept: write capacity through the status subresource.
    cluster.kubectl(
        "patch",
        "node",
        name,
        "--subresource=status",
        "--type=merge",
        "-p",
        json.dumps({"status": {"capacity": cap, "allocatable": cap}}),
    )
    cluster._spawn(
        f"fakenode-{name}",
        [
            sys.executable,
            str(HERE / "fakenode.py"),
            "--server",
            cluster.server,
            "--ca",
            str(cluster.pki / "ca.crt"),
            "--cert",
            str(cluster.pki / "admin.crt"),
            "--key",
            str(cluster.pki / "admin.key"),
            "--node",
            name,
        ],
    )

    def schedulable() -> bool:  # KCM lifts the not-ready taint once it has seen Ready=True (T6)
        n = cluster.api_get(f"/api/v1/nodes/{name}")
        return (
            not n["spec"].get("taints")
            and n["status"]["allocatable"].get("nvidia.com/gpu") == cap["nvidia.com/gpu"]
        )

    cluster._wait(
        f"fake node {name} schedulable", schedulable, ("kube-controller-manager", f"fakenode-{name}")
    )
