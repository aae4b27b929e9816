"""The main user path, with the failures a long run meets (user paths 2, 3, 5 and 6):

`kubectl apply -f examples/training.yaml`; while it trains, a worker's and then an interior
aggregator's container process is SIGKILLed from its host, and the operator pod is deleted. The
operator replaces each swarm pod and records why (exit code 137), its Deployment brings the operator
back, no node ever has two live pods, and the run still Succeeds with its accuracy, a reputation for
every node, the printer columns and the workers' progress in their logs. Deleting the resource then
removes everything it owned.
"""

from __future__ import annotations

import re
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from .conftest import REPORT
from .kube import EXAMPLES, Kube, example, poll

pytestmark = [pytest.mark.e2e, pytest.mark.cluster]

NAMESPACE = "e2e-training"
JOB = "training"
REPLICAS = 6
NODE_IDS = {"root", "agg-0", "agg-1", *(f"worker-{i}" for i in range(REPLICAS))}


class PodWatch:
    """Polls the job's pods in the background and remembers the most live pods any node had."""

    def __init__(self, kube: Kube, namespace: str, job: str) -> None:
        self.kube, self.namespace, self.job = kube, namespace, job
        self.most_live: Counter[str] = Counter()
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(1.0):
            live = Counter(
                p["metadata"]["labels"]["swarm.ncrsh.io/node"]
                for p in self.kube.pods(self.namespace, self.job)
                if p["status"].get("phase") in ("Pending", "Running")
                and not p["metadata"].get("deletionTimestamp")
            )
            for node, n in live.items():
                self.most_live[node] = max(self.most_live[node], n)
            self.samples += 1

    def __enter__(self) -> PodWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)


@dataclass
class Run:
    final: dict[str, Any] = field(default_factory=dict)
    columns: str = ""
    worker_log: str = ""
    killed: dict[str, int] = field(default_factory=dict)  # node id -> PID that was SIGKILLed
    operator_uids: tuple[str, str] = ("", "")
    #: The job's phase and round when the new operator pod was Ready: proof the deletion was mid-run.
    operator_back_at: tuple[str, int] = ("", 0)
    most_live: dict[str, int] = field(default_factory=dict)
    watch_samples: int = 0
    seconds: float = 0.0
    #: The job's NetworkPolicy as the apiserver stored it (created by the operator).
    policy: dict[str, Any] = field(default_factory=dict)
    #: What the rogue pod (job's labels, no keys) printed: its reply count per target.
    rogue_log: str = ""


def _kill_and_wait_replacement(kube: Kube, node_id: str, run: Run) -> None:
    pod = poll(
        f"{node_id} running",
        lambda: (
            (p := kube.pod_of(NAMESPACE, JOB, node_id))
            and p["status"].get("phase") == "Running"
            and p["status"].get("containerStatuses", [{}])[0].get("state", {}).get("running")
            and p
        ),
        timeout=240,
    )
    run.killed[node_id] = kube.kill_container(pod)
    old_uid = pod["metadata"]["uid"]
    poll(
        f"the restart of {node_id} in status",
        lambda: kube.status(NAMESPACE, JOB).get("restarts", {}).get("byNode", {}).get(node_id, 0) >= 1,
        timeout=120,
    )
    poll(
        f"a new {node_id} pod running",
        lambda: (
            (p := kube.pod_of(NAMESPACE, JOB, node_id))
            and p["metadata"]["uid"] != old_uid
            and p["status"].get("phase") == "Running"
        ),
        timeout=240,
    )


ROGUE = f"{JOB}-rogue"
#: The rogue dials the root as if it were agg-0, and agg-0 as if it were worker-0.
ROGUE_TARGETS = (
    f"{JOB}-root.{JOB}.{NAMESPACE}.svc:5555=agg-0",
    f"{JOB}-agg-0.{JOB}.{NAMESPACE}.svc:5555=worker-0",
)


def _rogue_pod() -> dict[str, Any]:
    """A pod of the job's namespace with worker-0's labels, our worker image and no keys: the
    NetworkPolicy lets it reach the data port (same labels), so only CURVE can keep it out."""
    script = (Path(__file__).parent / "rogue_hello.py").read_text()
    labels = {"swarm.ncrsh.io/job": JOB, "swarm.ncrsh.io/role": "worker", "swarm.ncrsh.io/node": "worker-0"}
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": ROGUE, "labels": labels},
        "spec": {
            "restartPolicy": "Never",
            "securityContext": {
                "runAsNonRoot": True,
                "runAsUser": 10001,
                "seccompProfile": {"type": "RuntimeDefault"},
            },
            "containers": [
                {
                    "name": "rogue",
                    "image": example("training.yaml")["spec"]["image"],
                    "imagePullPolicy": "IfNotPresent",
                    "command": ["python", "-c", script, JOB, *ROGUE_TARGETS],
                    # Our codec imports torch: about 540 MiB resident.
                    "resources": {"requests": {"cpu": "50m", "memory": "1Gi"}, "limits": {"memory": "1Gi"}},
                    "securityContext": {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}},
                }
            ],
        },
    }


@pytest.fixture(scope="module")
def run(chart: Kube) -> Run:
    kube, out = chart, Run()
    kube.namespace(NAMESPACE)
    t0 = time.monotonic()
    applied = kube.kubectl("apply", "-n", NAMESPACE, "-f", str(EXAMPLES / "training.yaml"))
    assert "swarmtraining.swarm.ncrsh.io/training created" in applied.stdout
    with PodWatch(kube, NAMESPACE, JOB) as watch:
        kube.wait_phase(NAMESPACE, JOB, {"Running"}, timeout=300)
        out.policy = kube.get("networkpolicy", JOB, "-n", NAMESPACE) or {}
        kube.wait_round(NAMESPACE, JOB, 2, timeout=300)
        applied = kube.apply(_rogue_pod(), NAMESPACE)
        assert applied.returncode == 0, applied.stderr
        _kill_and_wait_replacement(kube, "worker-1", out)
        _kill_and_wait_replacement(kube, "agg-0", out)
        old = kube.operator_pod()
        assert old is not None
        kube.kubectl(
            "delete", "pod", "-n", old["metadata"]["namespace"], old["metadata"]["name"], "--wait=false"
        )
        new = poll(
            "a new operator pod Ready",
            lambda: (
                (p := kube.operator_pod())
                and p["metadata"]["uid"] != old["metadata"]["uid"]
                and all(c.get("ready") for c in p["status"].get("containerStatuses", [{}]))
                and p
            ),
            timeout=180,
        )
        out.operator_uids = (old["metadata"]["uid"], new["metadata"]["uid"])
        st = kube.status(NAMESPACE, JOB)
        out.operator_back_at = (st.get("phase", ""), st.get("round", 0))
        out.final = kube.wait_phase(NAMESPACE, JOB, {"Succeeded"}, timeout=600)
    out.seconds = time.monotonic() - t0
    out.most_live, out.watch_samples = dict(watch.most_live), watch.samples
    out.columns = kube.kubectl("get", "swt", "-n", NAMESPACE).stdout
    REPORT.append(f"e2e main run, {out.seconds:.0f} s from apply to Succeeded:\n{out.columns.rstrip()}")
    out.worker_log = kube.kubectl("logs", "-n", NAMESPACE, f"{JOB}-worker-0").stdout
    poll(
        "the rogue pod to finish",
        lambda: (kube.get("pod", ROGUE, "-n", NAMESPACE) or {}).get("status", {}).get("phase") == "Succeeded",
        timeout=120,
    )
    out.rogue_log = kube.kubectl("logs", "-n", NAMESPACE, ROGUE).stdout
    # Not the job's (no owner reference): deleting the SwarmTraining would leave it behind.
    kube.kubectl("delete", "pod", "-n", NAMESPACE, ROGUE, "--wait=true", timeout=120)
    return out


def test_run_succeeds_with_accuracy_and_a_reputation_for_every_node(run: Run) -> None:
    st = run.final
    assert st["phase"] == "Succeeded"
    assert st["round"] == example("training.yaml")["spec"]["training"]["rounds"]
    assert st["accuracy"] >= 0.9
    nodes = {n["id"]: n for n in st["nodes"]}
    assert set(nodes) == NODE_IDS
    # Every node but the root is scored by its parent; the root has no parent to judge it.
    assert "reputation" not in nodes["root"]
    for node_id, n in nodes.items():
        if node_id != "root":
            assert 0.0 <= n["reputation"] <= 1.0, node_id
    workers = [n for n in nodes.values() if n["role"] == "worker"]
    assert all(n["reputation"] > 0.5 and not n["quarantined"] for n in workers), workers
    conditions = {c["type"]: c["status"] for c in st["conditions"]}
    assert conditions.get("Succeeded") == "True"


def test_killed_worker_and_aggregator_were_replaced_with_their_cause(run: Run) -> None:
    restarts = run.final["restarts"]
    assert restarts["byNode"].get("worker-1", 0) >= 1
    assert restarts["byNode"].get("agg-0", 0) >= 1
    for node_id in ("worker-1", "agg-0"):
        assert "exit code 137" in restarts["lastFailure"][node_id], restarts["lastFailure"]
    nodes = {n["id"]: n for n in run.final["nodes"]}
    assert nodes["worker-1"]["restarts"] >= 1
    assert nodes["agg-0"]["restarts"] >= 1


def test_no_node_ever_had_two_live_pods(run: Run) -> None:
    assert run.watch_samples > 10
    assert set(run.most_live) == NODE_IDS
    assert max(run.most_live.values()) == 1, run.most_live


def test_operator_came_back_and_status_was_kept(run: Run) -> None:
    old, new = run.operator_uids
    assert old
    assert new != old
    assert run.operator_back_at[0] == "Running", run.operator_back_at
    # The restart counts written before the operator pod was deleted survived it.
    assert run.final["restarts"]["total"] >= 2


def test_kubectl_get_swt_shows_the_columns(run: Run) -> None:
    header, row = run.columns.splitlines()[:2]
    assert header.split() == ["NAME", "PHASE", "ROUND", "LOSS", "ACCURACY", "READY", "AGE"]
    cells = row.split()
    assert cells[:3] == [JOB, "Succeeded", str(run.final["round"])]
    assert float(cells[3]) == pytest.approx(run.final["loss"], rel=1e-3)
    assert float(cells[4]) == pytest.approx(run.final["accuracy"], rel=1e-3)


def test_kubectl_logs_of_a_worker_show_its_progress(run: Run) -> None:
    lines = [ln for ln in run.worker_log.splitlines() if "round" in ln]
    assert len(lines) >= 5, run.worker_log[-2000:]


def test_a_rogue_pod_with_the_jobs_labels_gets_nothing_and_changes_nothing(run: Run) -> None:
    """No CURVE key: its HELLOs never complete a handshake, so no model and no answer; the operator
    neither counts it as worker-0 nor replaces anything because of it."""
    counts = re.findall(r"rogue: (\S+) as (\S+): (\d+) replies", run.rogue_log)
    assert len(counts) == len(ROGUE_TARGETS), run.rogue_log
    assert all(n == "0" for _, _, n in counts), run.rogue_log
    nodes = {n["id"]: n for n in run.final["nodes"]}
    assert nodes["worker-0"]["pod"] == f"{JOB}-worker-0"
    assert "worker-0" not in run.final["restarts"]["byNode"]
    assert not nodes["worker-0"]["quarantined"]


def test_the_operator_created_the_jobs_network_policy(run: Run) -> None:
    """Accepted by the apiserver as built: the data port only from the job's pods, the metrics port
    only from the operator's namespace (this cluster's CNI does not enforce it; the data plane
    authenticates peers itself)."""
    spec = run.policy["spec"]
    assert spec["podSelector"] == {"matchLabels": {"swarm.ncrsh.io/job": JOB}}
    assert spec["policyTypes"] == ["Ingress"]
    data, metrics = spec["ingress"]
    assert data["from"] == [{"podSelector": {"matchLabels": {"swarm.ncrsh.io/job": JOB}}}]
    assert [p["port"] for p in data["ports"]] == [5555]
    assert [p["port"] for p in metrics["ports"]] == [9090]
    operator_ns = metrics["from"][0]["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"]
    assert operator_ns != NAMESPACE
    owner = run.policy["metadata"]["ownerReferences"][0]
    assert owner["kind"] == "SwarmTraining"
    assert owner["controller"] is True


def test_deleting_the_resource_removes_everything_it_owned(chart: Kube, run: Run) -> None:
    chart.kubectl("delete", "swarmtraining", JOB, "-n", NAMESPACE, "--wait=true", timeout=180)
    selector = f"swarm.ncrsh.io/job={JOB}"

    def all_gone() -> bool:
        left = chart.kubectl(
            "get",
            "pods,services,configmaps,networkpolicies,secrets",
            "-n",
            NAMESPACE,
            "-l",
            selector,
            "-o",
            "name",
        ).stdout.split()
        return not left

    poll("every owned object to be deleted", all_gone, timeout=180)
    chart.kubectl("delete", "namespace", NAMESPACE, "--wait=false")
