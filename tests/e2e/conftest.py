"""The e2e suite's cluster and chart, started once per session.

Which cluster: `--existing-cluster[=KUBECONFIG]` or $KUBECONFIG (kind or a real cluster, with the two
images loaded: docs/test-cluster.md), else our own test cluster with two real kubelet nodes and the
images that tests/cluster/images.sh built (scripts/test.sh builds them first). Then `helm install`
of charts/ncrsh-swarm: the operator runs from its image, as the chart's ServiceAccount.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cluster.binaries import CONTROL_PLANE_BINARIES, NODE_BINARIES, not_built
from tests.cluster.fixtures import existing_kubeconfig
from tests.cluster.harness import Cluster, ClusterError, ClusterSpec
from tests.cluster.imagetars import our_image_tars

from .kube import CHART, OPERATOR_SELECTOR, RELEASE, RELEASE_NAMESPACE, Kube

#: Seconds a session spent on each setup step, printed at the end (cold/warm figures for the note).
TIMINGS: dict[str, float] = {}
#: Lines that tests want in the terminal summary (e.g. `kubectl get swt` of the main run).
REPORT: list[str] = []


def _own_cluster_unavailable() -> str:
    missing = not_built(*CONTROL_PLANE_BINARIES, *NODE_BINARIES, "helm")
    if missing:
        return missing
    if os.geteuid() != 0:
        return "the test cluster's real nodes need root (containerd, kubelet, iptables)"
    try:
        our_image_tars()
    except ClusterError as e:
        return str(e)
    return ""


@pytest.fixture(scope="package")
def e2e_cluster(request: pytest.FixtureRequest) -> Iterator[Kube]:
    existing = existing_kubeconfig(request.config)
    if existing is not None:
        yield Kube(existing)
        return
    reason = _own_cluster_unavailable()
    if reason:
        pytest.skip(reason)
    t = time.monotonic()
    spec = ClusterSpec(name="e2e", nodes=2, fake_nodes=0, image_tars=our_image_tars())
    with Cluster(spec).running() as cluster:
        TIMINGS.update({f"cluster_{k}": v for k, v in cluster.timings.items()})
        TIMINGS["cluster_up_s"] = time.monotonic() - t
        yield Kube(cluster.kubeconfig, cluster)
        t = time.monotonic()
    TIMINGS["cluster_down_s"] = time.monotonic() - t


@pytest.fixture(scope="package")
def chart(e2e_cluster: Kube) -> Iterator[Kube]:
    """The operator, installed by `helm install` and Ready; uninstalled at the end if a test did not."""
    kube = e2e_cluster
    t = time.monotonic()
    kube.helm(
        "install",
        RELEASE,
        str(CHART),
        "--namespace",
        RELEASE_NAMESPACE,
        "--create-namespace",
        "--wait",
        "--timeout",
        "5m",
        "--values",
        str(Path(__file__).parent / "values.yaml"),
        timeout=330,
    )
    kube.kubectl(
        "wait",
        "pods",
        "-n",
        RELEASE_NAMESPACE,
        "-l",
        OPERATOR_SELECTOR,
        "--for=condition=Ready",
        "--timeout=180s",
        timeout=200,
    )
    TIMINGS["helm_install_ready_s"] = time.monotonic() - t
    yield kube
    if RELEASE in kube.helm("list", "-n", RELEASE_NAMESPACE, "-q").stdout.split():
        kube.helm("uninstall", RELEASE, "-n", RELEASE_NAMESPACE, "--wait")


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if TIMINGS:
        figures = ", ".join(f"{k} {v:.0f} s" for k, v in TIMINGS.items())
        terminalreporter.write_line(f"e2e timings: {figures}")
    for line in REPORT:
        terminalreporter.write_line(line)
