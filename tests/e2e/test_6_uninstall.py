"""User path 6, the end: `helm uninstall` leaves nothing of the chart but the CRD, which the chart
keeps on purpose (`crds.keep`: deleting a CRD deletes every SwarmTraining in the cluster)."""

from __future__ import annotations

import pytest

from .kube import RELEASE, RELEASE_NAMESPACE, Kube, poll

pytestmark = [pytest.mark.e2e, pytest.mark.cluster]

INSTANCE = f"app.kubernetes.io/instance={RELEASE}"


def test_helm_uninstall_leaves_nothing_of_the_chart(chart: Kube) -> None:
    chart.helm("uninstall", RELEASE, "-n", RELEASE_NAMESPACE, "--wait", "--timeout", "3m", timeout=200)

    def namespaced_left() -> list[str]:
        r = chart.kubectl(
            "get",
            "deployments,replicasets,pods,services,serviceaccounts,configmaps,secrets,roles,rolebindings",
            "-n",
            RELEASE_NAMESPACE,
            "-l",
            INSTANCE,
            "-o",
            "name",
        )
        return r.stdout.split()

    poll("the release's objects to be gone", lambda: not namespaced_left(), timeout=120)
    cluster_scoped = chart.kubectl("get", "clusterroles,clusterrolebindings", "-l", INSTANCE, "-o", "name")
    assert cluster_scoped.stdout.split() == []
    assert RELEASE not in chart.helm("list", "-A", "-q").stdout.split()
    crd = chart.get("crd", "swarmtrainings.swarm.ncrsh.io")
    assert crd is not None
    assert crd["metadata"].get("annotations", {}).get("helm.sh/resource-policy") == "keep"
