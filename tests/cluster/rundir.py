"""One test cluster's run directory and what runs from it: the spec, the paths, ``state.json`` (every
PID and every host change, recorded as it is made), the processes started with their logs, and the
admin's access to the apiserver (HTTP and kubectl).

``RunDir`` is the base of ``harness.Cluster``; the modules that start the pieces (controlplane,
fakenodes, nodes, hostnet) take one, so none of them needs the harness.
"""

from __future__ import annotations

import dataclasses
import gc
import json
import os
import ssl
import subprocess
import time
import urllib.error
import urllib.request
import warnings
from pathlib import Path
from typing import Any

from .binaries import default_bin_dir

START_TIMEOUT_S = 120.0


class ClusterError(RuntimeError):
    """The cluster could not be started or stopped; the message says which piece and where its log is."""


@dataclasses.dataclass
class ClusterSpec:
    """What to run. Defaults give the control-plane-only cluster with one 4-GPU fake node."""

    name: str = "default"
    nodes: int = 0  # real nodes (kubelet + containerd): 0, 1 or 2; needs root and images.sh
    fake_nodes: int = 1  # Node objects with a heartbeat and no kubelet (control-plane mode)
    gpus_per_node: int = 4  # nvidia.com/gpu capacity of every node, fake or real
    run_dir: Path | None = None  # default: $NCRSH_CLUSTER_DIR or /tmp/ncrsh-cluster/<name>
    bin_dir: Path | None = None  # default: default_bin_dir()
    image_tars: tuple[Path, ...] = ()  # extra image tars imported into every node's containerd

    def resolved_run_dir(self) -> Path:
        if self.run_dir is not None:
            return Path(self.run_dir)
        env = os.environ.get("NCRSH_CLUSTER_DIR")
        return Path(env) if env else Path("/tmp/ncrsh-cluster") / self.name


class RunDir:
    """A cluster's run directory, its state and its processes; ``harness.Cluster`` starts and stops it."""

    def __init__(self, spec: ClusterSpec | None = None) -> None:
        self.spec = spec or ClusterSpec()
        self.root = self.spec.resolved_run_dir().absolute()
        self.bin = Path(self.spec.bin_dir) if self.spec.bin_dir else default_bin_dir()
        self.pki = self.root / "pki"
        self.logs = self.root / "logs"
        self.kubeconfig = self.root / "admin.kubeconfig"
        self.state_file = self.root / "state.json"
        self.state: dict[str, Any] = {}
        self._popen: dict[str, subprocess.Popen[bytes]] = {}
        self.timings: dict[str, float] = {}
        self._t_start = time.monotonic()

    # ---- state ----------------------------------------------------------------------------------

    @property
    def marker(self) -> str:
        return str(self.root) + "/"

    def _save(self) -> None:
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.state, indent=1))
        tmp.replace(self.state_file)

    def _load(self) -> dict[str, Any]:
        try:
            return dict(json.loads(self.state_file.read_text()))
        except (OSError, ValueError):
            return {}

    def _record(self, key: str, value: Any) -> None:
        self.state.setdefault(key, [])
        if value not in self.state[key]:
            self.state[key].append(value)
        self._save()

    # ---- processes ------------------------------------------------------------------------------

    def _spawn(self, name: str, cmd: list[str], env: dict[str, str] | None = None) -> int:
        log = open(self.logs / f"{name}.log", "ab")  # noqa: SIM115 - owned by the child from here on
        try:
            p = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                cwd=self.root,
                env={**os.environ, **(env or {})},
            )
        finally:
            log.close()
        self._popen[name] = p
        self.state.setdefault("procs", {})[name] = p.pid
        self._save()
        return p.pid

    def _check_alive(self, name: str) -> None:
        p = self._popen.get(name)
        if p is not None and p.poll() is not None:
            raise ClusterError(
                f"{name} exited with {p.returncode}; log: {self.logs / (name + '.log')}\n" + self._tail(name)
            )

    def _tail(self, name: str, lines: int = 25) -> str:
        try:
            return "\n".join((self.logs / f"{name}.log").read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def _wait(self, what: str, cond: Any, watch: tuple[str, ...], timeout: float = START_TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            for n in watch:
                self._check_alive(n)
            # A TLS handshake cut short by a server that is still starting leaves an SSLSocket that
            # warns (ResourceWarning) when collected; that is expected here, so it is collected
            # here, under a filter, and never surfaces later as an unraisable warning.
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ResourceWarning)
                try:
                    if cond():
                        return
                except (OSError, urllib.error.URLError, subprocess.CalledProcessError, ValueError) as e:
                    last = f"{type(e).__name__}: {e}"
                    del e
                    gc.collect()
            time.sleep(0.25)
        tails = "\n".join(f"--- {n}.log\n{self._tail(n)}" for n in watch)
        raise ClusterError(
            f"timed out after {timeout:.0f} s waiting for {what} (last error: {last})\n{tails}"
        )

    # ---- HTTP to the apiserver --------------------------------------------------------------------

    def _ssl(self, user: str = "admin") -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=str(self.pki / "ca.crt"))
        ctx.load_cert_chain(str(self.pki / f"{user}.crt"), str(self.pki / f"{user}.key"))
        return ctx

    def api_get(self, path: str) -> Any:
        with urllib.request.urlopen(self.server + path, context=self._ssl(), timeout=10) as r:
            body = r.read()
        return json.loads(body) if body[:1] in (b"{", b"[") else body.decode()

    @property
    def server(self) -> str:
        return str(self.state["server"])

    def kubectl(self, *args: str, input: str | None = None, check: bool = True) -> str:  # noqa: A002
        cmd = [str(self.bin / "kubectl"), "--kubeconfig", str(self.kubeconfig), *args]
        r = subprocess.run(cmd, input=input, capture_output=True, text=True, timeout=120)
        if check and r.returncode != 0:
            raise ClusterError(f"kubectl {' '.join(args)} failed ({r.returncode}): {r.stderr.strip()}")
        return r.stdout

    def apply(self, *objs: dict[str, Any]) -> None:
        self.kubectl(
            "apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List", "items": list(objs)})
        )
