"""A real Kubernetes test cluster made of local processes: no Docker, no kind, no registry.

Two modes:

* control plane only (``nodes=0``): etcd, kube-apiserver, kube-controller-manager and kube-scheduler
  on loopback, plus ``fake_nodes`` Node objects with ``nvidia.com/gpu`` capacity kept Ready by a
  heartbeat process (fakenode.py). Pods are scheduled and bound but never run. Enough for the
  operator's tests against a real apiserver. Needs no root beyond writing files.
* nodes (``nodes=1`` or ``2``, root only): the same control plane bound to a host address
  (10.244.0.1), and per node a containerd and a real kubelet, plus one kube-proxy and CoreDNS;
  pods are real containers from images imported into containerd (see images.sh).

Every binary comes from build.sh; every flag and trap is in shared/reference/control-plane.md
(sections 0, 0b, 2.2, 6). All state lives in one run directory (``NCRSH_CLUSTER_DIR``, default
/tmp/ncrsh-cluster/<name>); ``state.json`` there records every PID and every host change as it is
made, so ``up`` first undoes whatever a killed earlier run left, and ``down`` undoes it all:
processes (only ours: each is checked to mention the run directory), mounts, iptables rules and
chains, bridges, network namespaces, cgroups and sysctls.

CLI: ``python -m tests.cluster up|down|status`` (see __main__.py).
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import gc
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
SERVICE_CIDR = "10.96.0.0/16"
CLUSTER_CIDR = "10.244.0.0/16"
HOST_BRIDGE = "ncrsh-host"  # no ports: carries the node addresses 10.244.0.(1+i)/32
PAUSE_IMAGE = "registry.k8s.io/pause:3.10"
START_TIMEOUT_S = 120.0
STOP_TIMEOUT_S = 15.0
# Sysctls that the CNI bridge plugin, the kubelet or kube-proxy change; restored at teardown.
SYSCTLS = (
    "net/ipv4/ip_forward",
    "net/ipv4/conf/all/route_localnet",
    "vm/overcommit_memory",
    "vm/panic_on_oom",
    "kernel/panic",
    "kernel/panic_on_oops",
    "kernel/keys/root_maxkeys",
    "kernel/keys/root_maxbytes",
)
# Made by the kubelet (container log symlinks) and CNI (result cache) outside our run directory.
# containerd's shim sockets (/run/containerd/s) and pod netns (/run/netns) likewise. Removed whole at
# teardown when this run created them (then everything in them is ours); /run/netns only when empty.
SHARED_DIRS = ("/var/log/containers", "/var/log/pods", "/var/lib/cni", "/run/containerd", "/run/netns")
# Chains the kubelet makes and `kube-proxy --cleanup` leaves behind (trap list of section 0b).
KUBELET_CHAINS = ("KUBE-FIREWALL", "KUBE-KUBELET-CANARY", "KUBE-IPTABLES-HINT")


class ClusterError(RuntimeError):
    """The cluster could not be started or stopped; the message says which piece and where its log is."""


def _versions() -> dict[str, str]:
    out = {}
    for line in (HERE / "versions.env").read_text().splitlines():
        if "=" in line and not line.lstrip().startswith("#"):
            k, v = line.split("=", 1)
            out[k.strip()] = v.strip()
    return out


def default_bin_dir() -> Path:
    """``NCRSH_CLUSTER_BIN`` if set, else where build.sh puts (or would put) the binaries."""
    env = os.environ.get("NCRSH_CLUSTER_BIN")
    if env:
        return Path(env)
    out = subprocess.run(
        ["bash", str(HERE / "build.sh"), "--print-bin-dir"], check=True, capture_output=True, text=True
    )
    return Path(out.stdout.strip())


def binaries_missing(bin_dir: Path, nodes: int = 0) -> list[str]:
    names = ["etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubectl"]
    if nodes:
        names += ["kubelet", "kube-proxy", "coredns"]
    return [n for n in names if not os.access(bin_dir / n, os.X_OK)]


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def port_is_free(host: str, port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def _run(cmd: list[str], check: bool = True, **kw: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, check=check, capture_output=True, text=True, **kw)


# --------------------------------------------------------------------------------------------------
# PKI (openssl, EC P-256) and kubeconfigs


def _openssl_cert(
    pki: Path, name: str, subject: str, *, sans: Sequence[str] = (), server: bool = False
) -> None:
    """A key and a CA-signed leaf certificate ``pki/name.{key,crt}``."""
    ext = ["basicConstraints=critical,CA:FALSE", "keyUsage=critical,digitalSignature,keyEncipherment"]
    ext.append("extendedKeyUsage=" + ("serverAuth,clientAuth" if server else "clientAuth"))
    if sans:
        ext.append("subjectAltName=" + ",".join(sans))
    (pki / f"{name}.ext").write_text("\n".join(ext) + "\n")
    _run(
        [
            "openssl",
            "req",
            "-new",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            str(pki / f"{name}.key"),
            "-out",
            str(pki / f"{name}.csr"),
            "-subj",
            subject,
        ]
    )
    _run(
        [
            "openssl",
            "x509",
            "-req",
            "-in",
            str(pki / f"{name}.csr"),
            "-CA",
            str(pki / "ca.crt"),
            "-CAkey",
            str(pki / "ca.key"),
            "-CAcreateserial",
            "-days",
            "30",
            "-sha256",
            "-extfile",
            str(pki / f"{name}.ext"),
            "-out",
            str(pki / f"{name}.crt"),
        ]
    )


def write_pki(pki: Path, api_ips: list[str], node_ips: list[str]) -> None:
    pki.mkdir(parents=True, exist_ok=True)
    _run(
        [
            "openssl",
            "req",
            "-x509",
            "-new",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            str(pki / "ca.key"),
            "-out",
            str(pki / "ca.crt"),
            "-days",
            "30",
            "-subj",
            "/CN=ncrsh-test-cluster-ca",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign,digitalSignature",
        ]
    )
    sans = [
        "DNS:localhost",
        "DNS:kubernetes",
        "DNS:kubernetes.default",
        "DNS:kubernetes.default.svc",
        "DNS:kubernetes.default.svc.cluster.local",
        "IP:127.0.0.1",
        "IP:10.96.0.1",
    ]
    sans += [f"IP:{ip}" for ip in api_ips if ip != "127.0.0.1"]
    _run(["openssl", "ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", str(pki / "sa.key")])
    _run(["openssl", "ec", "-in", str(pki / "sa.key"), "-pubout", "-out", str(pki / "sa.pub")])
    _openssl_cert(pki, "apiserver", "/CN=kube-apiserver", sans=sans, server=True)
    _openssl_cert(pki, "admin", "/O=system:masters/CN=admin")
    # The apiserver's client identity towards kubelets (logs, exec): system:masters is simplest.
    _openssl_cert(pki, "apiserver-kubelet-client", "/O=system:masters/CN=kube-apiserver-kubelet-client")
    _openssl_cert(pki, "kcm", "/CN=system:kube-controller-manager")
    _openssl_cert(pki, "scheduler", "/CN=system:kube-scheduler")
    _openssl_cert(pki, "kube-proxy", "/CN=system:kube-proxy")
    _openssl_cert(pki, "coredns", "/CN=coredns")
    for i, ip in enumerate(node_ips):
        _openssl_cert(pki, f"node{i}", f"/O=system:nodes/CN=system:node:node{i}")
        _openssl_cert(pki, f"node{i}-serving", f"/CN=node{i}", sans=[f"IP:{ip}", f"DNS:node{i}"], server=True)


def write_kubeconfig(path: Path, server: str, pki: Path, user: str) -> Path:
    """A kubeconfig in JSON (a YAML subset, which every client reads) with embedded credentials."""

    def b64(name: str) -> str:
        return base64.b64encode((pki / name).read_bytes()).decode()

    cfg = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {"name": "ncrsh", "cluster": {"server": server, "certificate-authority-data": b64("ca.crt")}}
        ],
        "users": [
            {
                "name": user,
                "user": {
                    "client-certificate-data": b64(f"{user}.crt"),
                    "client-key-data": b64(f"{user}.key"),
                },
            }
        ],
        "contexts": [{"name": "ncrsh", "context": {"cluster": "ncrsh", "user": user}}],
        "current-context": "ncrsh",
    }
    path.write_text(json.dumps(cfg, indent=1) + "\n")
    path.chmod(0o600)
    return path


def kubectl(
    kubeconfig: Path, *args: str, stdin: str | None = None, check: bool = True, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """Our kubectl against any cluster (a kubeconfig path); CalledProcessError when `check` fails."""
    return subprocess.run(
        [str(default_bin_dir() / "kubectl"), *args],
        input=stdin,
        capture_output=True,
        text=True,
        check=check,
        env={**os.environ, "KUBECONFIG": str(kubeconfig)},
        timeout=timeout,
    )


def poll(what: str, cond: Callable[[], Any], timeout: float = 60.0, interval: float = 0.5) -> Any:
    """cond()'s first truthy value, checked every `interval` seconds; AssertionError naming `what`
    once `timeout` seconds have passed (cond is asked once more at the deadline). For tests."""
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


# --------------------------------------------------------------------------------------------------
# Processes


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _ours(pid: int, marker: str) -> bool:
    """Only a process whose command line names our run directory is ours (PIDs get reused)."""
    return _alive(pid) and marker in _cmdline(pid)


def _pids_mentioning(marker: str) -> list[int]:
    me = os.getpid()
    return [
        int(p.name)
        for p in Path("/proc").iterdir()
        if p.name.isdigit() and int(p.name) != me and _ours(int(p.name), marker)
    ]


def _stop_pids(pids: list[int], marker: str, timeout: float = STOP_TIMEOUT_S) -> None:
    """SIGTERM each of our process groups, then SIGKILL what is left after ``timeout``."""
    pids = [p for p in pids if _ours(p, marker)]
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                # A component started by us leads its own group (start_new_session), so this also
                # reaches its children; anything else (a shim) gets the signal alone.
                if os.getpgid(pid) == pid:
                    os.killpg(pid, sig)
                else:
                    os.kill(pid, sig)
        deadline = time.monotonic() + (timeout if sig == signal.SIGTERM else 5.0)
        while time.monotonic() < deadline and any(_alive(p) for p in pids):
            for p in pids:  # reap our own children so they do not linger as zombies
                with contextlib.suppress(ChildProcessError, OSError):
                    os.waitpid(p, os.WNOHANG)
            time.sleep(0.1)
        pids = [p for p in pids if _alive(p)]
        if not pids:
            return


# --------------------------------------------------------------------------------------------------
# Host changes (node mode): each recorded in state before it is made, each undone idempotently


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return _run(["ip", *args], check=check)


def _link_exists(name: str) -> bool:
    return _ip("link", "show", name, check=False).returncode == 0


def _read_sysctl(key: str) -> str | None:
    try:
        return Path("/proc/sys", key).read_text().strip()
    except OSError:
        return None


def _write_sysctl(key: str, value: str) -> None:
    with contextlib.suppress(OSError):
        Path("/proc/sys", key).write_text(value + "\n")


def _iptables_rule(tool: str, table: str, chain: str, rule: list[str], add: bool) -> None:
    exists = _run([tool, "-w", "-t", table, "-C", chain, *rule], check=False).returncode == 0
    if add and not exists:
        _run([tool, "-w", "-t", table, "-I", chain, "1", *rule])
    elif not add:
        while _run([tool, "-w", "-t", table, "-D", chain, *rule], check=False).returncode == 0:
            pass


def _delete_chain(tool: str, table: str, chain: str) -> None:
    """Remove every jump to ``chain`` in ``table``, then flush and delete it."""
    dump = _run([tool + "-save", "-t", table], check=False).stdout
    if f":{chain} " not in dump:
        return
    for line in dump.splitlines():
        parts = line.split()
        if line.startswith("-A ") and "-j" in parts and parts[parts.index("-j") + 1] == chain:
            _run([tool, "-w", "-t", table, "-D", *parts[1:]], check=False)
    _run([tool, "-w", "-t", table, "-F", chain], check=False)
    _run([tool, "-w", "-t", table, "-X", chain], check=False)


def _cgroup_hierarchies() -> list[Path]:
    base = Path("/sys/fs/cgroup")
    if (base / "cgroup.controllers").exists():  # cgroup v2 unified
        return [base]
    return sorted(p for p in base.iterdir() if p.is_dir() and not p.is_symlink())


def _make_cgroup(name: str) -> None:
    for h in _cgroup_hierarchies():
        d = h / name
        d.mkdir(exist_ok=True)
        if h.name == "cpuset":
            for f in ("cpuset.cpus", "cpuset.mems"):
                if not (d / f).read_text().strip():
                    (d / f).write_text((h / f).read_text())


def _remove_cgroup(name: str) -> None:
    for h in _cgroup_hierarchies():
        top = h / name
        if not top.is_dir():
            continue
        dirs = sorted((p for p in top.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True)
        for d in [*dirs, top]:
            with contextlib.suppress(OSError):
                d.rmdir()


def _mounts_under(root: Path) -> list[str]:
    out = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        mnt = line.split()[4].replace("\\040", " ")
        if mnt == str(root) or mnt.startswith(str(root) + "/"):
            out.append(mnt)
    return sorted(set(out), key=lambda m: m.count("/"), reverse=True)


def _unmount_under(root: Path) -> None:
    for _ in range(5):
        mounts = _mounts_under(root)
        if not mounts:
            return
        for m in mounts:
            if _run(["umount", m], check=False).returncode != 0:
                _run(["umount", "-l", m], check=False)


# --------------------------------------------------------------------------------------------------


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


class Cluster:
    """One test cluster. ``up()`` then ``down()``; ``kubeconfig`` is the admin kubeconfig."""

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

    # ---- up ---------------------------------------------------------------------------------------

    def up(self) -> Cluster:
        spec = self.spec
        if spec.nodes not in (0, 1, 2):
            raise ClusterError("nodes must be 0, 1 or 2")
        if spec.nodes and os.geteuid() != 0:
            raise ClusterError("node mode needs root (containerd, kubelet, iptables, bridges)")
        missing = binaries_missing(self.bin, spec.nodes)
        if missing:
            raise ClusterError(
                f"binaries missing in {self.bin}: {', '.join(missing)} (run tests/cluster/build.sh)"
            )
        t0 = time.monotonic()
        self.cleanup_leftovers()
        t_clean = self._t_start = time.monotonic()
        self.timings["leftovers_s"] = t_clean - t0
        for d in (self.root, self.logs):
            d.mkdir(parents=True, exist_ok=True)
        self.state = {"spec": {"nodes": spec.nodes, "fake_nodes": spec.fake_nodes}, "started": time.time()}
        self._save()
        try:
            if spec.nodes:
                self._host_network()
            api_ip = "10.244.0.1" if spec.nodes else "127.0.0.1"
            node_ips = [f"10.244.0.{1 + i}" for i in range(spec.nodes)]
            write_pki(self.pki, [api_ip], node_ips)
            ports = {k: free_port() for k in ("etcd", "etcd_peer", "kcm", "scheduler")}
            ports["apiserver"] = free_port(api_ip)
            for k, p in ports.items():
                host = api_ip if k == "apiserver" else "127.0.0.1"
                if not port_is_free(host, p):
                    raise ClusterError(f"port {host}:{p} for {k} is taken")
            self.state["ports"] = ports
            self.state["server"] = f"https://{api_ip}:{ports['apiserver']}"
            self._save()
            self._start_control_plane(api_ip, ports, bool(spec.nodes))
            self.timings["control_plane_s"] = time.monotonic() - t_clean
            if spec.nodes:
                self._start_nodes(api_ip, node_ips)
                self.timings["nodes_ready_s"] = time.monotonic() - t_clean
            for i in range(spec.fake_nodes if not spec.nodes else 0):
                self._start_fake_node(f"fake-gpu-{i}")
            if spec.fake_nodes and not spec.nodes:
                self.timings["fake_nodes_ready_s"] = time.monotonic() - t_clean
        except BaseException:
            self.down()
            raise
        return self

    def _start_control_plane(self, api_ip: str, ports: dict[str, int], node_mode: bool) -> None:
        b, pki, d = self.bin, self.pki, self.root
        etcd_url = f"http://127.0.0.1:{ports['etcd']}"
        peer_url = f"http://127.0.0.1:{ports['etcd_peer']}"
        self._spawn(
            "etcd",
            [
                str(b / "etcd"),
                "--name=node0",
                f"--data-dir={d}/etcd",
                f"--listen-client-urls={etcd_url}",
                f"--advertise-client-urls={etcd_url}",
                f"--listen-peer-urls={peer_url}",
                f"--initial-advertise-peer-urls={peer_url}",
                f"--initial-cluster=node0={peer_url}",
                "--unsafe-no-fsync=true",
                "--auto-compaction-retention=1",
                "--log-level=warn",
                "--listen-metrics-urls=",
            ],
        )

        def etcd_healthy() -> bool:
            with urllib.request.urlopen(etcd_url + "/health", timeout=2) as r:
                return bool(json.loads(r.read()).get("health") == "true")

        self._wait("etcd /health", etcd_healthy, ("etcd",))
        # Loopback: the endpoint reconciler refuses 127.0.0.0/8 (trap T5), so it is off; node mode
        # advertises the host bridge address and keeps the default reconciler.
        addr = [f"--advertise-address={api_ip}"] if node_mode else ["--endpoint-reconciler-type=none"]
        self._spawn(
            "kube-apiserver",
            [
                str(b / "kube-apiserver"),
                f"--etcd-servers={etcd_url}",
                f"--bind-address={api_ip}",
                f"--secure-port={ports['apiserver']}",
                *addr,
                f"--tls-cert-file={pki}/apiserver.crt",
                f"--tls-private-key-file={pki}/apiserver.key",
                f"--client-ca-file={pki}/ca.crt",
                "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
                f"--service-account-key-file={pki}/sa.pub",
                f"--service-account-signing-key-file={pki}/sa.key",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
                "--authorization-mode=Node,RBAC",
                "--enable-admission-plugins=NodeRestriction",
                "--allow-privileged=true",
                "--enable-priority-and-fairness=false",
                "--profiling=false",
                f"--kubelet-client-certificate={pki}/apiserver-kubelet-client.crt",
                f"--kubelet-client-key={pki}/apiserver-kubelet-client.key",
                f"--kubelet-certificate-authority={pki}/ca.crt",
                "--kubelet-preferred-address-types=InternalIP",
                "--v=1",
            ],
        )
        server = self.state["server"]
        for user in ("admin", "kcm", "scheduler", "kube-proxy", "coredns"):
            write_kubeconfig(self.root / f"{user}.kubeconfig", server, pki, user)
        self._wait(
            "kube-apiserver /readyz", lambda: self.api_get("/readyz") == "ok", ("etcd", "kube-apiserver")
        )
        self.timings["apiserver_ready_s"] = time.monotonic() - self._t_start
        kcm, sch = self.root / "kcm.kubeconfig", self.root / "scheduler.kubeconfig"
        self._spawn(
            "kube-controller-manager",
            [
                str(b / "kube-controller-manager"),
                f"--kubeconfig={kcm}",
                f"--authentication-kubeconfig={kcm}",
                f"--authorization-kubeconfig={kcm}",
                "--bind-address=127.0.0.1",
                f"--secure-port={ports['kcm']}",
                "--leader-elect=false",
                "--use-service-account-credentials=true",
                f"--service-account-private-key-file={pki}/sa.key",
                f"--root-ca-file={pki}/ca.crt",
                "--controllers=*",
                # A node that stops answering is NotReady (and its pods due for eviction) after 20 s, not
                # the default 50 s: the kubelets and fake nodes heartbeat every 5 s.
                "--node-monitor-grace-period=20s",
                f"--cluster-signing-cert-file={pki}/ca.crt",
                f"--cluster-signing-key-file={pki}/ca.key",
                "--kube-api-qps=100",
                "--kube-api-burst=200",
                "--profiling=false",
                "--v=1",
            ],
        )
        self._spawn(
            "kube-scheduler",
            [
                str(b / "kube-scheduler"),
                f"--kubeconfig={sch}",
                f"--authentication-kubeconfig={sch}",
                f"--authorization-kubeconfig={sch}",
                "--bind-address=127.0.0.1",
                f"--secure-port={ports['scheduler']}",
                "--leader-elect=false",
                "--profiling=false",
                "--v=1",
            ],
        )
        unverified = ssl._create_unverified_context()  # self-signed serving certs, on loopback

        def healthy(port: int) -> bool:
            with urllib.request.urlopen(
                f"https://127.0.0.1:{port}/healthz", context=unverified, timeout=2
            ) as r:
                return bool(r.read() == b"ok")

        watch = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler")
        self._wait("kube-controller-manager /healthz", lambda: healthy(ports["kcm"]), watch)
        self._wait("kube-scheduler /healthz", lambda: healthy(ports["scheduler"]), watch)

        def default_sa() -> bool:
            try:
                self.api_get("/api/v1/namespaces/default/serviceaccounts/default")
            except urllib.error.HTTPError as e:
                if e.code == 404:
                    return False
                raise
            return True

        self._wait("the default ServiceAccount (KCM working)", default_sa, watch)
        self.kubectl("config", "set-context", "--current", "--namespace=default")

    # ---- fake nodes -------------------------------------------------------------------------------

    def node_capacity(self) -> dict[str, str]:
        return {
            "cpu": "8",
            "memory": "32Gi",
            "pods": "110",
            "ephemeral-storage": "100Gi",
            "nvidia.com/gpu": str(self.spec.gpus_per_node),
        }

    def _start_fake_node(self, name: str) -> None:
        cap = self.node_capacity()
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        node = {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": name,
                "labels": {
                    "kubernetes.io/hostname": name,
                    "kubernetes.io/os": "linux",
                    "kubernetes.io/arch": "amd64",
                    "node.ncrsh.dev/fake": "true",
                    "nvidia.com/gpu.present": "true",
                },
            },
            "status": {
                "capacity": cap,
                "allocatable": cap,
                "conditions": [
                    {
                        "type": "Ready",
                        "status": "True",
                        "reason": "KubeletReady",
                        "message": "fake node",
                        "lastHeartbeatTime": now,
                        "lastTransitionTime": now,
                    }
                ],
                "addresses": [
                    {"type": "InternalIP", "address": "127.0.0.1"},
                    {"type": "Hostname", "address": name},
                ],
                "nodeInfo": {
                    "kubeletVersion": _versions()["K8S_VERSION"],
                    "containerRuntimeVersion": "fake://0",
                    "operatingSystem": "linux",
                    "architecture": "amd64",
                    "osImage": "fake",
                    "kernelVersion": "",
                    "kubeProxyVersion": "",
                    "machineID": "",
                    "systemUUID": "",
                    "bootID": "",
                },
            },
        }
        self.kubectl("create", "-f", "-", input=json.dumps(node))
        # Status on create is not guaranteed to be kept: write capacity through the status subresource.
        self.kubectl(
            "patch",
            "node",
            name,
            "--subresource=status",
            "--type=merge",
            "-p",
            json.dumps({"status": {"capacity": cap, "allocatable": cap}}),
        )
        self._spawn(
            f"fakenode-{name}",
            [
                sys.executable,
                str(HERE / "fakenode.py"),
                "--server",
                self.server,
                "--ca",
                str(self.pki / "ca.crt"),
                "--cert",
                str(self.pki / "admin.crt"),
                "--key",
                str(self.pki / "admin.key"),
                "--node",
                name,
            ],
        )

        def schedulable() -> bool:  # KCM lifts the not-ready taint once it has seen Ready=True (T6)
            n = self.api_get(f"/api/v1/nodes/{name}")
            return (
                not n["spec"].get("taints")
                and n["status"]["allocatable"].get("nvidia.com/gpu") == cap["nvidia.com/gpu"]
            )

        self._wait(
            f"fake node {name} schedulable", schedulable, ("kube-controller-manager", f"fakenode-{name}")
        )

    # ---- real nodes ---------------------------------------------------------------------------------

    def _host_network(self) -> None:
        """Guards first (nothing from a pod may leave the machine), then the node address bridge."""
        orig = {k: _read_sysctl(k) for k in SYSCTLS}
        self.state["sysctls"] = {k: v for k, v in orig.items() if v is not None}
        self._save()
        # Directories the kubelet and the CNI plugins make outside the run directory; removed at
        # teardown when we made them and they are empty again.
        for d in SHARED_DIRS:
            if not Path(d).exists():
                self._record("created_dirs", d)
        # mangle FORWARD comes after DNAT and before filter FORWARD, where kube-proxy puts its own
        # jumps above anything of ours: this guard stays first whatever kube-proxy inserts.
        self._record(
            "rules",
            ["iptables", "mangle", "FORWARD", "-s", CLUSTER_CIDR, "!", "-d", CLUSTER_CIDR, "-j", "DROP"],
        )
        for tool in ("iptables",):
            self._record(
                "rules",
                [tool, "filter", "FORWARD", "-s", CLUSTER_CIDR, "!", "-d", CLUSTER_CIDR, "-j", "DROP"],
            )
            # A ClusterIP that kube-proxy does not (yet) serve would follow the default route off the
            # machine (T7); after kube-proxy's DNAT the destination is a pod, which this never sees.
            self._record("rules", [tool, "filter", "OUTPUT", "-d", SERVICE_CIDR, "-j", "REJECT"])
            self._record("rules", [tool, "filter", "FORWARD", "-d", SERVICE_CIDR, "-j", "REJECT"])
        for tool, table, chain, *rule in self.state["rules"]:
            _iptables_rule(tool, table, chain, rule, add=True)
        self._record("links", HOST_BRIDGE)
        if not _link_exists(HOST_BRIDGE):
            _ip("link", "add", HOST_BRIDGE, "type", "bridge")
        for i in range(self.spec.nodes):
            _ip("addr", "replace", f"10.244.0.{1 + i}/32", "dev", HOST_BRIDGE)
        _ip("link", "set", HOST_BRIDGE, "up")

    def _start_nodes(self, api_ip: str, node_ips: list[str]) -> None:
        from . import nodes  # node mode only: containerd, kubelet, kube-proxy, CoreDNS

        nodes.start(self, api_ip, node_ips)

    # ---- down ---------------------------------------------------------------------------------------

    def down(self) -> None:
        """Stop everything this run directory started and undo every host change it recorded."""
        if not self.state:
            self.state = self._load()
        t0 = time.monotonic()
        if self.state.get("spec", {}).get("nodes"):
            from . import nodes

            nodes.drain(self)
        procs: dict[str, int] = dict(self.state.get("procs", {}))
        # Order: nothing that recreates pods first; the kubelets before containerd; etcd last.
        order = ["kube-controller-manager", "kube-scheduler"]
        order += sorted(n for n in procs if n.startswith("fakenode-"))
        order += sorted(n for n in procs if n.startswith("kubelet-"))
        order += ["kube-proxy", "coredns"]
        order += sorted(n for n in procs if n.startswith("containerd-"))
        order += ["kube-apiserver", "etcd"]
        order += [n for n in procs if n not in order]
        for n in order:
            if n in procs:
                _stop_pids([procs[n]], self.marker)
        for n, p in list(self._popen.items()):
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.wait(timeout=1)
            self._popen.pop(n)
        # Anything else naming our run directory: containerd shims (they outlive containerd by
        # design) and their containers, a kubectl, a component of a run whose state was lost.
        _stop_pids(_pids_mentioning(self.marker), self.marker, timeout=5.0)
        if self.state.get("spec", {}).get("nodes"):
            from . import nodes

            nodes.kill_containers(self)
        self._undo_host_changes()
        if self.root.exists():
            _unmount_under(self.root)
            if not _mounts_under(self.root):
                shutil.rmtree(self.root, ignore_errors=True)
        self.timings["teardown_s"] = time.monotonic() - t0
        self.state = {}

    def _undo_host_changes(self) -> None:
        st = self.state
        if st.get("spec", {}).get("nodes") and "kube-proxy" in st.get("procs", {}):
            with contextlib.suppress(OSError, subprocess.SubprocessError):
                _run([str(self.bin / "kube-proxy"), "--cleanup", "--v=0"], check=False, timeout=60)
        if st.get("kubelet_chains"):
            for tool in ("iptables", "ip6tables"):
                for table in ("filter", "nat", "mangle"):
                    for chain in KUBELET_CHAINS:
                        _delete_chain(tool, table, chain)
        for tool, table, chain, *rule in st.get("rules", []):
            _iptables_rule(tool, table, chain, rule, add=False)
        for link in st.get("links", []):
            if _link_exists(link):
                _ip("link", "del", link, check=False)
        for ns in st.get("netns", []):
            _ip("netns", "del", ns, check=False)
        logs = Path("/var/log/containers")
        if logs.is_dir():  # the kubelet's symlinks into our pod logs, when a pod was force-deleted
            for link in logs.iterdir():
                if link.is_symlink() and os.readlink(link).startswith(self.marker):
                    link.unlink()
        for d in st.get("created_dirs", []):
            if d == "/run/netns":
                with contextlib.suppress(OSError):
                    Path(d).rmdir()
            else:
                shutil.rmtree(d, ignore_errors=True)
        for cg in st.get("cgroups", []):
            _remove_cgroup(cg)
        for key, value in st.get("sysctls", {}).items():
            if _read_sysctl(key) != value:
                _write_sysctl(key, value)

    def cleanup_leftovers(self) -> None:
        """Undo what a killed earlier run with the same run directory left behind."""
        if self.state_file.exists() or self.root.exists():
            self.state = self._load()
            self.down()

    # ---- status -------------------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        st = self._load()
        procs = {n: {"pid": p, "alive": _ours(p, self.marker)} for n, p in st.get("procs", {}).items()}
        out: dict[str, Any] = {"run_dir": str(self.root), "kubeconfig": str(self.kubeconfig), "procs": procs}
        if st.get("server"):
            self.state = st
            try:
                out["readyz"] = self.api_get("/readyz")
            except (OSError, urllib.error.URLError) as e:
                out["readyz"] = f"unreachable: {e}"
        return out

    def leftovers(self, ports: dict[str, int] | None = None) -> dict[str, list[str]]:
        """What of this cluster is still on the machine (empty lists after a clean ``down``).

        ``ports``: the ports of the run (``cluster.state["ports"]`` read before ``down``)."""
        st = self.state or self._load()
        items = list((ports if ports is not None else st.get("ports", {})).items())
        saved = _run(["iptables-save"], check=False).stdout if shutil.which("iptables-save") else ""
        return {
            "processes": [f"{p} {_cmdline(p)[:120]}" for p in _pids_mentioning(self.marker)],
            "mounts": _mounts_under(self.root),
            "ports": [f"{k}:{p}" for k, p in items if not port_is_free("127.0.0.1", p)],
            "links": [x for x in [HOST_BRIDGE, "ncrsh-cni0", "ncrsh-cni1"] if _link_exists(x)],
            "chains": [
                c for c in (*KUBELET_CHAINS, "KUBE-SERVICES", "KUBE-POSTROUTING") if f":{c} " in saved
            ],
            "run_dir": [str(self.root)] if self.root.exists() else [],
            "cgroups": [
                str(h / f"ncrsh-node{i}")
                for h in _cgroup_hierarchies()
                for i in range(2)
                if (h / f"ncrsh-node{i}").exists()
            ],
            "netns": [n.name for n in Path("/run/netns").glob("cni-*")]
            if Path("/run/netns").is_dir()
            else [],
            "log_links": [
                str(p)
                for p in Path("/var/log/containers").glob("*")
                if p.is_symlink() and os.readlink(p).startswith(self.marker)
            ],
            "guard_rules": [c for c in ("FORWARD -s 10.244.0.0/16", "OUTPUT -d 10.96.0.0/16") if c in saved],
        }

    @contextlib.contextmanager
    def running(self) -> Iterator[Cluster]:
        self.up()
        try:
            yield self
        finally:
            self.down()
