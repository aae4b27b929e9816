"""The test cluster harness itself: it starts a real control plane, schedules onto a fake GPU node,
and leaves nothing behind (processes, ports, mounts, iptables chains, bridges, run directory)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from .binaries import CONTROL_PLANE_BINARIES, NODE_BINARIES, not_built, versions
from .harness import Cluster, ClusterSpec, poll
from .hostnet import SHARED_DIRS
from .imagetars import image_tars

pytestmark = pytest.mark.cluster

NOT_BUILT = not_built(*CONTROL_PLANE_BINARIES)
needs_binaries = pytest.mark.skipif(bool(NOT_BUILT), reason=NOT_BUILT)


def gpu_pod(name: str) -> dict[str, object]:
    gpu = {"nvidia.com/gpu": "1"}
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {
            "containers": [
                {
                    "name": "c",
                    "image": "docker.io/library/debian:bookworm-slim",
                    "resources": {"requests": gpu, "limits": gpu},
                }
            ]
        },
    }


def assert_nothing_left(cluster: Cluster, ports: dict[str, int], pids: list[int]) -> None:
    left = cluster.leftovers(ports)
    assert left == {k: [] for k in left}, left
    assert [
        p
        for p in pids
        if Path(f"/proc/{p}").exists()
        and "Z" not in Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()[0]
    ] == []


@needs_binaries
def test_control_plane_schedules_a_gpu_pod_on_the_fake_node_and_leaves_nothing() -> None:
    cluster = Cluster(ClusterSpec(name=f"harness-{os.getpid()}", fake_nodes=1))
    with cluster.running():
        assert cluster.kubectl("get", "--raw", "/readyz") == "ok"
        version = json.loads(cluster.kubectl("version", "-o", "json"))
        assert version["serverVersion"]["gitVersion"] == versions()["K8S_VERSION"]  # stamped (T1)
        cluster.kubectl("create", "namespace", "harness")
        poll(
            "the default ServiceAccount of the new namespace",
            lambda: cluster.kubectl("get", "sa", "default", "-n", "harness", check=False),
        )
        cluster.kubectl("apply", "-n", "harness", "-f", "-", input=json.dumps(gpu_pod("gpu-pod")))
        node = poll(
            "the scheduler to bind the pod",
            lambda: cluster.kubectl(
                "get", "pod", "gpu-pod", "-n", "harness", "-o", "jsonpath={.spec.nodeName}"
            ),
        )
        assert node == "fake-gpu-0"
        ports, pids = dict(cluster.state["ports"]), list(cluster.state["procs"].values())
    assert_nothing_left(cluster, ports, pids)


@needs_binaries
def test_up_clears_what_a_killed_earlier_run_left() -> None:
    spec = ClusterSpec(name=f"harness-killed-{os.getpid()}", fake_nodes=0)
    first = Cluster(spec).up()
    first_pids = list(first.state["procs"].values())
    # A new harness on the same run directory, as after `kill -9` of the first one's pytest.
    second = Cluster(spec)
    with second.running():
        assert second.kubectl("get", "--raw", "/readyz") == "ok"
        assert not any(p in second.state["procs"].values() for p in first_pids)
        ports, pids = dict(second.state["ports"]), list(second.state["procs"].values())
    for p in first._popen.values():
        p.wait(timeout=5)
    assert_nothing_left(second, ports, pids + first_pids)


def _node_mode_unavailable() -> str:
    missing = not_built(*CONTROL_PLANE_BINARIES, *NODE_BINARIES)
    if missing:
        return missing
    if os.geteuid() != 0:
        return "node mode needs root"
    if not any("pause" in t.name for t in image_tars()):
        return "no image tars: run tests/cluster/images.sh"
    return ""


@pytest.mark.slow
@pytest.mark.skipif(bool(_node_mode_unavailable()), reason=_node_mode_unavailable() or "available")
def test_two_real_nodes_run_a_pod_that_resolves_the_api_and_leave_nothing() -> None:
    shared_before = [d for d in SHARED_DIRS if Path(d).exists()]
    cluster = Cluster(ClusterSpec(name="harness-nodes", nodes=2))
    with cluster.running():
        nodes = cluster.kubectl("get", "nodes", "-o", "jsonpath={.items[*].metadata.name}").split()
        assert sorted(nodes) == ["node0", "node1"]
        pod = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "probe"},
            "spec": {
                "restartPolicy": "Never",
                "nodeName": "node1",
                "containers": [
                    {
                        "name": "c",
                        "image": "docker.io/library/debian:bookworm-slim",
                        "imagePullPolicy": "Never",
                        "command": ["getent", "hosts", "kubernetes.default.svc.cluster.local"],
                        "resources": {"limits": {"nvidia.com/gpu": "1"}},
                    }
                ],
            },
        }
        cluster.kubectl("apply", "-f", "-", input=json.dumps(pod))
        poll(
            "the probe pod to succeed",
            lambda: (
                cluster.kubectl("get", "pod", "probe", "-o", "jsonpath={.status.phase}")
                in ("Succeeded", "Failed")
            ),
            timeout=120,
        )
        assert "10.96.0.1" in cluster.kubectl("logs", "probe")
        ports, pids = dict(cluster.state["ports"]), list(cluster.state["procs"].values())
    assert_nothing_left(cluster, ports, pids)
    assert [d for d in SHARED_DIRS if Path(d).exists()] == shared_before
