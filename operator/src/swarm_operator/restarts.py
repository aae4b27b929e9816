"""Restart decisions: which node's pod to remove, which to create, and when the budget is spent.

The state lives in the SwarmTraining's status (`restarts`, `pendingRestarts`), never in memory, so
a restarted operator carries on where the last one stopped:

    restarts:        {total: 4, byCause: {OOMKilled: 3, Evicted: 1}, byNode: {worker-3: 3, ...},
                      lastFailure: {worker-3: "OOMKilled: exit code 137"}}
    pendingRestarts: {worker-3: {cause: OOMKilled, notBefore: <time>, podUid: <uid of the failed pod>}}

A node's failure is counted once, keyed by the failed pod's uid: the status is patched before the
pod is deleted, so a crash between the two counts nothing twice. The replacement is created once
the pod is gone and `notBefore` passed. Backoff and budgets are the job's restart policy, shared
with `swarm run`: `swarm_contract.restarts.decide_restart`. Pure.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from swarm_contract.operations import RestartPolicy
from swarm_contract.restarts import decide_restart
from swarm_operator.observe import PodObservation

#: Causes whose pod cannot be gracefully deleted (its kubelet is gone): delete with grace period 0.
FORCE_DELETE_CAUSES = frozenset({"NodeLost"})


def iso(t: datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_iso(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


@dataclass
class RestartBook:
    """The restart bookkeeping of one job, loaded from and written back to its status."""

    total: int = 0
    by_cause: dict[str, int] = field(default_factory=dict)
    by_node: dict[str, int] = field(default_factory=dict)
    last_failure: dict[str, str] = field(default_factory=dict)
    pending: dict[str, dict[str, str]] = field(default_factory=dict)

    @classmethod
    def from_status(cls, status: Mapping[str, Any]) -> RestartBook:
        restarts = status.get("restarts") or {}
        pending = status.get("pendingRestarts") or {}
        return cls(
            total=int(restarts.get("total") or 0),
            by_cause={k: int(v) for k, v in (restarts.get("byCause") or {}).items()},
            by_node={k: int(v) for k, v in (restarts.get("byNode") or {}).items()},
            last_failure={k: str(v) for k, v in (restarts.get("lastFailure") or {}).items()},
            pending={k: {kk: str(vv) for kk, vv in v.items()} for k, v in pending.items() if v},
        )

    def to_status(self, previous: Mapping[str, Any]) -> dict[str, Any]:
        """Status fields to merge-patch; a pending entry that was resolved is removed with None."""
        gone = {k: None for k in (previous.get("pendingRestarts") or {}) if k not in self.pending}
        return {
            "restarts": {
                "total": self.total,
                "byCause": dict(self.by_cause),
                "byNode": dict(self.by_node),
                "lastFailure": dict(self.last_failure),
            },
            "pendingRestarts": {**gone, **self.pending},
        }


@dataclass(frozen=True)
class NodeDecision:
    """What to do about one node this tick."""

    #: "keep", "wait", "delete" (remove its failed pod), "create" (create its pod) or "fail" (budget spent).
    action: str
    cause: str | None = None
    force: bool = False
    #: For "fail": the job's failure reason and message; for "delete": the event message.
    reason: str = ""
    message: str = ""


def decide_node(
    node_id: str,
    pod: PodObservation | None,
    book: RestartBook,
    policy: RestartPolicy,
    now: datetime,
    *,
    quarantined: bool = False,
    quarantine_grace_seconds: float = 120.0,
) -> NodeDecision:
    """Decide for one node and update `book` in place (counting a new failure once)."""
    pending = book.pending.get(node_id)
    if pod is None:
        if pending is None:
            return _count_failure(
                node_id, "Deleted", "", "pod disappeared", book, policy, now, create_now=True
            )
        not_before = parse_iso(pending.get("notBefore"))
        if not_before is not None and now < not_before:
            return NodeDecision("wait", pending.get("cause"))
        del book.pending[node_id]
        return NodeDecision("create", pending.get("cause"))
    if pending is not None and pending.get("podUid") == pod.uid:
        # Counted already (a previous tick, or an operator that stopped before the delete).
        if pod.deleting and pending.get("cause") not in FORCE_DELETE_CAUSES:
            return NodeDecision("wait", pending.get("cause"))
        cause = pending.get("cause")
        return NodeDecision("delete", cause, force=cause in FORCE_DELETE_CAUSES)
    cause = pod.failure
    detail = f"exit code {pod.exit_code}" if pod.exit_code is not None else pod.message
    if cause is None and quarantined and not pod.deleting and pod.phase == "Running":
        started = pod.started_at
        if started is not None and (now - started).total_seconds() >= quarantine_grace_seconds:
            cause, detail = "Quarantined", "reputation stayed below the threshold"
    if cause is None or (pod.deleting and cause not in FORCE_DELETE_CAUSES):
        return NodeDecision("keep")
    return _count_failure(node_id, cause, pod.uid, detail, book, policy, now, create_now=False)


def _count_failure(
    node_id: str,
    cause: str,
    pod_uid: str,
    detail: str,
    book: RestartBook,
    policy: RestartPolicy,
    now: datetime,
    *,
    create_now: bool,
) -> NodeDecision:
    described = f"{cause}: {detail}" if detail else cause
    book.last_failure[node_id] = described[:256]
    verdict = decide_restart(
        policy,
        node_id,
        described,
        node_restarts=book.by_node.get(node_id, 0),
        job_restarts=book.total,
        now=now.timestamp(),
    )
    if verdict.action == "fail":
        return NodeDecision("fail", cause, reason=verdict.reason, message=verdict.message)
    book.by_node[node_id] = verdict.restart_number
    book.total += 1
    book.by_cause[cause] = book.by_cause.get(cause, 0) + 1
    if create_now and verdict.action == "restart-now":
        return NodeDecision("create", cause, message=verdict.message)
    book.pending[node_id] = {
        "cause": cause,
        # The datetime sum, not `verdict.not_before`: no float round trip through the epoch.
        "notBefore": iso(now + timedelta(seconds=verdict.delay_seconds)),
        "podUid": pod_uid,
    }
    if create_now:
        return NodeDecision("wait", cause, message=verdict.message)
    return NodeDecision("delete", cause, force=cause in FORCE_DELETE_CAUSES, message=verdict.message)
