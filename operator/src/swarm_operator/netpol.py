"""The NetworkPolicy of one SwarmTraining: who may reach its pods' two ports.

    data port     (ZeroMQ: updates, models)  only from pods of the same job
    consensus port (root replicas, R > 1)     only from the same job's root replicas
    metrics port  (/metrics, /status, probes) from the operator's pods and the monitoring namespaces

Every other ingress to the job's pods is denied. Egress is left open: pods reach their parents by
DNS name, and a policy on egress would also have to allow DNS, which clusters place differently.

What it does not do, and why the data plane still authenticates: the job's labels are anyone's to
set, so a pod of the same namespace that copies them passes this policy. The policy narrows who can
even try (other jobs, other namespaces, anything outside the cluster's pod network); it is enforced
only by a CNI that implements NetworkPolicy (Calico, Cilium, Antrea, kube-router, OVN-Kubernetes do;
flannel and the plain bridge plugin accept the object and enforce nothing). docs/threat-model.md
says which defence covers what.

Kubelet probes come from the node itself; the CNIs above let a node reach its own pods whatever the
policy, so the probes on the metrics port keep working.

When the operator's namespace is unknown (it runs outside the cluster, as in development), the
metrics port is left open to every source rather than cut off from the operator that reads /status.

Pure: a dict in, a dict out.
"""

from __future__ import annotations

from typing import Any

from swarm_contract.labels import JOB_LABEL, ROLE_LABEL, labels
from swarm_contract.spec import SwarmSpec
from swarm_operator.builders import Body, job_name, job_namespace, owner_reference
from swarm_operator.settings import Settings

#: The label every namespace carries with its own name (Kubernetes sets it, 1.21 and later).
NAMESPACE_NAME_LABEL = "kubernetes.io/metadata.name"


def _pair(text: str) -> tuple[str, str]:
    key, _, value = text.partition("=")
    return key.strip(), value.strip()


def _metrics_sources(settings: Settings) -> list[dict[str, Any]] | None:
    """Peers allowed on the metrics port; None: every source (the operator's namespace is unknown)."""
    if not settings.operator_namespace:
        return None
    operator: dict[str, Any] = {
        "namespaceSelector": {"matchLabels": {NAMESPACE_NAME_LABEL: settings.operator_namespace}},
    }
    if settings.operator_pod_labels:
        operator["podSelector"] = {"matchLabels": dict(_pair(p) for p in settings.operator_pod_labels)}
    monitoring = [
        {"namespaceSelector": {"matchLabels": {NAMESPACE_NAME_LABEL: ns}}}
        for ns in settings.monitoring_namespaces
    ]
    return [operator, *monitoring]


def _consensus_rules(spec: SwarmSpec, job: str) -> list[dict[str, Any]]:
    """The replicas' own port, open to the job's root replicas only (none with one root)."""
    if spec.consensus.replicas == 1:
        return []
    replicas = {"podSelector": {"matchLabels": {JOB_LABEL: job, ROLE_LABEL: "root"}}}
    return [{"from": [replicas], "ports": [{"protocol": "TCP", "port": spec.network.consensus_port}]}]


def build_network_policy(spec: SwarmSpec, owner: Body, settings: Settings) -> dict[str, Any]:
    """The job's NetworkPolicy, owned by the SwarmTraining (garbage-collected with it)."""
    job = job_name(owner)
    same_job = {"podSelector": {"matchLabels": {JOB_LABEL: job}}}
    metrics_rule: dict[str, Any] = {"ports": [{"protocol": "TCP", "port": spec.network.metrics_port}]}
    sources = _metrics_sources(settings)
    if sources is not None:
        metrics_rule["from"] = sources
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {
            "name": job,
            "namespace": job_namespace(owner),
            "labels": labels(job),
            "ownerReferences": [owner_reference(owner)],
        },
        "spec": {
            "podSelector": {"matchLabels": {JOB_LABEL: job}},
            "policyTypes": ["Ingress"],
            "ingress": [
                {"from": [same_job], "ports": [{"protocol": "TCP", "port": spec.network.data_port}]},
                metrics_rule,
                *_consensus_rules(spec, job),
            ],
        },
    }
