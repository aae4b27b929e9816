"""User paths 4 and 9, side by side on the one cluster (both jobs are applied before either is
awaited, so the suite pays for the longer one only):

- examples/robust.yaml (two simulated ALIE attackers among 8 workers; centered clipping with f = 2
  and reputation, the configuration of benchmarks/results/attacks_swarm.md) run by the operator in
  real pods: the attackers end with the lowest reputations and are quarantined, and the accuracy
  bar is still met.
- examples/lm.yaml, the language-model task's `tiny` preset (4 workers and the root, on CPU), for
  the rounds of tests/integration/test_lm_run.py: it Succeeds with a validation loss below the same
  bar. The corpus is the worker image's own Python standard library (Debian bookworm's python3,
  /usr/lib/python3.11, which `sysconfig` names inside the image's venv too), so this also proves the
  image carries it.
- examples/checkpointed.yaml (tests/e2e/checkpointing.py): its root pod deleted mid-run resumes at its
  checkpoint on a PersistentVolumeClaim; its test comes first, since it must act while its job runs.
"""

from __future__ import annotations

import math
from typing import Any

import pytest

from tests.integration.test_lm_run import LOSS_BAR, ROUNDS

from . import checkpointing
from .conftest import REPORT
from .kube import Kube, example, sized_for_test_nodes

pytestmark = [pytest.mark.e2e, pytest.mark.cluster]

BYZANTINE_NAMESPACE = "e2e-byzantine"
LM_NAMESPACE = "e2e-lm"


def _lm_manifest() -> dict[str, Any]:
    manifest = sized_for_test_nodes(example("lm.yaml"))
    manifest["spec"]["training"]["rounds"] = ROUNDS
    # Measured with `swarm run` (CUDA torch on CPU): peak RSS 850 MiB per worker, ~630 MiB at the
    # root; importing torch alone is 540 MiB. The 1 Gi of the other e2e examples leaves too little
    # margin, so this job's pods (the root follows the workers) get 1.5 Gi.
    manifest["spec"]["workers"]["resources"]["memory"] = "1536Mi"
    return manifest


@pytest.fixture(scope="module")
def jobs(chart: Kube) -> dict[str, dict[str, Any]]:
    """Both manifests, applied at once."""
    applied = {
        BYZANTINE_NAMESPACE: sized_for_test_nodes(example("robust.yaml")),
        LM_NAMESPACE: _lm_manifest(),
        checkpointing.NAMESPACE: checkpointing.checkpointed_job(chart),
    }
    for namespace, manifest in applied.items():
        chart.namespace(namespace)
        assert chart.apply(manifest, namespace).returncode == 0
    return applied


def test_a_deleted_root_pod_resumes_at_its_checkpoint(chart: Kube, jobs: dict[str, dict[str, Any]]) -> None:
    REPORT.append(checkpointing.check_deleted_root_resumes(chart, jobs[checkpointing.NAMESPACE]))


def test_attackers_are_quarantined_and_accuracy_holds(chart: Kube, jobs: dict[str, dict[str, Any]]) -> None:
    manifest = jobs[BYZANTINE_NAMESPACE]
    job = manifest["metadata"]["name"]
    attackers = {f"worker-{b['worker']}" for b in manifest["spec"]["simulation"]["byzantine"]}
    final = chart.wait_phase(BYZANTINE_NAMESPACE, job, {"Succeeded"}, timeout=600)

    assert final["accuracy"] >= 0.9
    workers = {n["id"]: n for n in final["nodes"] if n["role"] == "worker"}
    assert len(workers) == manifest["spec"]["workers"]["replicas"]
    honest = {k: v for k, v in workers.items() if k not in attackers}
    assert max(workers[a]["reputation"] for a in attackers) < min(h["reputation"] for h in honest.values())
    assert all(workers[a]["quarantined"] for a in attackers), {a: workers[a] for a in attackers}
    assert not any(h["quarantined"] for h in honest.values())
    chart.kubectl("delete", "namespace", BYZANTINE_NAMESPACE, "--wait=false")


def test_lm_tiny_preset_trains_in_pods(chart: Kube, jobs: dict[str, dict[str, Any]]) -> None:
    manifest = jobs[LM_NAMESPACE]
    job = manifest["metadata"]["name"]
    final = chart.wait_phase(LM_NAMESPACE, job, {"Succeeded"}, timeout=600)

    assert final["round"] == ROUNDS
    assert final["loss"] < LOSS_BAR < math.log(256)
    workers = [n for n in final["nodes"] if n["role"] == "worker"]
    assert len(workers) == manifest["spec"]["workers"]["replicas"]
    log = chart.kubectl("logs", "-n", LM_NAMESPACE, f"{job}-worker-0").stdout
    assert sum("round" in line and "loss" in line for line in log.splitlines()) >= ROUNDS, log[-2000:]
    REPORT.append(f"e2e lm (tiny preset, {ROUNDS} rounds): validation loss {final['loss']:.3f}")
    chart.kubectl("delete", "namespace", LM_NAMESPACE, "--wait=false")
