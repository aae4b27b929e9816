"""The Helm chart: every value documented and typed, and (with helm) it lints and renders per mode."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.cluster.binaries import built_binary, not_built

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "ncrsh-swarm"
CRD_FILE = ROOT / "crds" / "swarmtraining.yaml"
KUBE_VERSION = "1.31.0"


def _values() -> dict[str, Any]:
    values: dict[str, Any] = yaml.safe_load((CHART / "values.yaml").read_text())
    return values


def _schema() -> dict[str, Any]:
    schema: dict[str, Any] = json.loads((CHART / "values.schema.json").read_text())
    return schema


def test_every_value_has_a_comment_above_it() -> None:
    lines = (CHART / "values.yaml").read_text().splitlines()
    undocumented = []
    for i, line in enumerate(lines):
        if re.match(r"^\s*[A-Za-z][\w.-]*:", line):
            above = lines[i - 1].strip() if i else ""
            if not above.startswith("#"):
                undocumented.append(line.strip())
    assert undocumented == []


def _schema_paths(schema: dict[str, Any], prefix: str = "") -> set[str]:
    out = set()
    for name, sub in schema.get("properties", {}).items():
        out.add(prefix + name)
        if sub.get("additionalProperties") is False:
            out |= _schema_paths(sub, f"{prefix}{name}.")
    return out


def _value_paths(values: dict[str, Any], schema: dict[str, Any], prefix: str = "") -> set[str]:
    out = set()
    for name, value in values.items():
        out.add(prefix + name)
        sub = schema.get("properties", {}).get(name, {})
        if isinstance(value, dict) and sub.get("additionalProperties") is False:
            out |= _value_paths(value, sub, f"{prefix}{name}.")
    return out


def test_schema_and_values_name_the_same_keys() -> None:
    schema = _schema()
    assert _value_paths(_values(), schema) == _schema_paths(schema)


def test_chart_copy_of_the_crd_is_current() -> None:
    assert (CHART / "files" / "swarmtraining.yaml").read_bytes() == CRD_FILE.read_bytes()


def test_crd_template_splice_keeps_the_spec_verbatim() -> None:
    """The template cuts everything before the first top-level `spec:`; that must be metadata only."""
    text = CRD_FILE.read_text()
    head, sep, _ = text.partition("\nspec:\n")
    assert sep
    assert yaml.safe_load(head) == {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": "swarmtrainings.swarm.ncrsh.io"},
    }


@pytest.fixture(scope="module")
def helm() -> str:
    """The helm that tests/cluster/build.sh built (the same one the cluster tests use)."""
    reason = not_built("helm")
    if reason:
        pytest.skip(reason)
    return str(built_binary("helm"))


def _template(helm: str, *sets: str) -> list[dict[str, Any]]:
    args = [helm, "template", "r", str(CHART), "-n", "ops", "--kube-version", KUBE_VERSION]
    for s in sets:
        args += ["--set", s]
    out = subprocess.run(args, capture_output=True, text=True, timeout=60, check=True).stdout
    return [d for d in yaml.safe_load_all(out) if d]


def test_helm_lint(helm: str) -> None:
    result = subprocess.run(
        [helm, "lint", "--strict", str(CHART), "--kube-version", KUBE_VERSION],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(
    ("sets", "kinds"),
    [
        (
            (),
            [
                "ClusterRole",
                "ClusterRole",
                "ClusterRoleBinding",
                "ClusterRoleBinding",
                "CustomResourceDefinition",
                "Deployment",
                "Service",
                "ServiceAccount",
            ],
        ),
        (
            (
                "rbac.scope=namespaces",
                "rbac.watchNamespaces={a,b}",
                "crds.enabled=false",
                "metrics.enabled=false",
            ),
            [
                "ClusterRole",
                "ClusterRoleBinding",
                "Deployment",
                "Role",
                "Role",
                "RoleBinding",
                "RoleBinding",
                "ServiceAccount",
            ],
        ),
        (
            ("metrics.serviceMonitor.enabled=true",),
            [
                "ClusterRole",
                "ClusterRole",
                "ClusterRoleBinding",
                "ClusterRoleBinding",
                "CustomResourceDefinition",
                "Deployment",
                "Service",
                "ServiceAccount",
                "ServiceMonitor",
            ],
        ),
    ],
    ids=["cluster-default", "namespaced-no-crd", "service-monitor"],
)
def test_rendered_kinds(helm: str, sets: tuple[str, ...], kinds: list[str]) -> None:
    assert sorted(d["kind"] for d in _template(helm, *sets)) == kinds


def test_rendered_crd_is_the_crds_file(helm: str) -> None:
    (crd,) = [d for d in _template(helm) if d["kind"] == "CustomResourceDefinition"]
    assert crd["spec"] == yaml.safe_load(CRD_FILE.read_text())["spec"]
    assert crd["metadata"]["annotations"] == {"helm.sh/resource-policy": "keep"}
    (unkept,) = [d for d in _template(helm, "crds.keep=false") if d["kind"] == "CustomResourceDefinition"]
    assert "annotations" not in unkept["metadata"]


def test_deployment_shape(helm: str) -> None:
    docs = _template(helm, "rbac.scope=namespaces", "rbac.watchNamespaces={a,b}")
    (dep,) = [d for d in docs if d["kind"] == "Deployment"]
    assert dep["spec"]["replicas"] == 1
    assert dep["spec"]["strategy"] == {"type": "Recreate"}
    (container,) = dep["spec"]["template"]["spec"]["containers"]
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["SWARM_WATCH_NAMESPACES"] == "a,b"
    assert env["SWARM_HEALTH_PORT"] == "8080"
    # The NetworkPolicy lets the operator's own pods, in its own namespace, read the swarm's /status.
    assert env["SWARM_NETWORK_POLICY"] == "true"
    selector = dep["spec"]["selector"]["matchLabels"]
    assert env["SWARM_OPERATOR_POD_LABELS"] == ",".join(f"{k}={v}" for k, v in selector.items())
    (ns_env,) = [e for e in container["env"] if e["name"] == "SWARM_OPERATOR_NAMESPACE"]
    assert ns_env["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.namespace"}}
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert dep["spec"]["template"]["spec"]["securityContext"]["runAsNonRoot"] is True


def test_env_names_match_the_operator_settings(helm: str) -> None:
    from swarm_operator.settings import ENV

    (dep,) = [d for d in _template(helm) if d["kind"] == "Deployment"]
    names = {e["name"] for e in dep["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert names == set(ENV.values())


def test_namespaced_scope_needs_namespaces(helm: str) -> None:
    with pytest.raises(subprocess.CalledProcessError) as e:
        _template(helm, "rbac.scope=namespaces")
    assert "rbac.watchNamespaces" in e.value.stderr


def test_schema_rejects_unknown_values(helm: str) -> None:
    with pytest.raises(subprocess.CalledProcessError) as e:
        _template(helm, "operator.syncIntervalSecond=3")
    assert "syncIntervalSecond" in e.value.stderr


def test_gpu_resource_names_reach_the_operator(helm: str) -> None:
    docs = _template(helm, "operator.sharedGpuResourceName=nvidia.com/gpu.shared")
    (dep,) = [d for d in docs if d["kind"] == "Deployment"]
    env = {e["name"]: e.get("value") for e in dep["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["SWARM_GPU_RESOURCE_NAME"] == "nvidia.com/gpu"
    assert env["SWARM_SHARED_GPU_RESOURCE_NAME"] == "nvidia.com/gpu.shared"


def test_schema_rejects_a_gpu_resource_without_a_domain(helm: str) -> None:
    with pytest.raises(subprocess.CalledProcessError) as e:
        _template(helm, "operator.sharedGpuResourceName=gpu")
    assert "sharedGpuResourceName" in e.value.stderr
