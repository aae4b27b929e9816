"""What the operator sees: a swarm pod, and the root's `/status`, as small typed values.

`observe_pod(pod)` reduces a Pod (a dict as the API returns it) to a `PodObservation` with the
failure cause spelled in the operator's vocabulary (`CAUSES`); `parse_root_status(raw)` validates
the root's JSON status defensively as the contract's `RootStatus` (a peer input: a node record out of
bounds is dropped on its own, a status that is not the contract's is not trusted at all); and
`fetch_root_status(url, timeout)` is the one network call, with a short timeout. Pure apart from
the fetch.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pydantic import ValidationError

from swarm_contract.labels import NODE_LABEL, ROLE_LABEL
from swarm_contract.records import RootStatus, valid_records

#: Why a pod ended (or cannot start). The first group ends a pod and is replaced within the restart
#: budget; `Unschedulable` and the image/config errors leave the pod Pending and are only reported,
#: because a new pod would hit the same wall; `Deleted` is a pod that disappeared, `Quarantined` a
#: node the root stopped trusting.
CAUSES = (
    "Error",
    "OOMKilled",
    "Evicted",
    "Preempted",
    "NodeLost",
    "Deleted",
    "Quarantined",
    "Unschedulable",
    "ImagePull",
    "ContainerConfig",
)
STUCK_WAITING_REASONS = {
    "ErrImagePull": "ImagePull",
    "ImagePullBackOff": "ImagePull",
    "InvalidImageName": "ImagePull",
    "CreateContainerConfigError": "ContainerConfig",
    "CreateContainerError": "ContainerConfig",
}


@dataclass(frozen=True)
class PodObservation:
    name: str
    node_id: str
    role: str
    uid: str
    #: Pending, Running, Succeeded, Failed or Unknown.
    phase: str
    ready: bool = False
    ip: str = ""
    started_at: datetime | None = None
    #: The pod has a deletionTimestamp: it is on its way out.
    deleting: bool = False
    #: Set when the pod ended in failure: a `CAUSES` word.
    failure: str | None = None
    #: Set when the pod cannot start: `Unschedulable`, `ImagePull` or `ContainerConfig`.
    stuck: str | None = None
    exit_code: int | None = None
    message: str = ""
    #: The termination message of a container that exited 0 (the root leaves its final status there).
    result: str = ""
    #: uid of the pod's controller (the SwarmTraining that created it); "" when it has none.
    owner_uid: str = ""

    @property
    def finished(self) -> bool:
        return self.phase in ("Succeeded", "Failed")


def _parse_time(value: Any) -> datetime | None:
    if isinstance(value, datetime):
        return value
    if isinstance(value, str) and value:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    return None


def _conditions(status: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    return {c.get("type", ""): c for c in status.get("conditions") or []}


def _terminated(status: Mapping[str, Any]) -> Mapping[str, Any] | None:
    for cs in status.get("containerStatuses") or []:
        term = (cs.get("state") or {}).get("terminated")
        if term:
            return dict(term)
    return None


def _failure_cause(phase: str, status: Mapping[str, Any], deleting: bool) -> tuple[str | None, int | None]:
    reason = status.get("reason") or ""
    disruption = _conditions(status).get("DisruptionTarget") or {}
    disruption_reason = disruption.get("reason") if disruption.get("status") == "True" else None
    term = _terminated(status)
    exit_code = int(term["exitCode"]) if term and term.get("exitCode") is not None else None
    if reason == "NodeLost" or phase == "Unknown" or disruption_reason == "DeletionByTaintManager":
        return "NodeLost", exit_code
    if deleting:
        return None, exit_code
    if phase != "Failed":
        return None, exit_code
    if reason == "Evicted" or disruption_reason in ("EvictionByEvictionAPI", "TerminationByKubelet"):
        return "Evicted", exit_code
    if disruption_reason == "PreemptionByScheduler" or reason == "Preempting":
        return "Preempted", exit_code
    if term and term.get("reason") == "OOMKilled":
        return "OOMKilled", exit_code
    return "Error", exit_code


def _stuck(phase: str, status: Mapping[str, Any]) -> tuple[str | None, str]:
    if phase != "Pending":
        return None, ""
    scheduled = _conditions(status).get("PodScheduled") or {}
    if scheduled.get("status") == "False" and scheduled.get("reason") == "Unschedulable":
        return "Unschedulable", str(scheduled.get("message") or "")
    for cs in status.get("containerStatuses") or []:
        waiting = (cs.get("state") or {}).get("waiting") or {}
        cause = STUCK_WAITING_REASONS.get(waiting.get("reason") or "")
        if cause:
            return cause, str(waiting.get("message") or waiting.get("reason"))
    return None, ""


def observe_pod(pod: Mapping[str, Any]) -> PodObservation:
    meta = pod.get("metadata") or {}
    status = pod.get("status") or {}
    lbls = meta.get("labels") or {}
    phase = str(status.get("phase") or "Pending")
    deleting = bool(meta.get("deletionTimestamp"))
    failure, exit_code = _failure_cause(phase, status, deleting)
    stuck, stuck_message = _stuck(phase, status)
    ready = (_conditions(status).get("Ready") or {}).get("status") == "True"
    term = _terminated(status) or {}
    message = stuck_message or str(status.get("message") or term.get("message") or "")
    return PodObservation(
        name=str(meta.get("name", "")),
        node_id=str(lbls.get(NODE_LABEL, "")),
        role=str(lbls.get(ROLE_LABEL, "")),
        uid=str(meta.get("uid", "")),
        phase=phase,
        ready=ready and not deleting,
        ip=str(status.get("podIP") or ""),
        started_at=_parse_time(status.get("startTime")),
        deleting=deleting,
        failure=failure,
        stuck=stuck,
        exit_code=exit_code,
        message=message[:512],
        result=str(term.get("message") or "") if term.get("exitCode") == 0 else "",
        owner_uid=_controller_uid(meta),
    )


def owned_by(pods: Iterable[PodObservation], owner_uid: str) -> dict[str, PodObservation]:
    """Node id -> pod, for the pods whose controller is the object with uid `owner_uid`."""
    return {p.node_id: p for p in pods if p.node_id and owner_uid and p.owner_uid == owner_uid}


def _controller_uid(meta: Mapping[str, Any]) -> str:
    for ref in meta.get("ownerReferences") or []:
        if isinstance(ref, Mapping) and ref.get("controller") is True:
            return str(ref.get("uid") or "")
    return ""


def parse_root_status(raw: bytes | str) -> RootStatus | None:
    """The root's status, or None when it is not the JSON we expect; invalid node records are left out."""
    try:
        doc = json.loads(raw)
    except (ValueError, RecursionError):  # RecursionError: nested too deep
        return None
    if isinstance(doc, dict) and isinstance(doc.get("nodes"), list):
        doc["nodes"], _ = valid_records(doc["nodes"])
    try:
        return RootStatus.model_validate(doc)
    except ValidationError:
        return None


def final_root_status(pod: PodObservation) -> RootStatus | None:
    """The status a root that finished left in its termination message, or None."""
    if pod.phase != "Succeeded" or not pod.result:
        return None
    return parse_root_status(pod.result)


def root_status_url(ip: str, metrics_port: int) -> str:
    host = f"[{ip}]" if ":" in ip else ip
    return f"http://{host}:{metrics_port}/status"


def fetch_root_status(url: str, timeout: float) -> RootStatus | None:
    """GET the root's /status; None when it cannot be reached or answers nonsense."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return parse_root_status(response.read(1 << 22))
    except (OSError, urllib.error.URLError, ValueError):
        return None
