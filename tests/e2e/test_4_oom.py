"""User path 3, memory: a worker whose memory limit is too small for torch is killed by the kernel;
the operator records the cause as OOMKilled, replaces it once, and when the replacement dies the same
way the job fails saying why (restartPolicy.perNodeLimit 1)."""

from __future__ import annotations

import pytest

from .kube import Kube, example, sized_for_test_nodes

pytestmark = [pytest.mark.e2e, pytest.mark.cluster]

NAMESPACE = "e2e-oom"


def test_a_worker_over_its_memory_limit_is_recorded_as_oomkilled(chart: Kube) -> None:
    manifest = sized_for_test_nodes(example("training.yaml"), name="oom")
    spec = manifest["spec"]
    spec["workers"]["replicas"] = 2
    spec["workers"]["resources"]["memory"] = "64Mi"  # importing torch needs several times this
    spec["restartPolicy"] = {"perNodeLimit": 1, "perJobLimit": 10, "backoffSeconds": 1}
    chart.namespace(NAMESPACE)
    assert chart.apply(manifest, NAMESPACE).returncode == 0
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
