"""The Helm chart against a real apiserver: everything `helm template` renders is accepted by a
server-side dry run, and the operator runs with nothing but the chart's RBAC (a token of the
chart's ServiceAccount, bound to its ClusterRoles): it creates a swarm and replaces a failed worker
without a single Forbidden."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from .binaries import CONTROL_PLANE_BINARIES, built_binary, not_built, versions
from .fixtures import kube_cluster  # noqa: F401
from .harness import kubectl, poll
from .test_operator_crd import REPO, install_crd
from .test_operator_run import Operator

NOT_BUILT = not_built(*CONTROL_PLANE_BINARIES, "helm")
pytestmark = [pytest.mark.cluster, pytest.mark.skipif(bool(NOT_BUILT), reason=NOT_BUILT)]

CHART = REPO / "charts" / "ncrsh-swarm"
RELEASE_NAMESPACE = "ncrsh-system"
#: Where the operator under the chart's RBAC runs its swarm.
SWARM_NAMESPACE = "chart-rbac"
RBAC_KINDS = {"ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"}


def helm_template(*values: str) -> list[dict[str, Any]]:
    # Without a cluster helm assumes an old Kubernetes; the chart requires >= 1.25.
    out = subprocess.run(
        [
            str(built_binary("helm")),
            "template",
            "swarm",
            str(CHART),
            "--namespace",
            RELEASE_NAMESPACE,
            "--kube-version",
            versions()["K8S_VERSION"],
            *values,
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    return [d for d in yaml.safe_load_all(out) if d]


@pytest.fixture(scope="module")
def cluster(kube_cluster: Path) -> Path:  # noqa: F811
    install_crd(kube_cluster)
    for ns in (RELEASE_NAMESPACE, SWARM_NAMESPACE):
        kubectl(kube_cluster, "create", "namespace", ns, check=False)
    return kube_cluster


@pytest.mark.parametrize(
    "values",
    [(), ("--set", "rbac.scope=namespaces", "--set", f"rbac.watchNamespaces={{{SWARM_NAMESPACE}}}")],
    ids=["cluster-scope", "namespace-scope"],
)
def test_rendered_chart_is_accepted_by_server_side_dry_run(cluster: Path, values: tuple[str, ...]) -> None:
    docs = helm_template(*values)
    kinds = {d["kind"] for d in docs}
    assert {"Deployment", "ServiceAccount", "CustomResourceDefinition"} <= kinds
    result = kubectl(
        cluster,
        "apply",
        "--dry-run=server",
        "-f",
        "-",
        stdin="\n---\n".join(yaml.safe_dump(d) for d in docs),
        check=False,
    )
    assert result.returncode == 0, result.stderr


@pytest.fixture(scope="module")
def chart_kubeconfig(cluster: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A kubeconfig holding a token of the chart's ServiceAccount, with the chart's RBAC applied."""
    rbac = [d for d in helm_template() if d["kind"] in RBAC_KINDS]
    kubectl(cluster, "apply", "-f", "-", stdin="\n---\n".join(yaml.safe_dump(d) for d in rbac))
    sa = next(d["metadata"]["name"] for d in rbac if d["kind"] == "ServiceAccount")
    token = kubectl(cluster, "create", "token", sa, "-n", RELEASE_NAMESPACE, "--duration=1h").stdout.strip()
    admin = yaml.safe_load(cluster.read_text())
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": admin["clusters"][:1],
        "users": [{"name": sa, "user": {"token": token}}],
        "contexts": [{"name": sa, "context": {"cluster": admin["clusters"][0]["name"], "user": sa}}],
        "current-context": sa,
    }
    path = tmp_path_factory.mktemp("chart") / "operator.kubeconfig"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture(scope="module")
def chart_operator(chart_kubeconfig: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Operator]:
    op = Operator(chart_kubeconfig, tmp_path_factory.mktemp("chart-op") / "operator.log", SWARM_NAMESPACE)
    op.start()
    try:
        yield op
    finally:
        op.stop()


def test_the_chart_grants_the_operator_no_more_than_it_uses(cluster: Path, chart_kubeconfig: Path) -> None:
    def can(*args: str) -> str:
        return kubectl(chart_kubeconfig, "auth", "can-i", *args, check=False).stdout.strip()

    assert can("create", "pods", "-n", SWARM_NAMESPACE) == "yes"
    assert (
        can("patch", "swarmtrainings.swarm.ncrsh.io", "--subresource=status", "-n", SWARM_NAMESPACE) == "yes"
    )
    # It creates each job's key Secret but can read no Secret, its own or anyone's.
    assert can("create", "secrets", "-n", SWARM_NAMESPACE) == "yes"
    assert can("get", "secrets", "-n", SWARM_NAMESPACE) == "no"
    assert can("list", "secrets", "-n", SWARM_NAMESPACE) == "no"
    assert can("create", "networkpolicies.networking.k8s.io", "-n", SWARM_NAMESPACE) == "yes"
    assert can("delete", "services", "-n", SWARM_NAMESPACE) == "no"


def test_operator_with_the_charts_rbac_creates_and_heals_a_swarm(
    cluster: Path, chart_operator: Operator
) -> None:
    job = "rbac"
    spec = {
        "apiVersion": "swarm.ncrsh.io/v1alpha1",
        "kind": "SwarmTraining",
        "metadata": {"name": job},
        "spec": {"workers": {"replicas": 2}, "task": {"name": "digits"}},
    }
    kubectl(cluster, "apply", "-n", SWARM_NAMESPACE, "-f", "-", stdin=json.dumps(spec))

    def pods() -> dict[str, str]:
        items = json.loads(
            kubectl(
                cluster, "get", "pods", "-n", SWARM_NAMESPACE, "-l", f"swarm.ncrsh.io/job={job}", "-o", "json"
            ).stdout
        )["items"]
        return {p["metadata"]["name"]: p["metadata"]["uid"] for p in items}

    try:
        poll("the swarm's pods", lambda: {f"{job}-root", f"{job}-worker-0", f"{job}-worker-1"} <= set(pods()))
        old = pods()[f"{job}-worker-1"]
        kubectl(
            cluster,
            "patch",
            "pod",
            f"{job}-worker-1",
            "-n",
            SWARM_NAMESPACE,
            "--subresource=status",
            "--type=merge",
            "-p",
            json.dumps({"status": {"phase": "Failed", "reason": "Evicted", "message": "test"}}),
        )
        poll("the evicted worker's replacement", lambda: pods().get(f"{job}-worker-1") not in (None, old))
        status = poll(
            "the eviction in status",
            lambda: json.loads(
                kubectl(
                    cluster, "get", "swt", job, "-n", SWARM_NAMESPACE, "-o", "jsonpath={.status.restarts}"
                ).stdout
                or "{}"
            ).get("byCause"),
        )
        assert status == {"Evicted": 1}
    except AssertionError as e:
        raise AssertionError(f"{e}\noperator log:\n{chart_operator.tail()}") from e
    finally:
        kubectl(cluster, "delete", "swt", job, "-n", SWARM_NAMESPACE, "--wait=false", check=False)
    log = chart_operator.log.read_text(errors="replace")
    assert "Forbidden" not in log, chart_operator.tail()
    assert "forbidden" not in log, chart_operator.tail()
