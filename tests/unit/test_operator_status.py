"""Status math and one reconcile tick: phase, conditions, counts, nodes[], actions, TTL, settings."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from swarm_contract.manifest import parse_spec
from swarm_contract.records import NodeRecord, RootStatus
from swarm_contract.topology import plan_tree
from swarm_operator.observe import PodObservation
from swarm_operator.reconcile import Deletion, reconcile
from swarm_operator.restarts import RestartBook, iso
from swarm_operator.settings import ENV, Settings, SettingsError, kopf_argv
from swarm_operator.status import counts, job_phase, merge_conditions, node_entries

NOW = datetime(2025, 1, 1, 12, 0, 0, tzinfo=UTC)
SPEC = parse_spec({"workers": {"replicas": 4}, "topology": {"branchingFactor": 2}})
TREE = plan_tree(4, 2)  # root <- agg-0 (worker-0, 1), agg-1 (worker-2, 3)


def _obs(node_id: str, phase: str = "Running", ready: bool = True, **kw: Any) -> PodObservation:
    role = "root" if node_id == "root" else ("worker" if node_id.startswith("worker") else "aggregator")
    return PodObservation(
        name=f"j-{node_id}", node_id=node_id, role=role, uid=f"uid-{node_id}", phase=phase, ready=ready, **kw
    )


def _all_running() -> dict[str, PodObservation]:
    return {n: _obs(n) for n in TREE.nodes}


def _root(phase: str = "Running", **kw: Any) -> RootStatus:
    return RootStatus(phase=phase, round=3, rounds=30, loss=0.4, accuracy=0.9, **kw)  # type: ignore[arg-type]


def _record(node_id: str, **kw: Any) -> NodeRecord:
    measured = {"reputation": 1.0, "uptime": 1.0, "agreement": 1.0, "contribution": 1.0, "quarantined": False}
    return NodeRecord.model_validate(
        {"id": node_id, "role": "worker", "parent": "agg-0", "last_round": 3, **measured, **kw}
    )


@pytest.mark.parametrize(
    ("previous", "root_pod", "root", "expected"),
    [
        (None, None, None, "Pending"),
        ("Pending", _obs("root", "Pending"), None, "Pending"),
        ("Pending", _obs("root"), None, "Running"),
        ("Running", _obs("root"), _root("Running"), "Running"),
        ("Running", None, None, "Running"),
        ("Running", _obs("root"), _root("Succeeded"), "Succeeded"),
        ("Running", _obs("root", "Succeeded"), None, "Succeeded"),
        ("Running", _obs("root"), _root("Failed"), "Failed"),
        ("Succeeded", _obs("root"), _root("Running"), "Succeeded"),
        ("Failed", _obs("root"), _root("Running"), "Failed"),
    ],
    ids=[
        "nothing",
        "root-pending",
        "root-pod-running",
        "root-says-running",
        "root-being-replaced",
        "root-says-done",
        "root-exited-0",
        "root-says-failed",
        "succeeded-sticks",
        "failed-sticks",
    ],
)
def test_job_phase(
    previous: str | None, root_pod: PodObservation | None, root: RootStatus | None, expected: str
) -> None:
    assert job_phase(previous, [] if root_pod is None else [root_pod], root) == expected


def test_conditions_keep_transition_time_while_unchanged() -> None:
    old = [
        {
            "type": "Running",
            "status": "True",
            "lastTransitionTime": "2024-01-01T00:00:00Z",
            "reason": "a",
            "message": "",
            "observedGeneration": 1,
        }
    ]
    same = {
        "type": "Running",
        "status": "True",
        "lastTransitionTime": iso(NOW),
        "reason": "b",
        "message": "m",
        "observedGeneration": 2,
    }
    changed = {**same, "status": "False"}
    assert merge_conditions(old, [same])[0]["lastTransitionTime"] == "2024-01-01T00:00:00Z"
    assert merge_conditions(old, [changed])[0]["lastTransitionTime"] == iso(NOW)


def test_counts() -> None:
    pods = _all_running()
    pods["worker-3"] = _obs("worker-3", ready=False)
    del pods["agg-1"]
    assert counts(TREE.nodes.values(), pods) == {
        "workers": 4,
        "readyWorkers": 3,
        "ready": "3/4",
        "aggregators": 3,
        "readyAggregators": 2,
    }


def test_nodes_merge_pods_restarts_and_reputation_least_healthy_first() -> None:
    pods = _all_running()
    pods["worker-2"] = _obs("worker-2", "Pending", ready=False, stuck="Unschedulable")
    root = _root(
        nodes=[
            _record("worker-0", reputation=0.2, quarantined=True),
            _record("worker-1", reputation=0.7),
        ]
    )
    book = RestartBook(by_node={"worker-3": 1}, last_failure={"worker-3": "OOMKilled: exit code 137"})
    nodes, omitted = node_entries(TREE.nodes.values(), pods, root, book, [], max_nodes=3)
    assert omitted == 4
    assert [n["id"] for n in nodes] == ["worker-0", "worker-2", "worker-3"]
    assert nodes[0]["quarantined"] is True
    assert nodes[0]["reputation"] == 0.2
    assert nodes[1]["lastFailureReason"] == "Unschedulable"
    assert nodes[2] == {
        "id": "worker-3",
        "pod": "j-worker-3",
        "role": "worker",
        "parent": "agg-1",
        "phase": "Running",
        "ready": True,
        "restarts": 1,
        "lastFailureReason": "OOMKilled: exit code 137",
    }


def test_reputation_is_carried_over_when_root_is_unreachable() -> None:
    previous = [{"id": "worker-1", "reputation": 0.5, "lastRound": 7}]
    nodes, _ = node_entries(TREE.nodes.values(), _all_running(), None, RestartBook(), previous, max_nodes=100)
    entry = next(n for n in nodes if n["id"] == "worker-1")
    assert (entry["reputation"], entry["lastRound"]) == (0.5, 7)


def _tick(
    pods: dict[str, PodObservation], root: RootStatus | None, status: dict[str, Any], spec: Any = SPEC
) -> Any:
    return reconcile(spec, pods, root, status, now=NOW, generation=2, settings=Settings())


def test_healthy_running_tick_writes_progress_and_no_actions() -> None:
    actions = _tick(_all_running(), _root(), {"phase": "Pending", "startTime": iso(NOW)})
    assert (actions.create, actions.delete, actions.delete_job) == ((), (), False)
    s = actions.status
    assert (s["phase"], s["observedGeneration"], s["round"], s["loss"], s["ready"]) == (
        "Running",
        2,
        3,
        0.4,
        "4/4",
    )
    conditions = {c["type"]: c["status"] for c in s["conditions"]}
    assert conditions == {
        "Running": "True",
        "PodsReady": "True",
        "PodsStuck": "False",
        "Restarting": "False",
        "Progressing": "True",
    }
    assert s["roundChangedAt"] == iso(NOW)
    assert [(e.type, e.reason) for e in actions.events] == [("Normal", "Running")]


def test_failed_worker_is_deleted_and_later_recreated() -> None:
    pods = _all_running()
    pods["worker-1"] = _obs("worker-1", "Failed", ready=False, failure="Error", exit_code=2)
    first = _tick(pods, _root(), {"phase": "Running"})
    assert first.delete == (Deletion("j-worker-1"),)
    assert first.status["restarts"]["byCause"] == {"Error": 1}
    assert first.status["phase"] == "Running"
    assert [(e.type, e.reason) for e in first.events] == [("Warning", "NodeError")]
    del pods["worker-1"]
    later = reconcile(
        SPEC,
        pods,
        _root(),
        {**first.status},
        now=NOW + timedelta(seconds=2),
        generation=2,
        settings=Settings(),
    )
    assert later.create == ("worker-1",)
    assert later.status["pendingRestarts"] == {"worker-1": None}


def test_budget_exhausted_fails_the_job_and_frees_every_pod() -> None:
    spec = parse_spec(
        {"workers": {"replicas": 4}, "topology": {"branchingFactor": 2}, "restartPolicy": {"perNodeLimit": 0}}
    )
    pods = _all_running()
    pods["worker-1"] = _obs("worker-1", "Failed", ready=False, failure="OOMKilled")
    actions = _tick(pods, _root(), {"phase": "Running"}, spec)
    assert (actions.status["phase"], actions.status["reason"]) == ("Failed", "NodeRestartLimitExceeded")
    assert actions.status["completionTime"] == iso(NOW)
    assert {d.pod for d in actions.delete} == {f"j-{n}" for n in TREE.nodes if n != "worker-1"}
    assert actions.create == ()
    assert ("Warning", "Failed") in [(e.type, e.reason) for e in actions.events]


def test_success_cleans_up_stragglers_and_ttl_deletes_the_job() -> None:
    spec = parse_spec(
        {"workers": {"replicas": 4}, "topology": {"branchingFactor": 2}, "ttlSecondsAfterFinished": 60}
    )
    pods = {n: _obs(n, "Succeeded", ready=False) for n in TREE.nodes}
    pods["worker-2"] = _obs("worker-2")
    done = _tick(pods, None, {"phase": "Running"}, spec)
    assert (done.status["phase"], done.status["reason"]) == ("Succeeded", "TrainingSucceeded")
    assert done.delete == ()  # a grace to exit by itself, keeping its log
    graced = reconcile(
        spec, pods, None, {**done.status}, now=NOW + timedelta(seconds=15), generation=2, settings=Settings()
    )
    assert graced.delete == (Deletion("j-worker-2"),)
    assert done.delete_job is False
    later = reconcile(
        spec,
        pods,
        None,
        {**done.status},
        now=NOW + timedelta(seconds=60),
        generation=2,
        settings=Settings(),
    )
    assert later.delete_job is True
    assert "completionTime" not in later.status  # set once, on the transition


def test_finished_job_never_replaces_pods() -> None:
    actions = _tick({}, None, {"phase": "Succeeded", "completionTime": iso(NOW)})
    assert (actions.create, actions.delete, actions.events) == ((), (), ())


def test_status_nodes_are_bounded_by_settings() -> None:
    actions = reconcile(
        SPEC,
        _all_running(),
        None,
        {"phase": "Running"},
        now=NOW,
        generation=1,
        settings=Settings(max_status_nodes=2),
    )
    assert (len(actions.status["nodes"]), actions.status["nodesOmitted"]) == (2, 5)


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, Settings()),
        ({"SWARM_WATCH_NAMESPACES": "a, b,"}, Settings(watch_namespaces=("a", "b"))),
        (
            {"SWARM_SYNC_INTERVAL_SECONDS": "2.5", "SWARM_MAX_STATUS_NODES": "10"},
            Settings(sync_interval_seconds=2.5, max_status_nodes=10),
        ),
    ],
    ids=["defaults", "namespaces", "numbers"],
)
def test_settings_from_env(env: dict[str, str], expected: Settings) -> None:
    assert Settings.from_env(env) == expected


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"SWARM_HEALTH_PORT": "http"}, "SWARM_HEALTH_PORT='http': expected int"),
        ({"SWARM_METRICS_PORT": "70000"}, "SWARM_METRICS_PORT=70000: not a port"),
        ({"SWARM_IMAGE_PULL_POLICY": "Sometimes"}, "not a pull policy"),
        ({"SWARM_SYNC_INTERVAL_SECONDS": "0"}, "must be positive"),
        ({"SWARM_NODE_LOST_SECONDS": "-1"}, "SWARM_NODE_LOST_SECONDS must not be negative"),
    ],
    ids=["not-a-number", "port-range", "pull-policy", "zero-interval", "negative-node-lost"],
)
def test_settings_errors_name_the_variable(env: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError, match=message.replace("(", r"\(")):
        Settings.from_env(env)


def test_every_setting_has_an_env_var() -> None:
    assert set(ENV) == set(Settings.__dataclass_fields__)


@pytest.mark.parametrize(
    ("namespaces", "scope"),
    [((), ["--all-namespaces"]), (("a", "b"), ["--namespace=a", "--namespace=b"])],
    ids=["cluster", "namespaced"],
)
def test_kopf_argv(namespaces: tuple[str, ...], scope: list[str]) -> None:
    assert kopf_argv(Settings(watch_namespaces=namespaces)) == [
        "kopf",
        "run",
        "--standalone",
        "-m",
        "swarm_operator.handlers",
        "--liveness=http://0.0.0.0:8080/healthz",
        *scope,
    ]
