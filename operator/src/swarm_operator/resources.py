"""What a pod asks of its node: GPU devices, compute threads from its CPU request, its liveness
probe, and how long it tolerates a node that stopped answering. Pure functions for builders.py."""

from __future__ import annotations

import math
import re
from typing import Any

GPU_RESOURCE = "nvidia.com/gpu"


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
