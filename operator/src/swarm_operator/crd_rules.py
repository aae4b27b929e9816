"""The CRD's hand-written validation: CEL rules for what the structural schema cannot say (the
cross-field checks of `swarm_contract.spec.SwarmSpec._cross_field_checks`, immutable fields) and
the name rule that keeps every pod's host name a legal DNS label. swarm_operator.crdgen puts them
into the CRD; tests/cluster/test_operator_crd.py has the apiserver enforce each one.
"""

from __future__ import annotations

from typing import Any

#: Longest job name: `<job>-worker-1023` must stay a 63-character DNS label (pod host name).
MAX_NAME_LENGTH = 51

NAME_RULE: dict[str, Any] = {
    "rule": f"self.metadata.name.matches('^[a-z]([-a-z0-9]*[a-z0-9])?$') && "
    f"size(self.metadata.name) <= {MAX_NAME_LENGTH}",
    "message": f"metadata.name must be a DNS-1035 label of at most {MAX_NAME_LENGTH} characters "
    "(it names the headless Service and prefixes every pod's host name)",
}
# The apiserver checks these rules against `spec`'s own `default: {}` when the CRD is created, before
# any nested default is filled in: every rule must hold for a spec whose sections are all absent,
# hence the `has(self.<section>)` guards (a missing key is an error in CEL, not false).
SPEC_RULES: list[dict[str, Any]] = [
    {
        "rule": "!has(self.training) || !has(self.training.minPeers) || "
        "self.training.minPeers <= self.workers.replicas",
        "message": "training.minPeers exceeds workers.replicas",
        "fieldPath": ".training.minPeers",
    },
    {
        "rule": "!has(self.simulation) || !has(self.simulation.byzantine) || "
        "self.simulation.byzantine.all(b, b.worker < self.workers.replicas)",
        "message": "simulation.byzantine worker is not a rank below workers.replicas",
        "fieldPath": ".simulation.byzantine",
    },
    {
        "rule": "!has(self.training) || !has(self.training.pipeline) || !self.training.pipeline || "
        "!has(self.training.alpha) || self.training.alpha == 0.0",
        "message": "training.pipeline cannot be combined with training.alpha > 0",
        "fieldPath": ".training.pipeline",
    },
    {
        "rule": "!has(self.task) || !has(self.task.name) || !has(self.task.partition) || "
        "!(self.task.name == 'lm' && self.task.partition == 'dirichlet')",
        "message": "task.partition 'dirichlet' needs class labels; task 'lm' has none",
        "fieldPath": ".task.partition",
    },
    {
        "rule": "!has(self.network) || (self.network.dataPort != self.network.metricsPort && "
        "self.network.dataPort != self.network.consensusPort && "
        "self.network.metricsPort != self.network.consensusPort)",
        "message": "network: dataPort, metricsPort and consensusPort must differ",
        "fieldPath": ".network",
    },
    {
        "rule": "!has(self.simulation) || !has(self.simulation.byzantineReplicas) || "
        "self.simulation.byzantineReplicas.all(b, b.replica < "
        "(has(self.consensus) && has(self.consensus.replicas) ? self.consensus.replicas : 1))",
        "message": "simulation.byzantineReplicas replica is not an index below consensus.replicas",
        "fieldPath": ".simulation.byzantineReplicas",
    },
    {
        "rule": "(!has(self.workers) || self.workers == oldSelf.workers) && "
        "(!has(self.topology) || self.topology == oldSelf.topology) && "
        "(!has(self.network) || self.network == oldSelf.network) && "
        "(!has(self.consensus) || self.consensus == oldSelf.consensus)",
        "message": "workers, topology, network and consensus are immutable: they shape the tree of "
        "pods; delete and recreate the SwarmTraining instead",
    },
]
