"""Generate the SwarmTraining CRD from the pydantic spec model, so the two cannot drift.

    python -m swarm_operator.crdgen > crds/swarmtraining.yaml
    cp crds/swarmtraining.yaml charts/ncrsh-swarm/files/swarmtraining.yaml

The spec schema is derived from `SwarmSpec.model_json_schema(by_alias=True)` and translated to
the apiserver's structural OpenAPI v3.0 dialect: `$ref`s inlined, `anyOf [X, null]` becomes X (a
null is pruned by the apiserver, which is what `None` means to the model), numeric exclusive bounds
become `exclusiveMinimum: true`, `additionalProperties: false` is dropped (structural schemas prune
unknown fields) and a free-form mapping becomes `x-kubernetes-preserve-unknown-fields`. Every
section gets `default: {}` so that its fields' defaults are filled in by the apiserver even when the
section is left out: the object stored in etcd gets the values the model would use. Descriptions
come from the model's docstrings and its `#:` field comments.

The status schema takes what the operator copies from the root from the same contract: each entry
of `status.nodes` is a `swarm_contract.records.NodeRecord` plus the fields only the operator knows
(pod, phase, restarts, ...), and the progress fields are `RootStatus`'s; there, defaults are left out
(the operator writes every value it has) and `X | None` becomes `nullable`.

What pydantic cannot say is added here by hand: CEL rules for the cross-field checks of
`SwarmSpec._cross_field_checks`, the name rule that keeps pod host names legal, the rest of the
status schema and the subresource, and the printer columns. tests/unit/test_crd_schema.py checks
the committed file equals this output and walks both schemas to assert the same fields, defaults,
enums and bounds.
"""

from __future__ import annotations

import sys
from typing import Any

import yaml
from pydantic import BaseModel

from swarm_contract.records import NodeRecord, RootStatus
from swarm_contract.spec import API_GROUP, API_VERSION, KIND, SwarmSpec
from swarm_operator.crd_rules import NAME_RULE, SPEC_RULES
from swarm_operator.openapi import convert_model
from swarm_operator.status import PROGRESS_FIELDS

PLURAL = "swarmtrainings"
SINGULAR = "swarmtraining"
SHORT_NAMES = ["swt"]
CRD_NAME = f"{PLURAL}.{API_GROUP}"
PHASES = ["Pending", "Running", "Succeeded", "Failed"]


def spec_schema() -> dict[str, Any]:
    """`spec` of a SwarmTraining as a structural schema, CEL rules included."""
    schema = SwarmSpec.model_json_schema(by_alias=True)
    out = convert_model(schema, schema.get("$defs", {}), "SwarmSpec")
    out["description"] = "What to train and how: one spec drives `kubectl apply` and `swarm run`."
    out["default"] = {}
    byzantine = out["properties"]["simulation"]["properties"]["byzantine"]
    # Ranks are unique: a list-map keyed by rank says so without a quadratic CEL rule.
    byzantine["x-kubernetes-list-type"] = "map"
    byzantine["x-kubernetes-list-map-keys"] = ["worker"]
    liars = out["properties"]["simulation"]["properties"]["byzantineReplicas"]
    liars["x-kubernetes-list-type"] = "map"
    liars["x-kubernetes-list-map-keys"] = ["replica"]
    out["x-kubernetes-validations"] = SPEC_RULES
    return out


def _condition_schema() -> dict[str, Any]:
    """metav1.Condition, as Kubernetes' own CRDs declare it."""
    return {
        "type": "object",
        "required": ["type", "status", "lastTransitionTime", "reason", "message"],
        "properties": {
            "type": {"type": "string", "maxLength": 316},
            "status": {"type": "string", "enum": ["True", "False", "Unknown"]},
            "observedGeneration": {"type": "integer", "format": "int64", "minimum": 0},
            "lastTransitionTime": {"type": "string", "format": "date-time"},
            "reason": {"type": "string", "maxLength": 1024},
            "message": {"type": "string", "maxLength": 32768},
        },
    }


def _status_properties(model: type[BaseModel]) -> dict[str, Any]:
    """A contract model's fields as status schema nodes, by wire name: without defaults (the
    apiserver would invent values the operator did not write), `nullable` where None is a value."""
    schema = model.model_json_schema(by_alias=True)
    converted = convert_model(schema, schema.get("$defs", {}), model.__name__)["properties"]
    out: dict[str, Any] = {}
    for name, node in converted.items():
        node = _without_defaults(node)
        if any(branch.get("type") == "null" for branch in schema["properties"][name].get("anyOf", [])):
            node["nullable"] = True
        out[name] = node
    return out


def _without_defaults(node: Any) -> Any:
    """A schema node with every `default` removed, nested ones included."""
    if isinstance(node, dict):
        return {k: _without_defaults(v) for k, v in node.items() if k != "default"}
    return [_without_defaults(v) for v in node] if isinstance(node, list) else node


def _node_schema() -> dict[str, Any]:
    """An entry of `status.nodes`: the root's record of the node (swarm_contract.records.NodeRecord),
    when it has one, and what the operator sees of its pod."""
    record = _status_properties(NodeRecord)
    return {
        "type": "object",
        "required": ["id"],
        "properties": {
            "id": record.pop("id"),
            "pod": {"type": "string"},
            "role": record.pop("role"),
            "parent": {
                **record.pop("parent"),
                "description": "The node's parent in the tree; empty for the root.",
            },
            "phase": {"type": "string", "description": "Pod phase, or Missing while it is replaced."},
            "ready": {"type": "boolean"},
            "restarts": {"type": "integer", "description": "Replacements of this node's pod."},
            "lastFailureReason": {"type": "string"},
            **record,
        },
    }


def _progress_schema() -> dict[str, Any]:
    """The progress fields the operator copies from the root's status (swarm_operator.status.progress)."""
    fields = _status_properties(RootStatus)
    keys = [RootStatus.model_fields[name].alias or name for name in PROGRESS_FIELDS]
    return {key: fields[key] for key in keys}


def status_schema() -> dict[str, Any]:
    """The status the operator writes through the status subresource (see swarm_operator.status)."""
    count_map = {"type": "object", "additionalProperties": {"type": "integer"}}
    return {
        "type": "object",
        "description": "Observed state, written by the operator only.",
        "properties": {
            "phase": {"type": "string", "enum": PHASES},
            "reason": {"type": "string", "description": "Why the job failed (a CamelCase word)."},
            "message": {"type": "string"},
            "observedGeneration": {"type": "integer", "format": "int64"},
            "startTime": {"type": "string", "format": "date-time"},
            "completionTime": {"type": "string", "format": "date-time"},
            "roundChangedAt": {
                "type": "string",
                "format": "date-time",
                "description": "When `round` last changed; a round still for too long is a stall.",
            },
            **_progress_schema(),
            "workers": {"type": "integer", "description": "Worker pods wanted."},
            "readyWorkers": {"type": "integer"},
            "ready": {"type": "string", "description": "Ready worker pods out of wanted, as `3/8`."},
            "aggregators": {"type": "integer"},
            "readyAggregators": {"type": "integer"},
            "restarts": {
                "type": "object",
                "description": "Pod replacements so far, the operator's budget bookkeeping.",
                "properties": {
                    "total": {"type": "integer"},
                    "byCause": count_map,
                    "byNode": count_map,
                    "lastFailure": {"type": "object", "additionalProperties": {"type": "string"}},
                },
            },
            "pendingRestarts": {
                "type": "object",
                "description": "Nodes whose failed pod was removed and waits out its backoff.",
                "additionalProperties": {
                    "type": "object",
                    "properties": {
                        "cause": {"type": "string"},
                        "notBefore": {"type": "string", "format": "date-time"},
                        "podUid": {"type": "string"},
                    },
                },
            },
            "conditions": {
                "type": "array",
                "x-kubernetes-list-type": "map",
                "x-kubernetes-list-map-keys": ["type"],
                "items": _condition_schema(),
            },
            "nodes": {
                "type": "array",
                "description": "Per-node state; the least healthy first, truncated to a bounded size.",
                "items": _node_schema(),
            },
            "nodesOmitted": {"type": "integer", "description": "Nodes left out of `nodes`."},
        },
    }


PRINTER_COLUMNS = [
    {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
    {"name": "Round", "type": "integer", "jsonPath": ".status.round"},
    {"name": "Loss", "type": "number", "jsonPath": ".status.loss"},
    {"name": "Accuracy", "type": "number", "jsonPath": ".status.accuracy"},
    {"name": "Ready", "type": "string", "jsonPath": ".status.ready", "description": "Ready workers"},
    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
]


def crd() -> dict[str, Any]:
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": CRD_NAME},
        "spec": {
            "group": API_GROUP,
            "names": {
                "kind": KIND,
                "listKind": f"{KIND}List",
                "plural": PLURAL,
                "singular": SINGULAR,
                "shortNames": SHORT_NAMES,
                "categories": ["all", "ncrsh"],
            },
            "scope": "Namespaced",
            "versions": [
                {
                    "name": API_VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": PRINTER_COLUMNS,
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "description": "A Byzantine-robust training swarm: workers, a tree of "
                            "aggregators and a root, kept alive by the ncrsh-swarm operator.",
                            "properties": {
                                "apiVersion": {"type": "string"},
                                "kind": {"type": "string"},
                                "metadata": {"type": "object"},
                                "spec": spec_schema(),
                                "status": status_schema(),
                            },
                            "x-kubernetes-validations": [NAME_RULE],
                        }
                    },
                }
            ],
        },
    }


HEADER = "# Generated by `python -m swarm_operator.crdgen` from swarm_contract.spec; do not edit by hand.\n"


def render() -> str:
    return HEADER + yaml.safe_dump(crd(), sort_keys=False, width=110)


def main() -> None:
    sys.stdout.write(render())


if __name__ == "__main__":
    main()
