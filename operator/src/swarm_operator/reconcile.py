"""One reconcile tick as a pure function: observed state in, actions and a status patch out.

    actions = reconcile(spec, pods, root, status, now=..., generation=..., settings=...)

The handler lists the job's pods (an index), reads the root's /status (with root replicas, every
replica's, reduced to the one swarm_operator.replicas.agreed_status believes), calls this, then applies in
order: patch status (so a crash never loses a counted restart), delete, create, emit events, and
delete the SwarmTraining itself when its TTL after finishing ran out.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from swarm_contract.records import RootStatus
from swarm_contract.spec import SwarmSpec
from swarm_contract.topology import TreeNode
from swarm_operator.observe import PodObservation
from swarm_operator.pods import pod_nodes
from swarm_operator.replicas import replica_pods
from swarm_operator.restarts import RestartBook, decide_node, iso, parse_iso
from swarm_operator.settings import Settings
from swarm_operator.stall import check_progress
from swarm_operator.status import (
    TERMINAL_PHASES,
    condition,
    counts,
    job_phase,
    merge_conditions,
    node_entries,
    progress,
)

#: Seconds a successful job's pods have to exit on their own before the rest are deleted.
SUCCESS_GRACE_SECONDS = 15.0


@dataclass(frozen=True)
class Deletion:
    pod: str
    #: Grace period 0: the pod's node is gone and will never confirm a graceful deletion.
    force: bool = False


@dataclass(frozen=True)
class Event:
    type: str  # "Normal" or "Warning"
    reason: str
    message: str


@dataclass(frozen=True)
class Actions:
    status: dict[str, Any]
    create: tuple[str, ...] = ()
    delete: tuple[Deletion, ...] = ()
    events: tuple[Event, ...] = field(default=())
    #: The TTL after finishing ran out: delete the SwarmTraining (its children go with it).
    delete_job: bool = False


def ttl_expired(spec: SwarmSpec, status: Mapping[str, Any], now: datetime) -> bool:
    ttl = spec.ttl_seconds_after_finished
    done = parse_iso(status.get("completionTime"))
    return ttl is not None and done is not None and now >= done + timedelta(seconds=ttl)


def reconcile(
    spec: SwarmSpec,
    pods: Mapping[str, PodObservation],
    root: RootStatus | None,
    status: Mapping[str, Any],
    *,
    now: datetime,
    generation: int,
    settings: Settings,
) -> Actions:
    previous_phase = status.get("phase")
    book = RestartBook.from_status(status)
    create: list[str] = []
    delete: list[Deletion] = []
    events: list[Event] = []
    failure: tuple[str, str] | None = None
    nodes = pod_nodes(spec)

    if previous_phase not in TERMINAL_PHASES:
        quarantined = {n.id for n in root.nodes if n.quarantined} if root is not None else set()
        for node in nodes:
            pod = pods.get(node.id)
            if pod is not None and pod.phase == "Succeeded":
                continue  # this node finished its part of the training
            decision = decide_node(
                node.id,
                pod,
                book,
                spec.restart_policy,
                now,
                quarantined=node.id in quarantined,
                quarantine_grace_seconds=settings.quarantine_grace_seconds,
            )
            if decision.action == "fail":
                failure = (decision.reason, decision.message)
                break
            if decision.action == "delete" and pod is not None:
                delete.append(Deletion(pod.name, decision.force))
            elif decision.action == "create":
                create.append(node.id)
            if decision.message:
                events.append(Event("Warning", f"Node{decision.cause or 'Failed'}", decision.message))

    replicas = spec.consensus.replicas
    phase = job_phase(previous_phase, replica_pods(pods, replicas), root, replicas)
    reason, message = str(status.get("reason") or ""), str(status.get("message") or "")
    if failure is not None and phase not in TERMINAL_PHASES:
        phase, (reason, message) = "Failed", failure
        create = []
    elif phase == "Failed" and previous_phase != "Failed":
        reason, message = "TrainingFailed", "the root reported that training failed"
    elif phase == "Succeeded" and previous_phase != "Succeeded":
        reason, message = "TrainingSucceeded", "the root finished every round"

    patch: dict[str, Any] = {"phase": phase, "observedGeneration": generation}
    if reason:
        patch.update(reason=reason, message=message)
    if phase in TERMINAL_PHASES:
        if previous_phase not in TERMINAL_PHASES:
            patch["completionTime"] = iso(now)
            events.append(Event("Normal" if phase == "Succeeded" else "Warning", phase, message))
        # Free the GPUs: nothing runs on after the job ended. After a success the nodes are
        # stopping by themselves (their parents sent STOP): a pod that exits keeps its log, so
        # only the ones still up after a short grace are deleted.
        ended = parse_iso(status.get("completionTime")) or now
        if phase == "Failed" or now >= ended + timedelta(seconds=SUCCESS_GRACE_SECONDS):
            delete += [Deletion(p.name) for p in pods.values() if p.name and not (p.finished or p.deleting)]
        create = []
        book.pending.clear()
    elif phase != previous_phase and phase == "Running":
        events.append(Event("Normal", "Running", "the root is training"))

    patch.update(progress(root))
    moving = check_progress(
        spec, status, root.round if root is not None else None, running=phase == "Running", now=now
    )
    patch.update(moving.status)
    if moving.stalled is not None and _condition_status(status, "Progressing") != "False":
        events.append(Event("Warning", "RoundStalled", moving.stalled))
    patch.update(counts(nodes, pods))
    patch.update(book.to_status(status))
    entries, omitted = node_entries(
        nodes, pods, root, book, status.get("nodes") or [], settings.max_status_nodes
    )
    patch["nodes"] = entries
    patch["nodesOmitted"] = omitted
    patch["conditions"] = merge_conditions(
        status.get("conditions") or [],
        [
            *_conditions(phase, reason, message, nodes, pods, book, now, generation),
            _progressing(phase, moving.stalled, now, generation),
        ],
    )
    seen = set()
    unique_deletes = []
    for d in delete:
        if d.pod not in seen:
            seen.add(d.pod)
            unique_deletes.append(d)
    done_status = {**status, **patch}
    return Actions(
        status=patch,
        create=tuple(create),
        delete=tuple(unique_deletes),
        events=tuple(events),
        delete_job=phase in TERMINAL_PHASES and ttl_expired(spec, done_status, now),
    )


def _condition_status(status: Mapping[str, Any], type_: str) -> str | None:
    return next(
        (str(c.get("status")) for c in status.get("conditions") or [] if c.get("type") == type_), None
    )


def _progressing(phase: str, stalled: str | None, now: datetime, generation: int) -> dict[str, Any]:
    if phase in TERMINAL_PHASES:
        return condition("Progressing", False, "Finished", f"job {phase}", now, generation)
    if stalled is not None:
        return condition("Progressing", False, "RoundStalled", stalled, now, generation)
    return condition("Progressing", True, "RoundAdvancing", "rounds are closing", now, generation)


def _conditions(
    phase: str,
    reason: str,
    message: str,
    nodes: list[TreeNode],
    pods: Mapping[str, PodObservation],
    book: RestartBook,
    now: datetime,
    generation: int,
) -> list[dict[str, Any]]:
    wanted = len(nodes)
    ready = sum(1 for p in pods.values() if p.ready)
    stuck = sorted(f"{n}: {p.stuck}" for n, p in pods.items() if p.stuck)
    out = [
        condition("Running", phase == "Running", phase, f"job is {phase}", now, generation),
        condition(
            "PodsReady",
            ready == wanted,
            "AllReady" if ready == wanted else "NotReady",
            f"{ready}/{wanted} pods ready",
            now,
            generation,
        ),
        condition(
            "PodsStuck",
            bool(stuck),
            "CannotStart" if stuck else "AsExpected",
            "; ".join(stuck[:20]) if stuck else "no pod is stuck",
            now,
            generation,
        ),
        condition(
            "Restarting",
            bool(book.pending),
            "Backoff" if book.pending else "AsExpected",
            ", ".join(sorted(book.pending)) if book.pending else "no replacement pending",
            now,
            generation,
        ),
    ]
    if phase in TERMINAL_PHASES:
        out.append(condition(phase, True, reason or phase, message or f"job {phase}", now, generation))
    return out
