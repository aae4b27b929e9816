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

This module is the lifecycle (``Cluster.up``, ``down``, ``status``, ``leftovers``) and the public
API in one import (``Cluster``, ``ClusterSpec``, ``ClusterError``, ``kubectl``, ``poll``, ...). The
pieces, each importable on its own and none importing this module:

* binaries.py: where build.sh's binaries are (one lookup for every test), ``kubectl``;
* processes.py: running commands, free ports, finding and stopping our processes, ``poll``;
* rundir.py: ``ClusterSpec``, ``ClusterError`` and ``RunDir`` (paths, state.json, spawned
  processes, apiserver access), the base of ``Cluster``;
* pki.py: certificates, keys and kubeconfigs;
* controlplane.py: etcd, kube-apiserver, kube-controller-manager, kube-scheduler;
* fakenodes.py: fake GPU nodes (control-plane mode), kept Ready by fakenode.py;
* hostnet.py: host changes of node mode (iptables guards, bridge, sysctls, cgroups, mounts) and
  their undoing;
* nodes.py (with nodeconfig.py and imagetars.py): containerd, kubelets, kube-proxy and CoreDNS.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import time
import urllib.error
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from . import controlplane, fakenodes, hostnet, nodes
from .binaries import binaries_missing, default_bin_dir, kubectl
from .hostnet import HOST_BRIDGE, KUBELET_CHAINS, cgroup_hierarchies, link_exists, mounts_under, unmount_under
from .pki import write_pki
from .processes import cmdline, free_port, ours, pids_mentioning, poll, port_is_free, run, stop_pids
from .rundir import ClusterError, ClusterSpec, RunDir

__all__ = [
    "Cluster",
    "ClusterError",
    "ClusterSpec",
    "binaries_missing",
    "default_bin_dir",
    "free_port",
    "kubectl",
    "poll",
]


class Cluster(RunDir):
    """One test cluster. ``up()`` then ``down()``; ``kubeconfig`` is the admin kubeconfig."""

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
                hostnet.setup(self)
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
            controlplane.start(self, api_ip, ports, bool(spec.nodes))
            self.timings["control_plane_s"] = time.monotonic() - t_clean
            if spec.nodes:
                nodes.start(self, api_ip, node_ips)
                self.timings["nodes_ready_s"] = time.monotonic() - t_clean
            for i in range(spec.fake_nodes if not spec.nodes else 0):
                fakenodes.start(self, f"fake-gpu-{i}")
            if spec.fake_nodes and not spec.nodes:
                self.timings["fake_nodes_ready_s"] = time.monotonic() - t_clean
        except BaseException:
            self.down()
            raise
        return self

    # ---- down ---------------------------------------------------------------------------------------

    def down(self) -> None:
        """Stop everything this run directory started and undo every host change it recorded."""
        if not self.state:
            self.state = self._load()
        t0 = time.monotonic()
        if self.state.get("spec", {}).get("nodes"):
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
                stop_pids([procs[n]], self.marker)
        for n, p in list(self._popen.items()):
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.wait(timeout=1)
            self._popen.pop(n)
        # Anything else naming our run directory: containerd shims (they outlive containerd by
        # design) and their containers, a kubectl, a component of a run whose state was lost.
        stop_pids(pids_mentioning(self.marker), self.marker, timeout=5.0)
        if self.state.get("spec", {}).get("nodes"):
            nodes.kill_containers(self)
        hostnet.undo(self)
        if self.root.exists():
            unmount_under(self.root)
            if not mounts_under(self.root):
                shutil.rmtree(self.root, ignore_errors=True)
        self.timings["teardown_s"] = time.monotonic() - t0
        self.state = {}

    def cleanup_leftovers(self) -> None:
        """Undo what a killed earlier run with the same run directory left behind."""
        if self.state_file.exists() or self.root.exists():
            self.state = self._load()
            self.down()

    # ---- status -------------------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        st = self._load()
        procs = {n: {"pid": p, "alive": ours(p, self.marker)} for n, p in st.get("procs", {}).items()}
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
        saved = run(["iptables-save"], check=False).stdout if shutil.which("iptables-save") else ""
        return {
            "processes": [f"{p} {cmdline(p)[:120]}" for p in pids_mentioning(self.marker)],
            "mounts": mounts_under(self.root),
            "ports": [f"{k}:{p}" for k, p in items if not port_is_free("127.0.0.1", p)],
            "links": [x for x in [HOST_BRIDGE, "ncrsh-cni0", "ncrsh-cni1"] if link_exists(x)],
            "chains": [
                c for c in (*KUBELET_CHAINS, "KUBE-SERVICES", "KUBE-POSTROUTING") if f":{c} " in saved
            ],
            "run_dir": [str(self.root)] if self.root.exists() else [],
            "cgroups": [
                str(h / f"ncrsh-node{i}")
                for h in cgroup_hierarchies()
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
