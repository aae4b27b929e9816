"""Signals end what they should: `swarm run` stops every node it started, `swarm node` stops itself.

`swarm run` is a real process here, as a user or a supervisor (systemd, a CI runner) meets it; its
node processes are found in /proc as its children and must all be gone when it has exited.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from swarm_contract.topology import plan_tree
from swarm_worker.local.launcher import TERMINATE_GRACE_S, LocalSwarm
from tests.integration.swarm_helpers import ROOT, manifest
from tests.polling import poll

pytestmark = pytest.mark.integration

#: Eleven processes importing torch on a small machine: the first round may take a while.
FIRST_ROUND_S = 300.0
#: The launcher gives its nodes TERMINATE_GRACE_S before SIGKILL; the rest is slack.
LAUNCHER_EXIT_S = TERMINATE_GRACE_S + 15.0
#: A node asked to stop returns at its next poll turn (the root writes its checkpoint first), or
#: after the local round it is training; then the interpreter tears torch down. About a second on a
#: quiet machine; the bound is what matters in a pod: well inside the kubelet's 30-s grace period,
#: which a node without a handler waited out, even on a loaded 2-core CI machine.
NODE_EXIT_S = 15.0
SWARM = (sys.executable, "-m", "swarm_worker.cli")
ENV = {
    **os.environ,
    "PYTHONPATH": os.pathsep.join(str(ROOT / d) for d in ("contract/src", "worker/src", "operator/src")),
}


def _stat(pid: int) -> tuple[str, int, int] | None:
    """(state, parent pid, start time) of a live process from /proc; None once it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    fields = text[text.rindex(")") + 2 :].split()  # the command name may hold spaces
    return fields[0], int(fields[1]), int(fields[19])


def _children(parent: int) -> dict[int, int]:
    """PID -> start time of every process whose parent is `parent`."""
    out = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (seen := _stat(int(entry.name))) is not None and seen[1] == parent:
            out[int(entry.name)] = seen[2]
    return out


def _still_running(nodes: dict[int, int]) -> list[int]:
    """The processes of `nodes` still running (a zombie has ended; a reused PID is another process)."""
    return [
        pid
        for pid, start in nodes.items()
        if (seen := _stat(pid)) is not None and seen[2] == start and seen[0] != "Z"
    ]


def _start_swarm_run(tmp_path: Path) -> tuple[subprocess.Popen[bytes], Path, Path]:
    output, log = tmp_path / "run", tmp_path / "swarm-run.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [*SWARM, "run", "examples/digits.yaml", "--rounds", "200", "--output", str(output)],
            cwd=ROOT,
            env=ENV,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    return proc, output, log


def _running_nodes(proc: subprocess.Popen[bytes], output: Path, log: Path) -> dict[int, int]:
    """Wait until the root wrote its first round, then return the launcher's node processes."""
    metrics = output / "metrics.jsonl"

    def first_round() -> bool:
        assert proc.poll() is None, f"swarm run exited with {proc.returncode}: {log.read_text()}"
        return metrics.exists() and metrics.read_text().strip() != ""

    poll("the first line of metrics.jsonl", first_round, timeout=FIRST_ROUND_S, interval=0.2)
    nodes = _children(proc.pid)
    assert len(nodes) == len(plan_tree(8, 4).nodes), nodes
    return nodes


def _end(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.kill()
    proc.wait()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP], ids=["term", "int", "hup"])
def test_swarm_run_stops_every_node_on_a_signal_and_exits_128_plus_signum(
    tmp_path: Path, sig: signal.Signals
) -> None:
    proc, output, log = _start_swarm_run(tmp_path)
    try:
        nodes = _running_nodes(proc, output, log)
        proc.send_signal(sig)
        code = proc.wait(timeout=LAUNCHER_EXIT_S)
    finally:
        _end(proc)
    text = log.read_text()
    assert code == 128 + sig, text
    assert f"swarm: {sig.name} received: stopped every node process" in text
    assert _still_running(nodes) == []


def test_nodes_die_with_a_sigkilled_launcher(tmp_path: Path) -> None:
    """No chance to stop them: the kernel does it (PR_SET_PDEATHSIG)."""
    proc, output, log = _start_swarm_run(tmp_path)
    try:
        nodes = _running_nodes(proc, output, log)
        proc.kill()
        proc.wait(timeout=10)
        poll("every node process to end", lambda: _still_running(nodes) == [], timeout=10)
    finally:
        _end(proc)
        for pid in _still_running(nodes):  # do not leave them behind when the test failed
            os.kill(pid, signal.SIGKILL)


def _healthy(port: int) -> bool:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1) as reply:
        return bool(reply.status == 200)


def _start_node(tmp_path: Path, node_id: str) -> tuple[subprocess.Popen[bytes], Path]:
    """One `swarm node` alone, with the argv `swarm run` gives it; its parent and children absent."""
    swarm = LocalSwarm(manifest(training={"rounds": 200}), tmp_path)
    node = swarm.processes[node_id]
    with node.log_path.open("wb") as out:
        proc = subprocess.Popen(node.argv, cwd=ROOT, env=ENV, stdout=out, stderr=subprocess.STDOUT)

    def serving() -> bool:
        assert proc.poll() is None, f"{node_id} exited with {proc.returncode}: {node.log_path.read_text()}"
        return _healthy(node.metrics_port)

    poll(f"{node_id}'s /healthz", serving, timeout=120, interval=0.2, retry=(OSError,))
    return proc, node.log_path


@pytest.mark.parametrize("node_id", ["root", "agg-0", "worker-0"])
def test_swarm_node_stops_soon_after_sigterm(tmp_path: Path, node_id: str) -> None:
    """In a pod the node is PID 1: only its own handler makes the kubelet's SIGTERM do anything."""
    proc, log = _start_node(tmp_path, node_id)
    try:
        proc.send_signal(signal.SIGTERM)
        try:
            code = proc.wait(timeout=NODE_EXIT_S)
        except subprocess.TimeoutExpired:
            pytest.fail(f"{node_id} still running {NODE_EXIT_S} s after SIGTERM: {log.read_text()[-2000:]}")
    finally:
        _end(proc)
    assert code == 128 + signal.SIGTERM, log.read_text()
    assert f"swarm node {node_id}: SIGTERM received: stopping" in log.read_text()


def test_a_second_signal_stops_a_node_at_once(tmp_path: Path) -> None:
    proc, log = _start_node(tmp_path, "root")
    try:
        proc.send_signal(signal.SIGTERM)
        poll("the first SIGTERM to be handled", lambda: "SIGTERM received" in log.read_text(), timeout=10)
        if proc.poll() is None:  # it may have stopped already: the loops check the flag
            proc.send_signal(signal.SIGINT)
        code = proc.wait(timeout=NODE_EXIT_S)
    finally:
        _end(proc)
    assert code in (128 + signal.SIGTERM, 128 + signal.SIGINT), log.read_text()
