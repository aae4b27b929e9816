"""`swarm run`: the whole swarm as local processes on loopback, supervised like the operator would.

Every node of the planned tree is a real `swarm node` process (its own ZeroMQ sockets, its own
metrics server), started with the argv a pod runs (swarm_contract.command.node_argv). The launcher
restarts a process that dies before the root finished, with the spec's backoff and budgets
(swarm_contract.restarts, exactly as the operator replaces pods); it follows the root's
`metrics.jsonl` for progress and ends when the root exits. GPUs: local/placement.py.

On SIGTERM, SIGINT or SIGHUP `run` stops every node (SIGTERM, then SIGKILL after
TERMINATE_GRACE_S) and raises SwarmInterruptedError (`swarm run` exits 128 + signum). Nodes run in
their own session, so a terminal's Ctrl-C reaches the launcher only; on Linux a node also gets
SIGKILL from the kernel if the launcher dies without stopping it (PR_SET_PDEATHSIG).

Output: manifest.yaml (the resolved spec), keys/, logs/<node>.log, checkpoints/, metrics.jsonl and
result.json (the root's); with root replicas, replicas/<id>/ for each replica but `root`.
"""

from __future__ import annotations

import ctypes
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import Any

import yaml

import swarm_contract
import swarm_worker
from swarm_contract.manifest import Manifest, spec_to_dict
from swarm_contract.restarts import decide_restart
from swarm_contract.spec import API_GROUP, API_VERSION, KIND
from swarm_contract.topology import plan_tree
from swarm_worker.local.placement import local_gpus, node_environ, plan_local_gpus
from swarm_worker.local.processes import NodeProcess, plan_processes
from swarm_worker.protocol.curve import write_job_keys

POLL_S = 0.2
#: Source roots of this process (worker/src, and contract/src beside it in a checkout).
SOURCE_ROOTS = [
    str(Path(m.__file__).resolve().parents[1]) for m in (swarm_worker, swarm_contract) if m.__file__
]
TERMINATE_GRACE_S = 5.0
#: Signals that stop `swarm run` and every node it started.
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
#: Node processes run `python -m swarm_worker.cli`, with the interpreter of the launcher.
NODE_PROGRAM = (sys.executable, "-m", "swarm_worker.cli")
PR_SET_PDEATHSIG = 1


class SwarmFailedError(RuntimeError):
    """The run cannot finish: a node exhausted its restart budget, or the job's budget is spent."""


class SwarmInterruptedError(RuntimeError):
    """A stop signal ended the run; every node process was stopped."""

    def __init__(self, signum: int) -> None:
        self.signum = signum
        self.signal_name = signal.Signals(signum).name
        super().__init__(f"stopped by {self.signal_name}")


def _pdeathsig_hook() -> Callable[[], None] | None:
    """A `preexec_fn` asking Linux to SIGKILL the child when its parent thread ends; None elsewhere.

    Only from the main thread: the kernel ties the signal to the thread that forked, and a worker
    thread may end long before the launcher does.
    """
    if not sys.platform.startswith("linux") or threading.current_thread() is not threading.main_thread():
        return None
    prctl = ctypes.CDLL(None, use_errno=True).prctl  # looked up here: the child only calls it
    parent = os.getpid()

    def die_with_parent() -> None:
        prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL))
        if os.getppid() != parent:  # the launcher died before prctl took effect
            os.kill(os.getpid(), signal.SIGKILL)

    return die_with_parent


class LocalSwarm:
    def __init__(
        self, manifest: Manifest, output: Path, *, host: str = "127.0.0.1", threads: int = 1
    ) -> None:
        self.manifest = manifest
        self.spec = manifest.spec
        self.output = output
        self.host = host
        self.tree = plan_tree(self.spec.workers.replicas, self.spec.topology.branching_factor)
        #: This machine's GPUs, and each node that computes on CUDA: its GPUs and share (placement.py).
        self.gpus = local_gpus()
        self.gpu_plan = plan_local_gpus(self.spec, self.tree, self.gpus)
        output.mkdir(parents=True, exist_ok=True)
        (output / "logs").mkdir(exist_ok=True)
        self.manifest_path = output / "manifest.yaml"
        meta = {"name": manifest.name, "namespace": manifest.namespace}
        doc = {"apiVersion": f"{API_GROUP}/{API_VERSION}", "kind": KIND, "metadata": meta}
        doc["spec"] = spec_to_dict(self.spec)
        self.manifest_path.write_text(yaml.safe_dump(doc, sort_keys=False))
        #: The job's keys, a CURVE and a signing pair per node and root replica (kept on a resume).
        self.keys_dir = write_job_keys(output / "keys", self.tree, self.spec.consensus.replicas)
        self.processes = plan_processes(
            self.spec, output, self.manifest_path, self.keys_dir, host, threads, NODE_PROGRAM
        )
        #: Every process's data port, by node id.
        self.data_ports = {node_id: p.data_port for node_id, p in self.processes.items()}
        self.job_restarts = 0
        self.finished_by: NodeProcess | None = None  # the root replica whose result is the run's
        self.started = time.monotonic()
        #: The stop signal received while `run` supervised, if any.
        self.signalled: int | None = None

    # -- processes ------------------------------------------------------------------------------

    def _spawn(self, np_: NodeProcess) -> None:
        # Children import the same sources as this process, whatever the venv's editable install says.
        pythonpath = os.pathsep.join(filter(None, [*SOURCE_ROOTS, os.environ.get("PYTHONPATH")]))
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1", "PYTHONPATH": pythonpath}
        if np_.node.id in self.gpu_plan:
            env = node_environ(env, self.gpu_plan[np_.node.id], self.gpus)
        with np_.log_path.open("ab") as log:
            np_.proc = subprocess.Popen(
                np_.argv,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
                preexec_fn=_pdeathsig_hook(),  # only prctl runs between fork and exec
            )
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

    def supervise(self, now: float | None = None) -> int | None:
        """One supervision pass at `now` (default: time.monotonic()): restart dead nodes. Returns the
        root's exit code once it exited 0; SwarmFailedError when a restart budget is spent."""
        now = time.monotonic() if now is None else now
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
            if np_.node.role == "root" and code == 0:  # with replicas, the first to finish
                self.finished_by = np_
                return 0
            if code == 0:
                continue  # a child told to stop, or another replica done: the run is ending
            verdict = decide_restart(
                self.spec.restart_policy,
                np_.node.id,
                f"exit code {code}",
                node_restarts=np_.restarts,
                job_restarts=self.job_restarts,
                now=now,
            )
            if verdict.action == "fail":
                raise SwarmFailedError(verdict.message)
            np_.restarts = verdict.restart_number
            self.job_restarts += 1
            np_.restart_at = verdict.not_before
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

    @contextmanager
    def _stop_signals(self) -> Iterator[None]:
        """While `run` supervises, a stop signal is recorded here and acted on at the next turn."""
        if threading.current_thread() is not threading.main_thread():
            yield  # signal handlers can only be set from the main thread
            return

        def record(signum: int, frame: FrameType | None) -> None:
            if self.signalled is None:
                self.signalled = signum

        previous = {sig: signal.signal(sig, record) for sig in STOP_SIGNALS}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

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
        """Start, supervise until the root finished, stop the rest; returns the root's result.

        Raises SwarmInterruptedError after a stop signal (handled only when called from the main
        thread), SwarmFailedError when a restart budget is spent or `timeout` passed."""
        printed = 0
        with self._stop_signals():
            try:
                self.start()
                while True:
                    if self.signalled is not None:
                        raise SwarmInterruptedError(self.signalled)
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
        winner = self.finished_by
        if winner is not None and winner.workdir != self.output:  # a replica other than `root` finished
            for name in ("metrics.jsonl", "result.json"):
                os.replace(shutil.copy(winner.workdir / name, self.output / f".{name}"), self.output / name)
        result = json.loads((self.output / "result.json").read_text())
        result["restarts"] = {k: p.restarts for k, p in self.processes.items() if p.restarts}
        return dict(result)
