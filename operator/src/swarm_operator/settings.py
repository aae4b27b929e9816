"""The operator's settings: one frozen dataclass, read from the environment once at startup.

Every field is documented where it is defined; the Helm chart sets them through the env vars named
in `ENV` (values.yaml `operator.*`). Nothing is read at import time: call `Settings.from_env()`.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, fields

#: An extended resource's name: a DNS domain, a slash, a name (`nvidia.com/gpu`, `nvidia.com/gpu.shared`).
EXTENDED_RESOURCE_NAME = re.compile(
    r"(?:[a-z0-9](?:[-a-z0-9]*[a-z0-9])?\.)+[a-z0-9](?:[-a-z0-9]*[a-z0-9])?/[A-Za-z0-9](?:[-A-Za-z0-9_.]*[A-Za-z0-9])?"
)


class SettingsError(ValueError):
    """An operator env var holds a value that cannot be used; the message names it."""


@dataclass(frozen=True)
class Settings:
    #: Namespaces to watch, comma-separated in SWARM_WATCH_NAMESPACES; empty watches all namespaces
    #: (ClusterRole mode). With namespaces listed the chart grants a Role in each.
    watch_namespaces: tuple[str, ...] = ()
    #: Port of kopf's liveness endpoint (`/healthz`), probed by the Deployment.
    health_port: int = 8080
    #: Port of the operator's own Prometheus metrics (`/metrics`); 0 disables them.
    metrics_port: int = 8000
    #: Seconds between two reconcile ticks of one SwarmTraining (status read, pod replacement).
    sync_interval_seconds: float = 5.0
    #: Timeout of one GET of the root's `/status`; a slow root must not stall the tick.
    status_timeout_seconds: float = 2.0
    #: Most entries written to `status.nodes`; the rest are counted in `status.nodesOmitted` so the
    #: object stays far below etcd's 1.5 MiB limit.
    max_status_nodes: int = 256
    #: A quarantined node's pod is replaced only after it has run this long, so a fresh replacement
    #: gets the chance to earn back its reputation before it is judged again.
    quarantine_grace_seconds: float = 120.0
    #: Seconds a swarm pod stays bound to a node that stopped answering (the `unreachable` and
    #: `not-ready` NoExecute tolerations; Kubernetes' default is 300). After that the taint manager
    #: evicts it and the operator replaces it elsewhere, recording `NodeLost`.
    node_lost_seconds: int = 30
    #: imagePullPolicy of the swarm pods (`IfNotPresent` suits images imported into the node).
    image_pull_policy: str = "IfNotPresent"
    #: ServiceAccount of the swarm pods; empty uses the namespace's default.
    pod_service_account: str = ""
    #: Runtime class of GPU pods (e.g. `nvidia`); empty leaves the node's default.
    gpu_runtime_class: str = ""
    #: Extended resource a pod requests `ceil(gpus)` of when its `gpus` is 1 or more (whole devices).
    gpu_resource_name: str = "nvidia.com/gpu"
    #: Extended resource a pod requests one of when its `gpus` is a fraction: a replica of a GPU the
    #: NVIDIA device plugin shares by time-slicing or MPS (docs/gpu.md). `nvidia.com/gpu.shared` when
    #: the plugin's `renameByDefault` is on; the default suits `renameByDefault: false`.
    shared_gpu_resource_name: str = "nvidia.com/gpu"
    #: Create a NetworkPolicy per SwarmTraining (swarm_operator.netpol): the data port only from the
    #: job's pods, the metrics port only from the operator and `monitoring_namespaces`.
    network_policy: bool = True
    #: The operator's own namespace (the chart sets it from the pod); empty when it runs outside the
    #: cluster, and then the metrics port stays open to every source.
    operator_namespace: str = ""
    #: Labels of the operator's pods, `key=value` comma-separated, allowed on the metrics port.
    operator_pod_labels: tuple[str, ...] = ()
    #: Namespaces (comma-separated) whose pods may scrape the swarm pods' metrics port (Prometheus).
    monitoring_namespaces: tuple[str, ...] = ()

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Read every `ENV` variable present in `env` (default: os.environ) over the defaults."""
        env = os.environ if env is None else env
        values: dict[str, object] = {}
        for f in fields(cls):
            name = ENV[f.name]
            if name not in env:
                continue
            raw = env[name].strip()
            default = getattr(cls, f.name)
            try:
                if isinstance(default, bool):  # before int: a bool is an int
                    values[f.name] = _boolean(raw)
                elif isinstance(default, tuple):
                    values[f.name] = tuple(p.strip() for p in raw.split(",") if p.strip())
                elif isinstance(default, int):
                    values[f.name] = int(raw)
                elif isinstance(default, float):
                    values[f.name] = float(raw)
                else:
                    values[f.name] = raw
            except ValueError as e:
                raise SettingsError(f"{name}={raw!r}: expected {type(default).__name__}") from e
        settings = cls(**values)  # type: ignore[arg-type]
        settings.validate()
        return settings

    def validate(self) -> None:
        for name in ("health_port", "metrics_port"):
            port = getattr(self, name)
            if not 0 <= port <= 65535:
                raise SettingsError(f"{ENV[name]}={port}: not a port")
        for name in ("sync_interval_seconds", "status_timeout_seconds"):
            if getattr(self, name) <= 0:
                raise SettingsError(f"{ENV[name]} must be positive")
        if self.node_lost_seconds < 0:
            raise SettingsError(f"{ENV['node_lost_seconds']} must not be negative")
        if self.max_status_nodes < 1:
            raise SettingsError(f"{ENV['max_status_nodes']} must be at least 1")
        for label in self.operator_pod_labels:
            if "=" not in label:
                raise SettingsError(f"{ENV['operator_pod_labels']}: {label!r} is not key=value")
        for name in ("gpu_resource_name", "shared_gpu_resource_name"):
            if not EXTENDED_RESOURCE_NAME.fullmatch(getattr(self, name)):
                raise SettingsError(f"{ENV[name]}={getattr(self, name)!r}: not a domain/name resource name")
        if self.image_pull_policy not in ("Always", "IfNotPresent", "Never"):
            raise SettingsError(f"{ENV['image_pull_policy']}={self.image_pull_policy!r}: not a pull policy")


def _boolean(raw: str) -> bool:
    value = raw.strip().lower()
    if value in ("true", "1", "yes"):
        return True
    if value in ("false", "0", "no", ""):
        return False
    raise ValueError(raw)


#: Env var of each setting.
ENV: dict[str, str] = {
    "watch_namespaces": "SWARM_WATCH_NAMESPACES",
    "health_port": "SWARM_HEALTH_PORT",
    "metrics_port": "SWARM_METRICS_PORT",
    "sync_interval_seconds": "SWARM_SYNC_INTERVAL_SECONDS",
    "status_timeout_seconds": "SWARM_STATUS_TIMEOUT_SECONDS",
    "max_status_nodes": "SWARM_MAX_STATUS_NODES",
    "quarantine_grace_seconds": "SWARM_QUARANTINE_GRACE_SECONDS",
    "node_lost_seconds": "SWARM_NODE_LOST_SECONDS",
    "image_pull_policy": "SWARM_IMAGE_PULL_POLICY",
    "pod_service_account": "SWARM_POD_SERVICE_ACCOUNT",
    "gpu_runtime_class": "SWARM_GPU_RUNTIME_CLASS",
    "gpu_resource_name": "SWARM_GPU_RESOURCE_NAME",
    "shared_gpu_resource_name": "SWARM_SHARED_GPU_RESOURCE_NAME",
    "network_policy": "SWARM_NETWORK_POLICY",
    "operator_namespace": "SWARM_OPERATOR_NAMESPACE",
    "operator_pod_labels": "SWARM_OPERATOR_POD_LABELS",
    "monitoring_namespaces": "SWARM_MONITORING_NAMESPACES",
}


def kopf_argv(settings: Settings) -> list[str]:
    """The `kopf run` command line for these settings (see swarm_operator.__main__)."""
    argv = ["kopf", "run", "--standalone", "-m", "swarm_operator.handlers"]
    argv.append(f"--liveness=http://0.0.0.0:{settings.health_port}/healthz")
    if settings.watch_namespaces:
        argv += [f"--namespace={ns}" for ns in settings.watch_namespaces]
    else:
        argv.append("--all-namespaces")
    return argv
