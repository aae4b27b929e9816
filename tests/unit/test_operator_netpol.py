"""The NetworkPolicy of a SwarmTraining, and the operator settings that shape it."""

from __future__ import annotations

import pytest

from swarm_contract.manifest import parse_spec
from swarm_operator.netpol import build_network_policy
from swarm_operator.settings import Settings, SettingsError

OWNER = {
    "apiVersion": "swarm.ncrsh.io/v1alpha1",
    "kind": "SwarmTraining",
    "metadata": {"name": "digits", "namespace": "ml", "uid": "uid-1"},
}
IN_CLUSTER = Settings(
    operator_namespace="ops",
    operator_pod_labels=("app.kubernetes.io/name=ncrsh-swarm", "app.kubernetes.io/component=operator"),
    monitoring_namespaces=("monitoring",),
)


def test_data_port_only_from_the_jobs_pods_metrics_only_from_operator_and_monitoring() -> None:
    spec = parse_spec({"network": {"dataPort": 6000, "metricsPort": 9100}})
    policy = build_network_policy(spec, OWNER, IN_CLUSTER)
    assert policy["metadata"]["namespace"] == "ml"
    assert policy["metadata"]["ownerReferences"][0]["uid"] == "uid-1"
    body = policy["spec"]
    assert body["podSelector"] == {"matchLabels": {"swarm.ncrsh.io/job": "digits"}}
    assert body["policyTypes"] == ["Ingress"]
    data, metrics = body["ingress"]
    assert data == {
        "from": [{"podSelector": {"matchLabels": {"swarm.ncrsh.io/job": "digits"}}}],
        "ports": [{"protocol": "TCP", "port": 6000}],
    }
    assert metrics["ports"] == [{"protocol": "TCP", "port": 9100}]
    operator, monitoring = metrics["from"]
    # namespaceSelector and podSelector in ONE peer: the operator's pods in the operator's namespace,
    # not any pod with those labels anywhere (which two separate peers would allow).
    assert operator == {
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ops"}},
        "podSelector": {
            "matchLabels": {
                "app.kubernetes.io/name": "ncrsh-swarm",
                "app.kubernetes.io/component": "operator",
            }
        },
    }
    assert monitoring == {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}


def test_operator_outside_the_cluster_leaves_the_metrics_port_open_but_not_the_data_port() -> None:
    policy = build_network_policy(parse_spec({}), OWNER, Settings())
    data, metrics = policy["spec"]["ingress"]
    assert "from" not in metrics
    assert data["from"] == [{"podSelector": {"matchLabels": {"swarm.ncrsh.io/job": "digits"}}}]


@pytest.mark.parametrize(("raw", "expected"), [("true", True), ("false", False), ("1", True), ("no", False)])
def test_network_policy_setting_parses_booleans(raw: str, expected: bool) -> None:
    assert Settings.from_env({"SWARM_NETWORK_POLICY": raw}).network_policy is expected


def test_bad_settings_are_one_line_errors() -> None:
    with pytest.raises(SettingsError, match="SWARM_NETWORK_POLICY"):
        Settings.from_env({"SWARM_NETWORK_POLICY": "maybe"})
    with pytest.raises(SettingsError, match="not key=value"):
        Settings.from_env({"SWARM_OPERATOR_POD_LABELS": "justakey"})


def test_list_settings_split_on_commas() -> None:
    s = Settings.from_env(
        {"SWARM_MONITORING_NAMESPACES": "monitoring, prom", "SWARM_OPERATOR_NAMESPACE": "ops"}
    )
    assert s.monitoring_namespaces == ("monitoring", "prom")
    assert s.operator_namespace == "ops"
