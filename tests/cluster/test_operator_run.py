"""The operator (`python -m swarm_operator`, a subprocess with the admin kubeconfig) against a real
control plane with a fake GPU node: it creates the swarm's children, replaces a failed pod and
records why, carries on after its own restart without duplicating pods, lets garbage collection
remove the children of a deleted SwarmTraining, and reads the root's /status.

Pods on a fake node never run, so the test plays the kubelet: it patches pod status (a worker
`Failed` with exit code 137; the root `Running` at 127.0.0.1, where the test serves /status)."""

from __future__ import annotations

import contextlib
import http.server
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from .binaries import CONTROL_PLANE_BINARIES, not_built
from .fixtures import kube_cluster  # noqa: F401
from .harness import free_port, kubectl, poll
from .test_operator_crd import REPO, install_crd

NOT_BUILT = not_built(*CONTROL_PLANE_BINARIES)
pytestmark = [pytest.mark.cluster, pytest.mark.skipif(bool(NOT_BUILT), reason=NOT_BUILT)]

#: Fresh per run, so a cluster kept between runs (KUBECONFIG) starts clean.
NAMESPACE = f"operator-run-{os.getpid()}"
JOB = "digits"
EXPECTED_PODS = sorted(
    [f"{JOB}-root", f"{JOB}-agg-0", f"{JOB}-agg-1", *(f"{JOB}-worker-{i}" for i in range(8))]
)


class Operator:
    """`python -m swarm_operator` in its own process group, stoppable and restartable."""

    def __init__(self, kubeconfig: Path, log: Path, namespace: str = NAMESPACE) -> None:
        self.kubeconfig, self.log, self.namespace = kubeconfig, log, namespace
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        venv_bin = str(Path(sys.executable).parent)
        env = {
            **os.environ,
            "KUBECONFIG": str(self.kubeconfig),
            "PATH": f"{venv_bin}:{os.environ.get('PATH', '')}",
            "PYTHONPATH": ":".join(str(REPO / part / "src") for part in ("contract", "worker", "operator")),
            "SWARM_WATCH_NAMESPACES": self.namespace,
            "SWARM_HEALTH_PORT": str(free_port()),
            "SWARM_METRICS_PORT": "0",
            "SWARM_SYNC_INTERVAL_SECONDS": "1",
        }
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "swarm_operator"],
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=5)

    def tail(self, lines: int = 40) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])


@pytest.fixture(scope="module")
def cluster(kube_cluster: Path) -> Path:  # noqa: F811
    install_crd(kube_cluster)
    kubectl(kube_cluster, "create", "namespace", NAMESPACE, check=False)
    poll(
        "the namespace's default ServiceAccount",
        lambda: kubectl(kube_cluster, "get", "sa", "default", "-n", NAMESPACE, check=False).returncode == 0,
    )
    return kube_cluster


@pytest.fixture(scope="module")
def operator(cluster: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Operator]:
    op = Operator(cluster, tmp_path_factory.mktemp("operator") / "operator.log")
    op.start()
    try:
        yield op
    finally:
        op.stop()


def get(kubeconfig: Path, *what: str) -> Any:
    return json.loads(kubectl(kubeconfig, "get", "-n", NAMESPACE, *what, "-o", "json").stdout)


def pods_of(kubeconfig: Path, job: str) -> dict[str, dict[str, Any]]:
    items = get(kubeconfig, "pods", "-l", f"swarm.ncrsh.io/job={job}")["items"]
    return {p["metadata"]["name"]: p for p in items}


def job_status(kubeconfig: Path, job: str) -> dict[str, Any]:
    return dict(get(kubeconfig, "swt", job).get("status") or {})


def patch_pod_status(kubeconfig: Path, pod: str, status: dict[str, Any]) -> None:
    kubectl(
        kubeconfig,
        "patch",
        "pod",
        pod,
        "-n",
        NAMESPACE,
        "--subresource=status",
        "--type=merge",
        "-p",
        json.dumps({"status": status}),
    )


@pytest.fixture(scope="module")
def digits(cluster: Path, operator: Operator) -> dict[str, Any]:
    """examples/digits.yaml applied; its SwarmTraining once every pod exists."""
    kubectl(cluster, "apply", "-n", NAMESPACE, "-f", str(REPO / "examples" / "digits.yaml"))
    try:
        poll("the operator to create 11 pods", lambda: len(pods_of(cluster, JOB)) == 11, timeout=90)
    except AssertionError as e:
        raise AssertionError(f"{e}\noperator log:\n{operator.tail()}") from e
    return dict(get(cluster, "swt", JOB))


def test_creates_service_configmap_and_exactly_the_tree_of_pods_owned_by_the_job(
    cluster: Path, digits: dict[str, Any]
) -> None:
    uid = digits["metadata"]["uid"]
    owner = {
        "apiVersion": "swarm.ncrsh.io/v1alpha1",
        "kind": "SwarmTraining",
        "name": JOB,
        "uid": uid,
    }
    service = get(cluster, "service", JOB)
    configmap = get(cluster, "configmap", f"{JOB}-config")
    pods = pods_of(cluster, JOB)
    assert sorted(pods) == EXPECTED_PODS
    assert service["spec"]["clusterIP"] == "None"
    assert "manifest.yaml" in configmap["data"]
    assert yaml.safe_load(configmap["data"]["manifest.yaml"])["spec"]["workers"]["replicas"] == 8
    for obj in [service, configmap, *pods.values()]:
        refs = obj["metadata"].get("ownerReferences") or []
        assert [{k: r[k] for k in owner} for r in refs] == [owner], obj["metadata"]["name"]
        assert refs[0].get("controller") is True
    status = poll("the first status tick", lambda: job_status(cluster, JOB).get("nodes"))
    assert sorted(n["pod"] for n in status) == EXPECTED_PODS  # type: ignore[attr-defined]


def test_failed_worker_is_replaced_and_its_restart_recorded_with_the_cause(
    cluster: Path, digits: dict[str, Any], operator: Operator
) -> None:
    victim = f"{JOB}-worker-3"
    old_uid = pods_of(cluster, JOB)[victim]["metadata"]["uid"]
    patch_pod_status(
        cluster,
        victim,
        {
            "phase": "Failed",
            "containerStatuses": [
                {
                    "name": "swarm",
                    "image": "ncrsh-swarm-worker",
                    "imageID": "",
                    "ready": False,
                    "restartCount": 0,
                    "state": {"terminated": {"exitCode": 137, "reason": "Error"}},
                }
            ],
        },
    )

    def replaced() -> bool:
        pod = pods_of(cluster, JOB).get(victim)
        return pod is not None and pod["metadata"]["uid"] != old_uid

    try:
        poll("the failed worker to be replaced", replaced, timeout=60)
    except AssertionError as e:
        raise AssertionError(f"{e}\noperator log:\n{operator.tail()}") from e
    assert sorted(pods_of(cluster, JOB)) == EXPECTED_PODS

    def recorded() -> dict[str, Any] | None:
        status = job_status(cluster, JOB)
        nodes = {n["id"]: n for n in status.get("nodes") or []}
        if status.get("restarts", {}).get("total") == 1 and nodes["worker-3"].get("pod") == victim:
            return status
        return None

    status = poll("the restart and the replacement in status", recorded)
    restarts = status["restarts"]  # type: ignore[index]
    assert restarts["byCause"] == {"Error": 1}
    assert restarts["byNode"] == {"worker-3": 1}
    assert restarts["lastFailure"]["worker-3"].startswith("Error")
    assert "137" in restarts["lastFailure"]["worker-3"]
    node = next(n for n in status["nodes"] if n["id"] == "worker-3")  # type: ignore[index]
    assert node["restarts"] == 1
    assert node["pod"] == victim


def test_operator_restart_creates_no_duplicate_pods(
    cluster: Path, digits: dict[str, Any], operator: Operator
) -> None:
    before = {name: p["metadata"]["uid"] for name, p in pods_of(cluster, JOB).items()}
    restarts_before = job_status(cluster, JOB)["restarts"]
    operator.stop()
    log_size = len(operator.log.read_text(errors="replace"))
    operator.start()
    poll(
        "the restarted operator to resume the job",
        lambda: "Handler 'create_children' succeeded" in operator.log.read_text(errors="replace")[log_size:],
        timeout=60,
    )
    # Asserting an absence: give the new operator a few reconcile ticks (1 s apart) to misbehave.
    time.sleep(5)
    after = {name: p["metadata"]["uid"] for name, p in pods_of(cluster, JOB).items()}
    assert after == before
    assert [s["metadata"]["name"] for s in get(cluster, "services")["items"]] == [JOB]
    assert job_status(cluster, JOB)["restarts"] == restarts_before


@contextlib.contextmanager
def serving(body: dict[str, Any]) -> Iterator[int]:
    """A loopback HTTP server answering GET /status with `body`; yields its port."""
    payload = json.dumps(body).encode()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            code = 200 if self.path == "/status" else 404
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            if code == 200:
                self.wfile.write(payload)

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


MEASURED = {"uptime": 1.0, "agreement": 1.0, "contribution": 1.0, "quarantined": False}


def test_root_status_fills_progress_and_node_reputations(cluster: Path, operator: Operator) -> None:
    job = "probe"
    root_status = {
        "job": job,
        "phase": "Running",
        "round": 7,
        "rounds": 30,
        "loss": 0.25,
        "accuracy": 0.9,
        # Whole records, as a real root serves them (swarm_contract.records.NodeRecord): the
        # operator leaves out a record that is not one.
        "nodes": [
            {"id": "worker-0", "role": "worker", "parent": "root", "reputation": 0.95, "lastRound": 7}
            | MEASURED,
            {"id": "worker-1", "role": "worker", "parent": "root", "reputation": 0.2, "lastRound": 6}
            | MEASURED,
        ],
    }
    with serving(root_status) as port:
        spec = {
            "apiVersion": "swarm.ncrsh.io/v1alpha1",
            "kind": "SwarmTraining",
            "metadata": {"name": job},
            "spec": {
                "workers": {"replicas": 2},
                "task": {"name": "digits"},
                "network": {"metricsPort": port},
            },
        }
        kubectl(cluster, "apply", "-n", NAMESPACE, "-f", "-", stdin=json.dumps(spec))
        try:
            poll("the probe's root pod", lambda: f"{job}-root" in pods_of(cluster, job), timeout=60)
            # Play the kubelet: the root runs, at the address where the test serves /status.
            patch_pod_status(
                cluster,
                f"{job}-root",
                {
                    "phase": "Running",
                    "podIP": "127.0.0.1",
                    "podIPs": [{"ip": "127.0.0.1"}],
                    "startTime": "2026-01-01T00:00:00Z",
                },
            )
            status = poll(
                "the root's round in status",
                lambda: (s := job_status(cluster, job)).get("round") == 7 and s,
                timeout=60,
            )
        except AssertionError as e:
            raise AssertionError(f"{e}\noperator log:\n{operator.tail()}") from e
        finally:
            kubectl(cluster, "delete", "swt", job, "-n", NAMESPACE, "--wait=false", check=False)
    assert status["rounds"] == 30  # type: ignore[index]
    assert status["loss"] == pytest.approx(0.25)  # type: ignore[index]
    nodes = {n["id"]: n for n in status["nodes"]}  # type: ignore[index]
    assert nodes["worker-0"]["reputation"] == pytest.approx(0.95)
    assert nodes["worker-1"]["reputation"] == pytest.approx(0.2)
    assert nodes["worker-1"]["lastRound"] == 6


def test_deleting_the_job_garbage_collects_its_children(cluster: Path, digits: dict[str, Any]) -> None:
    kubectl(cluster, "delete", "swt", JOB, "-n", NAMESPACE, "--wait=false")

    def children_left() -> list[str]:
        # A pod bound to a fake node stays Terminating (no kubelet confirms the end): a
        # deletionTimestamp is the garbage collector's work done.
        pods = [n for n, p in pods_of(cluster, JOB).items() if not p["metadata"].get("deletionTimestamp")]
        services = [s["metadata"]["name"] for s in get(cluster, "services")["items"]]
        configmaps = [c["metadata"]["name"] for c in get(cluster, "configmaps")["items"]]
        return pods + [n for n in services + configmaps if n in (JOB, f"{JOB}-config")]

    try:
        # The garbage collector learns a new CRD at its next discovery sync, up to a minute or more.
        poll("garbage collection of the job's children", lambda: not children_left(), timeout=240)
    finally:
        # Free the fake node's GPUs for whatever runs next on this cluster.
        kubectl(
            cluster, "delete", "pods", "-n", NAMESPACE, "--all", "--force", "--grace-period=0", check=False
        )
