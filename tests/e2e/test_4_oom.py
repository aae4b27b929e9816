"""Two user paths side by side on the one cluster (both jobs are applied before either is awaited):

- User path 3, memory: a worker whose memory limit is too small for torch is killed by the kernel;
  the operator records the cause as OOMKilled, replaces it once, and when the replacement dies the
  same way the job fails saying why (restartPolicy.perNodeLimit 1).
- examples/replicated.yaml (tests/e2e/replication.py): the leader of 4 root replicas has its pod
  deleted mid-run; the others go on, the replacement catches up, the run Succeeds. Its test comes
  first, since it must act while its job runs.
"""

from __future__ import annotations

from typing import Any

import pytest

from . import replication
from .conftest import REPORT
from .kube import Kube, example, sized_for_test_nodes

pytestmark = [pytest.mark.e2e, pytest.mark.cluster]

NAMESPACE = "e2e-oom"


def _oom_job() -> dict[str, Any]:
    manifest = sized_for_test_nodes(example("training.yaml"), name="oom")
    spec = manifest["spec"]
    spec["workers"]["replicas"] = 2
    spec["workers"]["resources"]["memory"] = "64Mi"  # importing torch needs several times this
    spec["restartPolicy"] = {"perNodeLimit": 1, "perJobLimit": 10, "backoffSeconds": 1}
    return manifest


@pytest.fixture(scope="module")
def jobs(chart: Kube) -> dict[str, dict[str, Any]]:
    """Both manifests, applied at once."""
    applied = {replication.NAMESPACE: replication.replicated_job(), NAMESPACE: _oom_job()}
    for namespace, manifest in applied.items():
        chart.namespace(namespace)
        assert chart.apply(manifest, namespace).returncode == 0
    return applied


def test_a_deleted_leader_replica_is_outlived_and_caught_up(
    chart: Kube, jobs: dict[str, dict[str, Any]]
) -> None:
    REPORT.append(replication.check_deleted_leader_is_outlived(chart, jobs[replication.NAMESPACE]))


def test_a_worker_over_its_memory_limit_is_recorded_as_oomkilled(
    chart: Kube, jobs: dict[str, dict[str, Any]]
) -> None:
    final = chart.wait_phase(NAMESPACE, "oom", {"Failed"}, timeout=300)

    assert final["restarts"]["byCause"].get("OOMKilled", 0) >= 1, final["restarts"]
    workers = [n for n in final["nodes"] if n["role"] == "worker"]
    oom_workers = [
        n for n in workers if n.get("lastFailureReason", "").startswith("OOMKilled: exit code 137")
    ]
    assert oom_workers, workers
    failed = {c["type"]: c for c in final["conditions"]}["Failed"]
    assert failed["status"] == "True"
    assert failed["reason"] == "NodeRestartLimitExceeded"
    assert "OOMKilled" in failed["message"]
    chart.kubectl("delete", "namespace", NAMESPACE, "--wait=false")
