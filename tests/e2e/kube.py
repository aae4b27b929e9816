"""What the end-to-end tests do to a cluster, as a user would: kubectl, helm, and (only on the
harness's own nodes) what a user cannot do from kubectl: SIGKILL a container's process from its
host, or take a whole node down.

`Kube` wraps one cluster: an admin kubeconfig, and the `Cluster` of tests/cluster when the suite
started its own (None with `--existing-cluster`).
"""

from __future__ import annotations

import copy
import json
import os
import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from tests.cluster import nodes
from tests.cluster.binaries import built_binary
from tests.cluster.harness import Cluster, kubectl, poll

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "ncrsh-swarm"
EXAMPLES = REPO / "examples"
RELEASE = "swarm"
RELEASE_NAMESPACE = "ncrsh-system"
OPERATOR_SELECTOR = "app.kubernetes.io/name=ncrsh-swarm,app.kubernetes.io/instance=swarm"
OPERATOR_IMAGE = "docker.io/library/ncrsh-swarm-operator:0.1.0"


@dataclass
class Kube:
    kubeconfig: Path
    cluster: Cluster | None = None

    def kubectl(
        self, *args: str, stdin: str | None = None, check: bool = True, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        r = kubectl(self.kubeconfig, *args, stdin=stdin, check=False, timeout=timeout)
        if check and r.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed ({r.returncode}): {r.stderr.strip()}")
        return r

    def helm(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        r = subprocess.run(
            [str(built_binary("helm")), *args],
            capture_output=True,
            text=True,
            env={**os.environ, "KUBECONFIG": str(self.kubeconfig)},
            timeout=timeout,
        )
        if r.returncode != 0:
            raise AssertionError(f"helm {' '.join(args)} failed ({r.returncode}): {r.stderr.strip()}")
        return r

    def get(self, *args: str) -> Any:
        """`kubectl get ... -o json`, parsed; None when the object does not exist."""
        r = self.kubectl("get", *args, "-o", "json", check=False)
        if r.returncode != 0:
            if "NotFound" in r.stderr:
                return None
            raise AssertionError(f"kubectl get {' '.join(args)}: {r.stderr.strip()}")
        return json.loads(r.stdout)

    def items(self, *args: str) -> list[dict[str, Any]]:
        got = self.get(*args)
        return list(got["items"]) if got else []

    def apply(self, manifest: dict[str, Any], namespace: str) -> subprocess.CompletedProcess[str]:
        return self.kubectl("apply", "-n", namespace, "-f", "-", stdin=json.dumps(manifest), check=False)

    def namespace(self, name: str) -> str:
        """A fresh namespace (deleted first if an earlier run left it)."""
        self.kubectl("delete", "namespace", name, "--ignore-not-found", "--wait=true", timeout=180)
        self.kubectl("create", "namespace", name)
        return name

    # ---- a job ----------------------------------------------------------------------------------

    def job(self, namespace: str, name: str) -> dict[str, Any]:
        got = self.get("swarmtraining", name, "-n", namespace)
        assert got is not None, f"SwarmTraining {namespace}/{name} is gone"
        return dict(got)

    def status(self, namespace: str, name: str) -> dict[str, Any]:
        return dict(self.job(namespace, name).get("status") or {})

    def watch_rounds(self, namespace: str, name: str, seen: list[int]) -> dict[str, Any]:
        """The job's status, asserting it has not Failed; its `round`, if any, appended to `seen`
        (a test that polls through this can then check the round never went back)."""
        st = self.status(namespace, name)
        assert st.get("phase") != "Failed", json.dumps(st)[:2000]
        if "round" in st:
            seen.append(int(st["round"]))
        return st

    def pods(self, namespace: str, job: str) -> list[dict[str, Any]]:
        """The job's pods: labelled with it AND controlled by its SwarmTraining, as the operator
        counts them (a pod that only copies the labels, like the rogue of test_2, is not one)."""
        return [
            p
            for p in self.items("pods", "-n", namespace, "-l", f"swarm.ncrsh.io/job={job}")
            if any(
                o.get("kind") == "SwarmTraining" and o.get("name") == job and o.get("controller")
                for o in p["metadata"].get("ownerReferences", [])
            )
        ]

    def pod_of(self, namespace: str, job: str, node_id: str) -> dict[str, Any] | None:
        live = [
            p
            for p in self.pods(namespace, job)
            if p["metadata"]["labels"].get("swarm.ncrsh.io/node") == node_id
            and not p["metadata"].get("deletionTimestamp")
        ]
        return live[0] if live else None

    def wait_phase(self, namespace: str, name: str, phases: set[str], timeout: float) -> dict[str, Any]:
        """The status once its phase is one of `phases`; fails early on an unexpected end."""

        def reached() -> dict[str, Any] | None:
            st = self.status(namespace, name)
            phase = st.get("phase")
            if phase in ("Succeeded", "Failed") and phase not in phases:
                raise AssertionError(f"{namespace}/{name} ended {phase}: {json.dumps(st)[:2000]}")
            return st if phase in phases else None

        what = f"{namespace}/{name} to be {'/'.join(sorted(phases))}"
        return dict(poll(what, reached, timeout, interval=1.0))

    def wait_round(self, namespace: str, name: str, round_: int, timeout: float) -> dict[str, Any]:
        return dict(
            poll(
                f"{namespace}/{name} to reach round {round_}",
                lambda: (st := self.status(namespace, name)).get("round", 0) >= round_ and st,
                timeout,
                interval=1.0,
            )
        )

    def operator_pod(self) -> dict[str, Any] | None:
        pods = [
            p
            for p in self.items("pods", "-n", RELEASE_NAMESPACE, "-l", OPERATOR_SELECTOR)
            if not p["metadata"].get("deletionTimestamp")
        ]
        return pods[0] if len(pods) == 1 else None

    # ---- what only the harness's own nodes allow ---------------------------------------------------

    def own_cluster(self) -> Cluster:
        assert self.cluster is not None, "needs the test cluster's own nodes"
        return self.cluster

    def kill_container(self, pod: dict[str, Any]) -> int:
        """SIGKILL the main process of the pod's container from its host (exit code 137); its PID."""
        cluster = self.own_cluster()
        node = pod["spec"]["nodeName"]
        cid = pod["status"]["containerStatuses"][0]["containerID"].split("://", 1)[1]
        sock = cluster.root / node / "containerd.sock"
        listing = subprocess.run(
            ["ctr", "--address", str(sock), "-n", "k8s.io", "tasks", "ls"],
            capture_output=True,
            text=True,
            check=True,
            timeout=30,
        ).stdout
        pids = [int(row.split()[1]) for row in listing.splitlines()[1:] if row.split()[:1] == [cid]]
        assert pids, f"no task {cid} on {node}"
        os.kill(pids[0], signal.SIGKILL)
        return pids[0]

    def stop_node(self, node: str) -> None:
        nodes.stop_node(self.own_cluster(), int(node.removeprefix("node")))


def example(name: str) -> dict[str, Any]:
    return dict(yaml.safe_load((EXAMPLES / name).read_text()))


def sized_for_test_nodes(manifest: dict[str, Any], name: str | None = None) -> dict[str, Any]:
    """An example with the requests of examples/training.yaml, so that its 11 pods fit two nodes
    of this 2-core machine (the examples for `swarm run` keep Kubernetes' default sizes)."""
    sizes = example("training.yaml")["spec"]["workers"]["resources"]
    out = copy.deepcopy(manifest)
    out["spec"].setdefault("workers", {})["resources"] = dict(sizes)
    if name:
        out["metadata"]["name"] = name
    return out
