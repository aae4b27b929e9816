"""`swarm run`: the whole swarm as local processes on loopback, supervised like the operator would.

Every node of the planned tree is a real `swarm node` process (its own ZeroMQ sockets, its own
metrics server). The launcher restarts a process that dies before the root finished, with the
spec's backoff and budgets, exactly as the operator replaces pods; it follows the root's
`metrics.jsonl` for progress and ends when the root exits.

Files under the output directory: manifest.yaml (the resolved spec every node reads), logs/<node>.log,
checkpoints/ (the root's), metrics.jsonl, result.json (the root's final status).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

import swarm_contract
import swarm_worker
from swarm_contract.spec import API_GROUP, API_VERSION, KIND, Manifest, spec_to_dict
from swarm_contract.topology import TreeNode, plan_tree

POLL_S = 0.2
#: Source roots of this process (worker/src, and contract/src beside it in a checkout).
SOURCE_ROOTS = [
    str(Path(m.__file__).resolve().parents[1]) for m in (swarm_worker, swarm_contract) if m.__file__
]
TERMINATE_GRACE_S = 5.0


def free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


class SwarmFailedError(RuntimeError):
    """The run cannot finish: a node exhausted its restart budget, or the job's budget is spent."""


@dataclass
class NodeProcess:
    node: TreeNode
    argv: list[str]
    log_path: Path
    metrics_port: int
    proc: subprocess.Popen[bytes] | None = None
    restarts: int = 0
    restart_at: float | None = None
    exits: list[int] = field(default_factory=list)


class LocalSwarm:
    def __init__(
        self, manifest: Manifest, output: Path, *, host: str = "127.0.0.1", threads: int = 1
    ) -> None:
        self.manifest = manifest
        self.spec = manifest.spec
        self.output = output
        self.host = host
        self.tree = plan_tree(self.spec.workers.replicas, self.spec.topology.branching_factor)
        output.mkdir(parents=True, exist_ok=True)
        (output / "logs").mkdir(exist_ok=True)
        self.manifest_path = output / "manifest.yaml"
        doc = {
            "apiVersion": f"{API_GROUP}/{API_VERSION}",
            "kind": KIND,
            "metadata": {"name": manifest.name, "namespace": manifest.namespace},
            "spec": spec_to_dict(self.spec),
        }
        self.manifest_path.write_text(yaml.safe_dump(doc, sort_keys=False))
        data_port = {n.id: free_port(host) for n in self.tree.nodes.values() if n.role != "worker"}
        self.processes: dict[str, NodeProcess] = {}
        for node in self.tree.nodes.values():
            metrics_port = free_port(host)
            argv = [
                sys.executable, "-m", "swarm_worker.cli", "node",
                "--manifest", str(self.manifest_path),
                "--node-id", node.id,
                "--metrics-host", host,
                "--metrics-port", str(metrics_port),
                "--bind-host", host,
                "--workdir", str(output),
                "--threads", str(threads),
            ]  # fmt: skip
            if node.id in data_port:
                argv += ["--bind-port", str(data_port[node.id])]
            if node.parent is not None:
                argv += ["--parent", f"{host}:{data_port[node.parent]}"]
            if node.role == "worker" and self.spec.topology.reshuffle and node.parent != "root":
                bottom = sorted(n.id for n in self.tree.aggregators if n.level == 1)
                argv += ["--peers", ",".join(f"{b}={host}:{data_port[b]}" for b in bottom)]
            self.processes[node.id] = NodeProcess(
                node, argv, output / "logs" / f"{node.id}.log", metrics_port
            )
        self.job_restarts = 0
        self.started = time.monotonic()

    # -- processes ------------------------------------------------------------------------------

    def _spawn(self, np_: NodeProcess) -> None:
        # Children import the same sources as this process, whatever the venv's editable install says.
        pythonpath = os.pathsep.join(filter(None, [*SOURCE_ROOTS, os.environ.get("PYTHONPATH")]))
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1", "PYTHONPATH": pythonpath}
        with np_.log_path.open("ab") as log:
            np_.proc = subprocess.Popen(np_.argv, stdout=log, stderr=subprocess.STDOUT, env=env)
        np_.restart_at = None

    def start(self) -> None:
        # Parents first, so children's first HELLOs find a socket (ZeroMQ would retry anyway).
        order = sorted(self.processes.values(), key=lambda p: -p.node.level)
        for np_ in order:
            self._spawn(np_)

    def kill(self, node_id: str, sig: int = signal.SIGKILL) -> int:
        """Send `sig` to a node's process (fault injection); returns its PID."""
        proc = self.processes[node_id].proc
        if proc is None or proc.poll() is not None:
            raise RuntimeError(f"{node_id} is not running")
        proc.send_signal(sig)
        return proc.pid

    def _backoff(self, restarts: int) -> float:
        policy = self.spec.restart_policy
        return float(min(policy.max_backoff_seconds, policy.backoff_seconds * (2 ** max(0, restarts - 1))))

    def supervise(self) -> int | None:
        """One supervision pass: restart dead nodes. Returns the root's exit code once it exited 0."""
        now = time.monotonic()
        policy = self.spec.restart_policy
        for np_ in self.processes.values():
            if np_.proc is None:
                if np_.restart_at is not None and now >= np_.restart_at:
                    self._spawn(np_)
                continue
            code = np_.proc.poll()
            if code is None:
                continue
            np_.exits.append(code)
            np_.proc = None
            if np_.node.role == "root" and code == 0:
                return 0
            if code == 0:
                continue  # a child told to stop: the run is ending
            if np_.restarts >= policy.per_node_limit:
                raise SwarmFailedError(
                    f"{np_.node.id} exited with {code} and used its {policy.per_node_limit} restarts"
                )
            if self.job_restarts >= policy.per_job_limit:
                raise SwarmFailedError(
                    f"{np_.node.id} exited with {code}; the job used its {policy.per_job_limit} restarts"
                )
            np_.restarts += 1
            self.job_restarts += 1
            np_.restart_at = now + self._backoff(np_.restarts)
        return None

    def stop(self) -> None:
        """Stop every process still running: SIGTERM, then SIGKILL after a grace period."""
        live = [p.proc for p in self.processes.values() if p.proc is not None and p.proc.poll() is None]
        for proc in live:
            proc.terminate()
        deadline = time.monotonic() + TERMINATE_GRACE_S
        for proc in live:
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    # -- the run --------------------------------------------------------------------------------

    def metrics_lines(self) -> list[dict[str, Any]]:
        path = self.output / "metrics.jsonl"
        try:
            text = path.read_text()
        except FileNotFoundError:
            return []
        lines = []
        for line in text.splitlines():
            try:
                lines.append(json.loads(line))
            except json.JSONDecodeError:
                break  # a line being written right now
        return lines

    def run(
        self, on_round: Callable[[dict[str, Any]], None] | None = None, timeout: float | None = None
    ) -> dict[str, Any]:
        """Start, supervise until the root finished, stop the rest; returns the root's result."""
        self.start()
        printed = 0
        try:
            while True:
                done = self.supervise()
                if on_round is not None:
                    lines = self.metrics_lines()
                    printed = min(printed, len(lines))  # a resumed root rewrote the file
                    for line in lines[printed:]:
                        on_round(line)
                    printed = len(lines)
                if done is not None:
                    break
                if timeout is not None and time.monotonic() - self.started > timeout:
                    raise SwarmFailedError(f"no result after {timeout:.0f} s")
                time.sleep(POLL_S)
        finally:
            self.stop()
        result = json.loads((self.output / "result.json").read_text())
        result["restarts"] = {k: p.restarts for k, p in self.processes.items() if p.restarts}
        return dict(result)
