"""Pod observation (failure causes) and restart decisions (budget, backoff, dedup by pod uid)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from swarm_contract.operations import RestartPolicy
from swarm_contract.restarts import backoff_seconds
from swarm_operator.observe import (
    PodObservation,
    final_root_status,
    observe_pod,
    parse_root_status,
    root_status_url,
)
from swarm_operator.restarts import RestartBook, decide_node, iso

NOW = datetime(2025, 1, 1, 12, 0, 0, tzinfo=UTC)


def _pod(phase: str = "Running", **status: Any) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "name": "digits-worker-1",
        "uid": "u1",
        "labels": {"swarm.ncrsh.io/node": "worker-1", "swarm.ncrsh.io/role": "worker"},
    }
    if status.pop("deleting", False):
        meta["deletionTimestamp"] = "2025-01-01T11:59:00Z"
    return {"metadata": meta, "status": {"phase": phase, **status}}


def _terminated(code: int, reason: str = "Error") -> list[dict[str, Any]]:
    return [{"name": "swarm", "state": {"terminated": {"exitCode": code, "reason": reason}}}]


@pytest.mark.parametrize(
    ("pod", "failure", "stuck", "exit_code"),
    [
        (_pod("Running"), None, None, None),
        (_pod("Succeeded", containerStatuses=_terminated(0, "Completed")), None, None, 0),
        (_pod("Failed", containerStatuses=_terminated(3)), "Error", None, 3),
        (_pod("Failed", containerStatuses=_terminated(137, "OOMKilled")), "OOMKilled", None, 137),
        (_pod("Failed", reason="Evicted", message="low on memory"), "Evicted", None, None),
        (_pod("Failed", reason="NodeLost"), "NodeLost", None, None),
        (_pod("Unknown"), "NodeLost", None, None),
        (
            _pod(
                "Running",
                deleting=True,
                conditions=[
                    {"type": "DisruptionTarget", "status": "True", "reason": "DeletionByTaintManager"}
                ],
            ),
            "NodeLost",
            None,
            None,
        ),
        (
            _pod(
                "Failed",
                conditions=[
                    {"type": "DisruptionTarget", "status": "True", "reason": "PreemptionByScheduler"}
                ],
            ),
            "Preempted",
            None,
            None,
        ),
        (
            _pod(
                "Pending",
                conditions=[
                    {
                        "type": "PodScheduled",
                        "status": "False",
                        "reason": "Unschedulable",
                        "message": "0/1 nodes have nvidia.com/gpu",
                    }
                ],
            ),
            None,
            "Unschedulable",
            None,
        ),
        (
            _pod("Pending", containerStatuses=[{"state": {"waiting": {"reason": "ImagePullBackOff"}}}]),
            None,
            "ImagePull",
            None,
        ),
        (_pod("Failed", deleting=True, containerStatuses=_terminated(1)), None, None, 1),
    ],
    ids=[
        "running",
        "succeeded",
        "error-exit",
        "oom",
        "evicted",
        "node-lost-reason",
        "unknown-phase",
        "taint-manager",
        "preempted",
        "unschedulable",
        "image-pull",
        "already-deleting",
    ],
)
def test_observe_pod_cause(
    pod: dict[str, Any], failure: str | None, stuck: str | None, exit_code: int | None
) -> None:
    seen = observe_pod(pod)
    assert (seen.failure, seen.stuck, seen.exit_code) == (failure, stuck, exit_code)
    assert (seen.node_id, seen.role, seen.uid) == ("worker-1", "worker", "u1")


def test_observe_ready_and_ip() -> None:
    seen = observe_pod(
        _pod(
            "Running",
            podIP="10.0.0.7",
            startTime="2025-01-01T11:00:00Z",
            conditions=[{"type": "Ready", "status": "True"}],
        )
    )
    assert (seen.ready, seen.ip, seen.started_at) == (True, "10.0.0.7", NOW - timedelta(hours=1))


@pytest.mark.parametrize(
    ("raw", "ok"),
    [
        (
            b'{"job": "d", "phase": "Running", "round": 3, "rounds": 30, "loss": 0.5, "accuracy": null,'
            b' "bytesSent": 10, "denseEquivalentBytes": 100, "samplesPerSecond": 1.5,'
            b' "nodes": [{"id": "worker-0", "role": "worker", "parent": "agg-0", "reputation": 0.9,'
            b' "uptime": 1, "agreement": 1, "contribution": 0.2, "quarantined": false, "lastRound": 3}]}',
            True,
        ),
        (b"not json", False),
        (b'{"phase": "Exploded"}', False),
        (b"[1, 2]", False),
    ],
    ids=["full", "garbage", "bad-phase", "not-an-object"],
)
def test_parse_root_status(raw: bytes, ok: bool) -> None:
    parsed = parse_root_status(raw)
    assert (parsed is not None) == ok
    if parsed is not None:
        assert (parsed.round, parsed.bytes_sent, parsed.nodes[0].reputation) == (3, 10, 0.9)


def _finished_root(code: int, message: str) -> dict[str, Any]:
    state = {"terminated": {"exitCode": code, "reason": "Completed", "message": message}}
    return _pod("Succeeded" if code == 0 else "Failed", containerStatuses=[{"name": "swarm", "state": state}])


def test_final_root_status_comes_from_the_termination_message() -> None:
    final = '{"phase":"Succeeded","round":100,"rounds":100,"loss":0.09,"accuracy":0.98,"nodes":[]}'
    got = final_root_status(observe_pod(_finished_root(0, final)))
    assert got is not None
    assert (got.phase, got.round, got.accuracy) == ("Succeeded", 100, 0.98)
    assert final_root_status(observe_pod(_finished_root(0, "not json"))) is None
    assert final_root_status(observe_pod(_finished_root(1, final))) is None
    assert final_root_status(observe_pod(_pod("Running"))) is None


def test_root_status_url_handles_ipv6() -> None:
    assert root_status_url("10.1.2.3", 9090) == "http://10.1.2.3:9090/status"
    assert root_status_url("fd00::5", 9090) == "http://[fd00::5]:9090/status"


POLICY = RestartPolicy(per_node_limit=3, per_job_limit=5, backoff_seconds=1.0, max_backoff_seconds=10.0)


@pytest.mark.parametrize(
    ("n", "delay"),
    [(1, 1.0), (2, 2.0), (3, 4.0), (4, 8.0), (5, 10.0), (500, 10.0)],
    ids=["first", "second", "third", "fourth", "capped", "huge-n"],
)
def test_backoff_doubles_up_to_the_cap(n: int, delay: float) -> None:
    assert backoff_seconds(POLICY, n) == delay


def _seen(failure: str | None = None, uid: str = "u1", **kw: Any) -> PodObservation:
    phase = "Failed" if failure else kw.pop("phase", "Running")
    return PodObservation(
        name="j-worker-1", node_id="worker-1", role="worker", uid=uid, phase=phase, failure=failure, **kw
    )


def test_failed_pod_is_counted_then_deleted_with_backoff() -> None:
    book = RestartBook()
    decision = decide_node("worker-1", _seen("OOMKilled", exit_code=137), book, POLICY, NOW)
    assert (decision.action, decision.cause, decision.force) == ("delete", "OOMKilled", False)
    assert decision.message == "worker-1 failed (OOMKilled: exit code 137); replacement 1/3 in 1s"
    assert book.to_status({}) == {
        "restarts": {
            "total": 1,
            "byCause": {"OOMKilled": 1},
            "byNode": {"worker-1": 1},
            "lastFailure": {"worker-1": "OOMKilled: exit code 137"},
        },
        "pendingRestarts": {
            "worker-1": {"cause": "OOMKilled", "notBefore": iso(NOW + timedelta(seconds=1)), "podUid": "u1"}
        },
    }


def test_a_failure_is_counted_once_per_pod_uid() -> None:
    book = RestartBook()
    decide_node("worker-1", _seen("Error"), book, POLICY, NOW)
    again = decide_node("worker-1", _seen("Error"), book, POLICY, NOW + timedelta(seconds=5))
    assert again.action == "delete"
    assert again.message == ""
    assert (book.total, book.by_node) == (1, {"worker-1": 1})


def test_replacement_waits_for_backoff_then_is_created() -> None:
    book = RestartBook()
    decide_node("worker-1", _seen("Error"), book, POLICY, NOW)
    assert decide_node("worker-1", None, book, POLICY, NOW).action == "wait"
    created = decide_node("worker-1", None, book, POLICY, NOW + timedelta(seconds=1))
    assert (created.action, created.cause) == ("create", "Error")
    assert book.pending == {}
    assert book.to_status({"pendingRestarts": {"worker-1": {}}})["pendingRestarts"] == {"worker-1": None}


def test_state_survives_an_operator_restart_through_status() -> None:
    book = RestartBook()
    decide_node("worker-1", _seen("Error"), book, POLICY, NOW)
    status = book.to_status({})
    reloaded = RestartBook.from_status(status)
    assert decide_node("worker-1", _seen("Error"), reloaded, POLICY, NOW).action == "delete"
    assert reloaded.total == 1


@pytest.mark.parametrize(
    ("by_node", "total", "reason"),
    [
        ({"worker-1": 3}, 3, "NodeRestartLimitExceeded"),
        ({"worker-2": 2, "worker-3": 2, "worker-1": 1}, 5, "JobRestartLimitExceeded"),
    ],
    ids=["per-node", "per-job"],
)
def test_budget_spent_fails_the_job(by_node: dict[str, int], total: int, reason: str) -> None:
    book = RestartBook(total=total, by_node=dict(by_node))
    decision = decide_node("worker-1", _seen("Evicted"), book, POLICY, NOW)
    assert (decision.action, decision.reason) == ("fail", reason)
    assert book.total == total


def test_missing_pod_without_record_counts_as_deleted() -> None:
    book = RestartBook()
    zero = RestartPolicy(backoff_seconds=0)
    decision = decide_node("worker-1", None, book, zero, NOW)
    assert (decision.action, decision.cause) == ("create", "Deleted")
    assert book.by_cause == {"Deleted": 1}
    later = decide_node("worker-2", None, RestartBook(), POLICY, NOW)
    assert later.action == "wait"


@pytest.mark.parametrize(
    ("started_ago", "action"),
    [(timedelta(seconds=10), "keep"), (timedelta(minutes=5), "delete")],
    ids=["fresh-replacement-gets-grace", "old-quarantined-is-replaced"],
)
def test_quarantined_node_is_replaced_after_grace(started_ago: timedelta, action: str) -> None:
    pod = _seen(started_at=NOW - started_ago)
    decision = decide_node(
        "worker-1", pod, RestartBook(), POLICY, NOW, quarantined=True, quarantine_grace_seconds=120
    )
    assert decision.action == action
    if action == "delete":
        assert decision.cause == "Quarantined"


def test_node_lost_is_force_deleted_even_while_terminating() -> None:
    pod = _seen(phase="Running", failure=None, deleting=True)
    lost = PodObservation(**{**pod.__dict__, "failure": "NodeLost"})
    decision = decide_node("worker-1", lost, RestartBook(), POLICY, NOW)
    assert (decision.action, decision.force) == ("delete", True)


@pytest.mark.parametrize(
    "pod",
    [
        _seen(phase="Running"),
        _seen(phase="Pending", stuck="Unschedulable"),
        _seen(phase="Running", deleting=True),
    ],
    ids=["healthy", "unschedulable-is-reported-not-replaced", "terminating"],
)
def test_nothing_to_do(pod: PodObservation) -> None:
    book = RestartBook()
    assert decide_node("worker-1", pod, book, POLICY, NOW).action == "keep"
    assert book.total == 0
