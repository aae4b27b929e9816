"""Status math: the job's phase, conditions, counts and `nodes[]` from what the operator observed.

Inputs are the tree, the pods by node id (`PodObservation`), the root's `/status` (or None when it
cannot be read, a swarm_contract.records.RootStatus) and the restart bookkeeping; outputs are plain
dicts in the CRD's status schema (crdgen.status_schema, which takes the fields copied from the root
from the same contract). Conditions have the metav1.Condition shape, and a condition keeps its
`lastTransitionTime` while its status does not change. Pure.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

from swarm_contract.records import NodeRecord, RootStatus
from swarm_contract.topology import TreeNode
from swarm_operator.observe import PodObservation
from swarm_operator.replicas import finished_replicas
from swarm_operator.restarts import RestartBook, iso

TERMINAL_PHASES = ("Succeeded", "Failed")
#: What `status` copies of the root's progress (RootStatus field names).
PROGRESS_FIELDS = (
    "round",
    "rounds",
    "loss",
    "accuracy",
    "bytes_sent",
    "dense_equivalent_bytes",
    "samples_per_second",
    "consensus",
)
#: What `status.nodes[]` takes of a node's record; id, role and parent come from the tree, whose
#: parent is the pod's (a record's parent is whichever aggregator measured it last).
MEASURED_FIELDS = tuple(name for name in NodeRecord.model_fields if name not in ("id", "role", "parent"))
_MEASURED_KEYS = tuple(NodeRecord.model_fields[name].alias or name for name in MEASURED_FIELDS)


def job_phase(
    previous: str | None, root_pods: Sequence[PodObservation], root: RootStatus | None, replicas: int = 1
) -> str:
    """Pending -> Running -> Succeeded | Failed; a terminal phase never changes again.

    Success is the root's word: its (agreed, swarm_operator.replicas) status says Succeeded, or its
    pod exited 0 (with R replicas: f + 1 of their pods). A failed root pod is a restart matter
    (restarts.decide_node), not the job's end; the root reporting Failed is.
    """
    if previous in TERMINAL_PHASES:
        return previous
    if (root is not None and root.phase == "Succeeded") or finished_replicas(root_pods, replicas):
        return "Succeeded"
    if root is not None and root.phase == "Failed":
        return "Failed"
    if (root is not None and root.phase == "Running") or any(p.phase == "Running" for p in root_pods):
        return "Running"
    return previous if previous == "Running" else "Pending"


def condition(
    type_: str, status: bool | None, reason: str, message: str, now: datetime, generation: int
) -> dict[str, Any]:
    word = "Unknown" if status is None else ("True" if status else "False")
    return {
        "type": type_,
        "status": word,
        "observedGeneration": generation,
        "lastTransitionTime": iso(now),
        "reason": reason,
        "message": message[:32768],
    }


def merge_conditions(
    previous: Sequence[Mapping[str, Any]], updates: Sequence[dict[str, Any]]
) -> list[dict[str, Any]]:
    """Replace conditions by type, keeping lastTransitionTime where the status is unchanged."""
    by_type = {str(c.get("type")): dict(c) for c in previous}
    for new in updates:
        old = by_type.get(new["type"])
        if old is not None and old.get("status") == new["status"]:
            new = {**new, "lastTransitionTime": old.get("lastTransitionTime", new["lastTransitionTime"])}
        by_type[new["type"]] = new
    return [by_type[t] for t in sorted(by_type)]


def counts(nodes: Iterable[TreeNode], pods: Mapping[str, PodObservation]) -> dict[str, Any]:
    """Wanted and ready pods of `nodes` (swarm_operator.pods.pod_nodes): workers, and the rest
    (aggregators and the root's replicas) as `aggregators`."""
    workers: list[str] = []
    aggregators: list[str] = []
    for node in nodes:
        (workers if node.role == "worker" else aggregators).append(node.id)
    ready_workers = sum(1 for n in workers if n in pods and pods[n].ready)
    ready_aggregators = sum(1 for n in aggregators if n in pods and pods[n].ready)
    return {
        "workers": len(workers),
        "readyWorkers": ready_workers,
        "ready": f"{ready_workers}/{len(workers)}",
        "aggregators": len(aggregators),
        "readyAggregators": ready_aggregators,
    }


def progress(root: RootStatus | None) -> dict[str, Any]:
    """Training progress from the root; empty when it cannot be read, so the last values stay."""
    if root is None:
        return {}
    return root.model_dump(by_alias=True, include=set(PROGRESS_FIELDS))


def _health_rank(entry: Mapping[str, Any]) -> tuple[int, float, str]:
    """Least healthy first: quarantined, not running, restarted, then by reputation."""
    trouble = 0 if entry.get("quarantined") else (1 if entry.get("phase") != "Running" else 2)
    if trouble == 2 and entry.get("restarts"):
        trouble = 1
    return trouble, float(entry.get("reputation", 1.0)), str(entry["id"])


def node_entries(
    nodes: Iterable[TreeNode],
    pods: Mapping[str, PodObservation],
    root: RootStatus | None,
    book: RestartBook,
    previous: Sequence[Mapping[str, Any]],
    max_nodes: int,
) -> tuple[list[dict[str, Any]], int]:
    """`status.nodes` (least healthy first, at most `max_nodes`) and how many were left out.

    Reputation and its inputs come from the root; when the root cannot be read they are carried
    over from the previous status rather than dropped.
    """
    from_root: dict[str, NodeRecord] = {n.id: n for n in root.nodes} if root is not None else {}
    before = {str(e.get("id")): e for e in previous}
    entries: list[dict[str, Any]] = []
    for node in nodes:
        pod = pods.get(node.id)
        entry: dict[str, Any] = {
            "id": node.id,
            "pod": pod.name if pod is not None else "",
            "role": node.role,
            "parent": node.parent or "",
            "phase": ("Terminating" if pod.deleting else pod.phase) if pod is not None else "Missing",
            "ready": pod.ready if pod is not None else False,
            "restarts": book.by_node.get(node.id, 0),
        }
        reason = (pod.stuck if pod is not None else None) or book.last_failure.get(node.id)
        if reason:
            entry["lastFailureReason"] = reason
        seen = from_root.get(node.id)
        if seen is not None:
            entry.update(seen.model_dump(by_alias=True, include=set(MEASURED_FIELDS)))
        elif node.id in before and node.role != "root":
            old = before[node.id]
            for key in _MEASURED_KEYS:
                if key in old:
                    entry[key] = old[key]
        entries.append(entry)
    entries.sort(key=_health_rank)
    return entries[:max_nodes], max(0, len(entries) - max_nodes)
