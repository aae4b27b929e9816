"""What a pod asks of its node: CPU, memory and GPU devices by role, compute threads from its CPU
request, its liveness probe, and how long it tolerates a node that stopped answering. Pure functions
for builders.py."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

from swarm_contract.spec import SwarmSpec

GPU_RESOURCE = "nvidia.com/gpu"


@dataclass(frozen=True)
class PodShape:
    """The resources of one node's pod: `cpu` and `memory` as Kubernetes quantities, `gpus` as in
    the spec (0: none; a fraction: a share of one device; 1 or more: whole devices)."""

    cpu: str
    memory: str
    gpus: float


def pod_shape(spec: SwarmSpec, role: str) -> PodShape:
    """Workers follow `workers.resources`; aggregators and the root `topology.aggregatorResources`,
    whose empty cpu and memory mean the workers' (their gpus default to 0: the rules run on CPU)."""
    workers = spec.workers.resources
    if role == "worker":
        return PodShape(workers.cpu, workers.memory, workers.gpus)
    own = spec.topology.aggregator_resources
    return PodShape(own.cpu or workers.cpu, own.memory or workers.memory, own.gpus)


def gpu_fraction(gpus: float) -> float | None:
    """The share of one device a pod keeps to (its SWARM_GPU_FRACTION), or None when it has whole
    devices or none."""
    return gpus if 0 < gpus < 1 else None


def gpu_resources(
    gpus: float, whole: str = GPU_RESOURCE, shared: str = GPU_RESOURCE
) -> tuple[dict[str, str], dict[str, str]]:
    """(extra requests, extra limits) for `gpus` per pod.

    Extended resources cannot be overcommitted, so requests equal limits. `gpus` >= 1 asks for
    ceil(gpus) devices of `whole`. A fraction asks for one device of `shared`: a replica of a GPU
    that the NVIDIA device plugin shares by time-slicing or MPS (each GPU advertised as several
    devices, `nvidia.com/gpu.shared` with its renameByDefault); the pod's `gpu-fraction`
    annotation and SWARM_GPU_FRACTION tell the process how much of the device's memory to keep to.
    """
    if gpus <= 0:
        return {}, {}
    if gpu_fraction(gpus) is not None:
        return {shared: "1"}, {shared: "1"}
    count = str(math.ceil(gpus))
    return {whole: count}, {whole: count}


def http_probe(period: int, failures: int) -> dict[str, Any]:
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


def node_lost_tolerations(seconds: int) -> list[dict[str, Any]]:
    """Leave a node that stopped answering after `seconds`, not the default five minutes: a round
    waits for the quorum, so a lost node's pods are better replaced on another node soon."""
    return [
        {"key": key, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": seconds}
        for key in ("node.kubernetes.io/unreachable", "node.kubernetes.io/not-ready")
    ]
