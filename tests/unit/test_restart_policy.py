"""What the operator and `swarm run` share: the restart policy (swarm_contract.restarts) and the
command line of a node (swarm_contract.command), and that both deployments really use them."""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

import pytest

from swarm_contract.command import node_argv
from swarm_contract.manifest import parse_manifest
from swarm_contract.operations import RestartPolicy
from swarm_contract.restarts import (
    JOB_LIMIT_EXCEEDED,
    NODE_LIMIT_EXCEEDED,
    backoff_seconds,
    decide_restart,
)
from swarm_contract.spec import SwarmSpec
from swarm_contract.topology import bottom_aggregators, plan_tree
from swarm_operator.builders import tree_of
from swarm_operator.pods import node_command
from swarm_worker.cli import build_parser
from swarm_worker.local.launcher import LocalSwarm, SwarmFailedError

POLICY = RestartPolicy(per_node_limit=3, per_job_limit=5, backoff_seconds=1.0, max_backoff_seconds=10.0)
NOW = 1000.0


@pytest.mark.parametrize(
    ("policy", "n", "delay"),
    [
        (POLICY, 0, 0.0),
        (POLICY, 1, 1.0),
        (POLICY, 3, 4.0),
        (POLICY, 5, 10.0),
        (POLICY, 10**6, 10.0),
        (RestartPolicy(backoff_seconds=0), 7, 0.0),
        (RestartPolicy(backoff_seconds=30, max_backoff_seconds=5), 1, 5.0),
    ],
    ids=[
        "none-before-first",
        "first",
        "third-doubles-twice",
        "capped",
        "huge-n",
        "zero-base",
        "cap-below-base",
    ],
)
def test_backoff(policy: RestartPolicy, n: int, delay: float) -> None:
    assert backoff_seconds(policy, n) == delay


@pytest.mark.parametrize(
    ("policy", "node_restarts", "job_restarts", "expected"),
    [
        (POLICY, 0, 0, ("restart-later", 1, 1.0, NOW + 1.0, "")),
        (POLICY, 2, 4, ("restart-later", 3, 4.0, NOW + 4.0, "")),
        (RestartPolicy(backoff_seconds=0), 0, 0, ("restart-now", 1, 0.0, NOW, "")),
        (POLICY, 3, 3, ("fail", 4, 0.0, 0.0, NODE_LIMIT_EXCEEDED)),
        (POLICY, 1, 5, ("fail", 2, 0.0, 0.0, JOB_LIMIT_EXCEEDED)),
        # Both budgets spent: the node's is named, it is checked first.
        (POLICY, 3, 5, ("fail", 4, 0.0, 0.0, NODE_LIMIT_EXCEEDED)),
        (RestartPolicy(per_node_limit=0), 0, 0, ("fail", 1, 0.0, 0.0, NODE_LIMIT_EXCEEDED)),
        (RestartPolicy(per_job_limit=0), 0, 0, ("fail", 1, 0.0, 0.0, JOB_LIMIT_EXCEEDED)),
    ],
    ids=[
        "first-failure-waits",
        "last-allowed-replacement",
        "no-backoff-restarts-now",
        "node-budget-spent",
        "job-budget-spent",
        "node-budget-named-first",
        "no-node-restarts-allowed",
        "no-job-restarts-allowed",
    ],
)
def test_decide_restart(
    policy: RestartPolicy, node_restarts: int, job_restarts: int, expected: tuple[Any, ...]
) -> None:
    """expected: (action, restart number, delay, not before, reason)."""
    got = decide_restart(
        policy,
        "worker-1",
        "Error: exit code 3",
        node_restarts=node_restarts,
        job_restarts=job_restarts,
        now=NOW,
    )
    assert (got.action, got.restart_number, got.delay_seconds, got.not_before, got.reason) == expected
    assert got.message.startswith("worker-1 failed (Error: exit code 3)")


@pytest.mark.parametrize(
    ("node_restarts", "job_restarts", "message"),
    [
        (0, 0, "worker-1 failed (OOMKilled: exit code 137); replacement 1/3 in 1s"),
        (
            3,
            0,
            "worker-1 failed (OOMKilled: exit code 137) after 3 replacements (restartPolicy.perNodeLimit 3)",
        ),
        (
            0,
            5,
            "worker-1 failed (OOMKilled: exit code 137) after 5 replacements in the job "
            "(restartPolicy.perJobLimit 5)",
        ),
    ],
    ids=["restart", "node-budget", "job-budget"],
)
def test_messages_name_the_node_the_failure_and_the_budget(
    node_restarts: int, job_restarts: int, message: str
) -> None:
    got = decide_restart(
        POLICY,
        "worker-1",
        "OOMKilled: exit code 137",
        node_restarts=node_restarts,
        job_restarts=job_restarts,
        now=NOW,
    )
    assert got.message == message


# -- the launcher applies the same policy ------------------------------------------------------


class _Exited:
    """A stand-in for a node's Popen that has exited with `code`."""

    def __init__(self, code: int) -> None:
        self.code = code

    def poll(self) -> int:
        return self.code


def _local_swarm(tmp_path: Path, **spec: Any) -> LocalSwarm:
    doc = {"apiVersion": "swarm.ncrsh.io/v1alpha1", "kind": "SwarmTraining", "metadata": {"name": "j"}}
    return LocalSwarm(parse_manifest({**doc, "spec": spec}), tmp_path)


def test_launcher_restarts_with_the_policys_backoff_then_fails_with_its_message(tmp_path: Path) -> None:
    swarm = _local_swarm(
        tmp_path,
        restartPolicy={"perNodeLimit": 2, "perJobLimit": 5, "backoffSeconds": 1, "maxBackoffSeconds": 10},
    )
    worker = swarm.processes["worker-3"]
    for n, now in enumerate([100.0, 200.0], start=1):
        worker.proc = _Exited(1)  # type: ignore[assignment]
        assert swarm.supervise(now=now) is None
        assert (worker.restarts, swarm.job_restarts) == (n, n)
        assert worker.restart_at == now + backoff_seconds(swarm.spec.restart_policy, n)
        worker.restart_at = None  # as if respawned
    worker.proc = _Exited(1)  # type: ignore[assignment]
    expected = decide_restart(
        swarm.spec.restart_policy, "worker-3", "exit code 1", node_restarts=2, job_restarts=2, now=300.0
    )
    with pytest.raises(SwarmFailedError) as failed:
        swarm.supervise(now=300.0)
    assert (expected.reason, str(failed.value)) == (NODE_LIMIT_EXCEEDED, expected.message)


def test_launcher_does_not_restart_a_node_that_exited_cleanly(tmp_path: Path) -> None:
    swarm = _local_swarm(tmp_path)
    swarm.processes["agg-0"].proc = _Exited(0)  # type: ignore[assignment]
    assert swarm.supervise(now=NOW) is None
    assert (swarm.processes["agg-0"].restart_at, swarm.job_restarts) == (None, 0)
    swarm.processes["root"].proc = _Exited(0)  # type: ignore[assignment]
    assert swarm.supervise(now=NOW) == 0


# -- one command line ----------------------------------------------------------------------------


def _normalised(argv: list[str], program_length: int, node_of: dict[str, str]) -> list[str]:
    """The argv with each address replaced by the node it points to and ports, paths and the
    launcher-only options (host, threads) blanked: what must agree between the two deployments."""
    args = build_parser().parse_args(argv[program_length:])  # both parse as `swarm node`
    assert args.command == "node"
    out: list[str] = []
    rest = argv[program_length:]
    for flag, value in zip(rest[1::2], rest[2::2], strict=True):
        if flag == "--parent":
            value = node_of[value]
        elif flag == "--peers":
            value = ",".join(f"{k}={node_of[v]}" for k, v in args.peers.items())
        elif flag in ("--bind-host", "--metrics-host", "--threads"):
            continue
        elif flag != "--node-id":
            value = "*"
        out += [flag, value]
    return out


@pytest.mark.parametrize(
    "spec",
    [
        {},
        {"topology": {"branchingFactor": 2, "reshuffle": True}},
        {"workers": {"replicas": 3}, "topology": {"reshuffle": True}},
        {"workers": {"replicas": 10}, "topology": {"branchingFactor": 3, "reshuffle": True}},
    ],
    ids=["default-tree", "deep-reshuffled", "workers-under-the-root", "uneven-reshuffled"],
)
def test_operator_and_launcher_give_every_node_the_same_command_line(
    tmp_path: Path, spec: dict[str, Any]
) -> None:
    swarm = _local_swarm(tmp_path, **spec)
    tree = tree_of(swarm.spec)
    dns = {f"j-{n}.j.ns.svc:{swarm.spec.network.data_port}": n for n in tree.nodes}
    loopback = {f"127.0.0.1:{port}": n for n, port in swarm.data_ports.items()}
    for node in tree.nodes.values():
        pod = node_command(swarm.spec, "j", "ns", node)
        local = swarm.processes[node.id].argv
        assert pod[:2] == ["swarm", "node"]
        assert local[1:4] == ["-m", "swarm_worker.cli", "node"]
        assert _normalised(pod, 1, dns) == _normalised(local, 3, loopback), node.id


def test_reshuffled_workers_are_given_every_bottom_aggregator() -> None:
    spec = SwarmSpec.model_validate(
        {"workers": {"replicas": 8}, "topology": {"branchingFactor": 2, "reshuffle": True}}
    )
    tree = plan_tree(8, 2)  # root <- agg-4, agg-5 <- agg-0..3 <- workers
    bottom = [n.id for n in bottom_aggregators(tree)]
    assert bottom == ["agg-0", "agg-1", "agg-2", "agg-3"]
    argv = node_argv(
        spec, "worker-0", address=lambda n: f"{n}:1", manifest="m", bind_port=1, metrics_port=2, workdir="w"
    )
    assert argv[argv.index("--peers") + 1] == "agg-0=agg-0:1,agg-1=agg-1:1,agg-2=agg-2:1,agg-3=agg-3:1"
    assert "--peers" not in node_argv(
        spec, "agg-0", address=lambda n: f"{n}:1", manifest="m", bind_port=1, metrics_port=2, workdir="w"
    )


def test_a_tree_without_aggregators_has_the_root_at_the_bottom() -> None:
    assert [n.id for n in bottom_aggregators(plan_tree(3, 4))] == ["root"]


def test_launcher_starts_each_node_in_its_own_session_and_stops_them_all(tmp_path: Path) -> None:
    """A terminal's Ctrl-C or hangup reaches the launcher only, which then stops its nodes itself."""
    swarm = _local_swarm(tmp_path, workers={"replicas": 2})
    for node in swarm.processes.values():
        node.argv = ["sleep", "60"]
    swarm.start()
    procs = [p.proc for p in swarm.processes.values()]
    try:
        assert [os.getsid(p.pid) for p in procs if p is not None] == [p.pid for p in procs if p is not None]
    finally:
        swarm.stop()
    assert [p.returncode for p in procs if p is not None] == [-signal.SIGTERM] * 3
