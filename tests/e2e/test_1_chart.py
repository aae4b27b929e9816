"""`helm install` of the chart: the operator runs from its own image as the chart's ServiceAccount and
its liveness probe passes; the CRD that came with the chart refuses an invalid spec, naming the
field (user paths 1 and 7)."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime

import pytest

from .kube import OPERATOR_IMAGE, RELEASE_NAMESPACE, Kube, example

pytestmark = [pytest.mark.e2e, pytest.mark.cluster]


def test_operator_runs_from_its_image_as_the_charts_service_account(chart: Kube) -> None:
    pod = chart.operator_pod()
    assert pod is not None
    spec, status = pod["spec"], pod["status"]
    container = spec["containers"][0]
    assert container["image"].split("/")[-1] == OPERATOR_IMAGE.split("/")[-1]
    assert spec["serviceAccountName"] == "swarm-ncrsh-swarm"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert spec["securityContext"]["runAsNonRoot"] is True

    # The kubelet probes every 15 s after 10 s: once the container has run for three probes, they
    # passed if it never restarted and no probe failure was reported.
    started = datetime.fromisoformat(status["containerStatuses"][0]["state"]["running"]["startedAt"])
    time.sleep(max(0.0, 10 + 3 * 15 - (datetime.now(UTC) - started).total_seconds()))
    pod = chart.operator_pod()
    assert pod is not None
    assert pod["status"]["containerStatuses"][0]["restartCount"] == 0
    events = chart.items(
        "events",
        "-n",
        RELEASE_NAMESPACE,
        "--field-selector",
        f"involvedObject.name={pod['metadata']['name']}",
    )
    assert not [e for e in events if e.get("reason") == "Unhealthy"]
    # The same endpoint, reached through the apiserver's pod proxy. `kubectl get --raw` exits non-zero
    # on any answer but a 2xx (a 500 from a failing probe, a 404 from a wrong path, a 503 when nothing
    # listens), and kopf's health reporter answers a JSON object of its probes' results: empty, as the
    # operator registers no @kopf.on.probe.
    url = f"/api/v1/namespaces/{RELEASE_NAMESPACE}/pods/{pod['metadata']['name']}:8080/proxy/healthz"
    healthz = chart.kubectl("get", "--raw", url, check=False)
    assert healthz.returncode == 0, f"GET {url}: {healthz.stderr.strip()}"
    assert json.loads(healthz.stdout) == {}, healthz.stdout
    assert status["phase"] == "Running"


def test_the_service_account_may_manage_swarms_and_nothing_more(chart: Kube) -> None:
    sa = f"system:serviceaccount:{RELEASE_NAMESPACE}:swarm-ncrsh-swarm"

    def can(verb: str, resource: str) -> str:
        r = chart.kubectl("auth", "can-i", verb, resource, "--as", sa, "-A", check=False)
        return r.stdout.strip()

    assert can("create", "pods") == "yes"
    assert can("patch", "swarmtrainings.swarm.ncrsh.io/status") == "yes"
    assert can("delete", "nodes") == "no"
    # It creates each job's key Secret, and can read none.
    assert can("create", "secrets") == "yes"
    assert can("get", "secrets") == "no"
    assert can("create", "networkpolicies.networking.k8s.io") == "yes"


def test_invalid_spec_is_refused_naming_the_field(chart: Kube) -> None:
    manifest = example("training.yaml")
    manifest["metadata"]["name"] = "invalid"
    manifest["spec"]["training"]["minPeers"] = 7  # more than the 6 workers
    result = chart.apply(manifest, "default")
    assert result.returncode != 0
    assert "spec.training.minPeers" in result.stderr
    assert "exceeds workers.replicas" in result.stderr
    manifest["spec"]["training"].pop("minPeers")
    manifest["spec"]["compression"]["method"] = "zip"
    result = chart.apply(manifest, "default")
    assert result.returncode != 0
    assert "spec.compression.method" in result.stderr
    assert chart.get("swarmtraining", "invalid", "-n", "default") is None
