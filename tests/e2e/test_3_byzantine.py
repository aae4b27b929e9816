"""User path 4: examples/robust.yaml (two simulated ALIE attackers among 8 workers; centered
clipping with f = 2 and reputation, the configuration of benchmarks/results/attacks_swarm.md) run
by the operator in real pods. The attackers end with the lowest reputations and are quarantined,
and the accuracy bar is still met."""

from __future__ import annotations

import pytest

from .kube import Kube, example, sized_for_test_nodes

pytestmark = [pytest.mark.e2e, pytest.mark.cluster]

NAMESPACE = "e2e-byzantine"


def test_attackers_are_quarantined_and_accuracy_holds(chart: Kube) -> None:
    manifest = sized_for_test_nodes(example("robust.yaml"))
    job = manifest["metadata"]["name"]
    attackers = {f"worker-{b['worker']}" for b in manifest["spec"]["simulation"]["byzantine"]}
    chart.namespace(NAMESPACE)
    assert chart.apply(manifest, NAMESPACE).returncode == 0
    final = chart.wait_phase(NAMESPACE, job, {"Succeeded"}, timeout=600)

    assert final["accuracy"] >= 0.9
    workers = {n["id"]: n for n in final["nodes"] if n["role"] == "worker"}
    assert len(workers) == manifest["spec"]["workers"]["replicas"]
    honest = {k: v for k, v in workers.items() if k not in attackers}
    assert max(workers[a]["reputation"] for a in attackers) < min(h["reputation"] for h in honest.values())
    assert all(workers[a]["quarantined"] for a in attackers), {a: workers[a] for a in attackers}
    assert not any(h["quarantined"] for h in honest.values())
    chart.kubectl("delete", "namespace", NAMESPACE, "--wait=false")
