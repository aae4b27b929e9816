"""The configuration files of node mode, as plain builders: containerd, the CNI bridge, the kubelet,
CoreDNS (its RBAC and Corefile). See shared/reference/control-plane.md section 0b."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .rundir import RunDir

PAUSE_IMAGE = "registry.k8s.io/pause:3.10"
CNI_BIN_DIR = "/usr/lib/cni"


def containerd_config(nd: Path, sock: Path) -> str:
    cri = 'plugins."io.containerd.grpc.v1.cri"'
    return f"""version = 2
root = "{nd}/containerd/root"
state = "{nd}/containerd/state"
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.tracing.processor.v1.otlp"]
[grpc]
  address = "{sock}"
[ttrpc]
  address = "{sock}.ttrpc"
[metrics]
  address = ""
[plugins."io.containerd.internal.v1.opt"]
  path = "{nd}/containerd/opt"
[{cri}]
  sandbox_image = "{PAUSE_IMAGE}"
  # Lowering oom_score_adj needs CAP_SYS_RESOURCE, which this machine lacks (section 0b).
  restrict_oom_score_adj = true
  disable_apparmor = true
  [{cri}.cni]
    bin_dir = "{CNI_BIN_DIR}"
    conf_dir = "{nd}/cni"
    max_conf_num = 1
  [{cri}.containerd]
    default_runtime_name = "runc"
    [{cri}.containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [{cri}.containerd.runtimes.runc.options]
        SystemdCgroup = false
        Root = "{nd}/runc"
"""


def cni_config(i: int, nd: Path) -> dict[str, Any]:
    return {
        "cniVersion": "0.4.0",
        "name": f"ncrsh-node{i}",
        "plugins": [
            {
                "type": "bridge",
                "bridge": f"ncrsh-cni{i}",
                "isGateway": True,
                "ipMasq": False,
                "hairpinMode": True,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": f"10.244.{1 + i}.0/24"}]],
                    "routes": [{"dst": "0.0.0.0/0"}],
                    "dataDir": f"{nd}/cni-ipam",
                },
            },
            {"type": "loopback"},
        ],
    }


def kubelet_config(
    cluster: RunDir, i: int, ip: str, nd: Path, sock: Path, ports: dict[str, int]
) -> dict[str, Any]:
    pki = cluster.pki
    return {
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        "address": ip,
        "port": ports["port"],
        "healthzBindAddress": "127.0.0.1",
        "healthzPort": ports["healthz"],
        "readOnlyPort": 0,
        "cgroupDriver": "cgroupfs",
        "cgroupRoot": f"/ncrsh-node{i}",
        "failCgroupV1": False,  # this machine has v1 (hybrid) cgroups
        "failSwapOn": False,
        "containerRuntimeEndpoint": f"unix://{sock}",
        "clusterDomain": "cluster.local",
        "clusterDNS": [cluster.state["api_ip"]],
        "resolvConf": str(nd / "resolv.conf"),
        "authentication": {
            "x509": {"clientCAFile": str(pki / "ca.crt")},
            "anonymous": {"enabled": False},
            "webhook": {"enabled": True},
        },
        "authorization": {"mode": "Webhook"},
        "tlsCertFile": str(pki / f"node{i}-serving.crt"),
        "tlsPrivateKeyFile": str(pki / f"node{i}-serving.key"),
        "evictionHard": {},  # no disk-pressure evictions on a shared build machine
        "imageGCHighThresholdPercent": 100,  # never collect our unpullable images
        "serializeImagePulls": False,
        "podLogsDir": str(nd / "pod-logs"),
        "volumePluginDir": str(nd / "volume-plugins"),
        "syncFrequency": "10s",
        "fileCheckFrequency": "10s",
        "nodeStatusUpdateFrequency": "5s",
        "nodeLeaseDurationSeconds": 20,  # renewed every 5 s; KCM's grace period is 20 s
    }


COREDNS_RBAC: list[dict[str, Any]] = [
    {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRole",
        "metadata": {"name": "ncrsh:coredns"},
        "rules": [
            {
                "apiGroups": [""],
                "resources": ["endpoints", "services", "pods", "namespaces"],
                "verbs": ["list", "watch"],
            },
            {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": ["list", "watch"]},
        ],
    },
    {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRoleBinding",
        "metadata": {"name": "ncrsh:coredns"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "ncrsh:coredns"},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "coredns"}],
    },
]


def corefile(ip: str, kubeconfig: Path) -> str:
    # No `forward`: no query may leave the machine (trap T7).
    return f"""cluster.local:53 in-addr.arpa:53 {{
    bind {ip}
    kubernetes cluster.local in-addr.arpa {{
        kubeconfig {kubeconfig}
        pods insecure
        ttl 5
    }}
    errors
}}
.:53 {{
    bind {ip}
    errors
}}
"""
