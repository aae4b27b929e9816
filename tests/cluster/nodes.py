"""Node mode of the test cluster: per node a containerd and a real kubelet; one kube-proxy and CoreDNS.

Follows shared/reference/control-plane.md section 0b. Node i has the address 10.244.0.(1+i)/32 on
the host bridge ``ncrsh-host`` (made by hostnet.setup, with the FORWARD guard before any pod
starts), pod subnet 10.244.(1+i).0/24 on its own CNI bridge ``ncrsh-cni<i>``, its own containerd
(root, state, socket and runc root under the run directory) and cgroup root ``/ncrsh-node<i>``.
Images come from the tars of images.sh (imagetars.py), imported into each containerd's ``k8s.io``
namespace; the configuration files are built by nodeconfig.py.
One node-mode cluster per machine (kubelet chains, the bridges and port 53 on 10.244.0.1 are shared).
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

from .hostnet import CLUSTER_CIDR, make_cgroup
from .imagetars import image_tars
from .nodeconfig import COREDNS_RBAC, cni_config, containerd_config, corefile, kubelet_config
from .pki import write_kubeconfig
from .processes import free_port, ours, pids_mentioning, run, stop_pids
from .rundir import ClusterError, RunDir

DEVICE_PLUGIN_SOCKET = Path("/var/lib/kubelet/device-plugins/kubelet.sock")


def _ctr(sock: Path, *args: str, timeout: float = 600) -> str:
    return run(["ctr", "--address", str(sock), "-n", "k8s.io", *args], timeout=timeout).stdout


def _drop_unpacked_layers(sock: Path) -> None:
    """Delete the layer blobs of the imported images once they are unpacked into snapshots, as the
    CRI's `discard_unpacked_layers` does for pulls: a container needs only the manifest, the config
    and the snapshots, and the worker image's layers would otherwise hold 6 GB more per node."""
    listing = _ctr(sock, "content", "ls")
    for digest in sorted(
        set(re.findall(r"containerd\.io/gc\.ref\.content\.l\.\d+=(sha256:[0-9a-f]{64})", listing))
    ):
        _ctr(sock, "content", "rm", digest)


def _wait(cluster: RunDir, what: str, cond: Any, watch: tuple[str, ...]) -> None:
    cluster._wait(what, cond, watch)


def start(cluster: RunDir, api_ip: str, node_ips: list[str]) -> None:
    cluster.state["api_ip"] = api_ip
    cluster.apply(*COREDNS_RBAC)
    tars = [*image_tars(), *cluster.spec.image_tars]
    if not any("pause" in t.name for t in tars):
        raise ClusterError("no pause image tar: run tests/cluster/images.sh")
    root, b = cluster.root, cluster.bin
    socks: list[Path] = []
    for i in range(len(node_ips)):
        nd = root / f"node{i}"
        for sub in ("cni", "containerd", "kubelet", "pod-logs", "volume-plugins", "runc"):
            (nd / sub).mkdir(parents=True, exist_ok=True)
        sock = nd / "containerd.sock"
        socks.append(sock)
        (nd / "containerd.toml").write_text(containerd_config(nd, sock))
        (nd / "cni" / "10-ncrsh.conflist").write_text(json.dumps(cni_config(i, nd), indent=1))
        (nd / "resolv.conf").write_text(f"nameserver {api_ip}\n")
        cluster._record("links", f"ncrsh-cni{i}")
        cluster._record("cgroups", f"ncrsh-node{i}")
        make_cgroup(f"ncrsh-node{i}")
        cluster._spawn(f"containerd-{i}", ["containerd", "--config", str(nd / "containerd.toml")])
        _wait(
            cluster,
            f"containerd of node{i}",
            lambda s=sock: s.exists() and bool(_ctr(s, "version", timeout=10)),
            (f"containerd-{i}",),
        )

    def import_images(i: int) -> None:
        t = time.monotonic()
        for tar in tars:
            _ctr(socks[i], "images", "import", str(tar))
        _drop_unpacked_layers(socks[i])
        cluster.timings[f"image_import_node{i}_s"] = time.monotonic() - t

    # The nodes import side by side: hashing a multi-GB tar is CPU-bound, one core per node.
    with concurrent.futures.ThreadPoolExecutor(len(node_ips)) as pool:
        list(pool.map(import_images, range(len(node_ips))))
    for i, ip in enumerate(node_ips):
        nd, sock = root / f"node{i}", socks[i]
        write_kubeconfig(root / f"node{i}.kubeconfig", cluster.server, cluster.pki, f"node{i}")
        ports = {"port": free_port(ip), "healthz": free_port()}
        (nd / "kubelet.json").write_text(
            json.dumps(kubelet_config(cluster, i, ip, nd, sock, ports), indent=1)
        )
        cluster.state["kubelet_chains"] = True
        cluster._save()
        spawned = time.time()
        cluster._spawn(
            f"kubelet-{i}",
            [
                str(b / "kubelet"),
                f"--config={nd}/kubelet.json",
                f"--kubeconfig={root}/node{i}.kubeconfig",
                f"--hostname-override=node{i}",
                f"--node-ip={ip}",
                f"--root-dir={nd}/kubelet",
                f"--cert-dir={nd}/kubelet-pki",
                "--v=1",
            ],
        )
        if i + 1 < len(node_ips):
            # The device-plugin directory is machine-wide (hard-coded in the kubelet): each kubelet
            # empties it, then binds its socket there. The next kubelet starts only once this one has
            # bound, or the two race and one fails with EADDRINUSE.
            _wait(
                cluster,
                f"kubelet-{i}'s device-plugin socket",
                lambda t=spawned: (
                    DEVICE_PLUGIN_SOCKET.exists() and DEVICE_PLUGIN_SOCKET.stat().st_mtime >= t - 1
                ),
                (f"kubelet-{i}",),
            )
    cluster._spawn(
        "kube-proxy",
        [
            str(b / "kube-proxy"),
            f"--kubeconfig={root}/kube-proxy.kubeconfig",
            "--proxy-mode=iptables",
            f"--cluster-cidr={CLUSTER_CIDR}",
            "--hostname-override=node0",
            "--conntrack-max-per-core=0",
            "--conntrack-tcp-timeout-established=0",
            "--conntrack-tcp-timeout-close-wait=0",
            f"--metrics-bind-address=127.0.0.1:{free_port()}",
            f"--healthz-bind-address=127.0.0.1:{free_port()}",
            "--v=1",
        ],
    )
    (root / "Corefile").write_text(corefile(api_ip, root / "coredns.kubeconfig"))
    cluster._spawn("coredns", [str(b / "coredns"), "-conf", str(root / "Corefile")])
    gpus = str(cluster.spec.gpus_per_node)
    for i in range(len(node_ips)):
        name = f"node{i}"

        def ready(name: str = name) -> bool:
            node = cluster.api_get(f"/api/v1/nodes/{name}")
            conds = {c["type"]: c["status"] for c in node["status"].get("conditions", [])}
            return conds.get("Ready") == "True"

        _wait(cluster, f"{name} Ready", ready, (f"kubelet-{i}", f"containerd-{i}", "kube-proxy", "coredns"))
        # Extended resource as a device plugin would advertise it (section 0b: the kubelet keeps it).
        patch = [
            {"op": "add", "path": f"/status/{f}/nvidia.com~1gpu", "value": gpus}
            for f in ("capacity", "allocatable")
        ]
        cluster.kubectl("patch", "node", name, "--subresource=status", "--type=json", "-p", json.dumps(patch))
        cluster.kubectl("label", "node", name, "nvidia.com/gpu.present=true", "--overwrite")


def drain(cluster: RunDir) -> None:
    """Before stopping the kubelets: stop what recreates pods, delete every pod, wait for containerd
    to have no task left (the kubelet then has run CNI DEL: veths and netns are gone)."""
    procs = cluster.state.get("procs", {})
    stop_pids([procs[n] for n in ("kube-controller-manager", "kube-scheduler") if n in procs], cluster.marker)
    if not cluster.kubeconfig.exists():
        return
    try:
        cluster.kubectl("delete", "pods", "--all", "-A", "--grace-period=1", "--wait=false", check=True)
    except ClusterError:
        return  # the apiserver is gone (a killed run): the process sweep and unmounts do the rest
    socks = [cluster.root / f"node{i}" / "containerd.sock" for i in range(cluster.state["spec"]["nodes"])]
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            busy = [s for s in socks if s.exists() and _ctr(s, "tasks", "ls", "-q", timeout=10).strip()]
        except (OSError, subprocess.SubprocessError):  # containerd already gone: nothing to wait for
            busy = []
        if not busy:
            break
        time.sleep(0.5)


def _force_delete_containers(runc_roots: list[Path]) -> None:
    """Kill and delete every container in these runc roots (their shims are gone or going)."""
    for runc_root in runc_roots:
        listing = run(["runc", "--root", str(runc_root), "list", "-q"], check=False).stdout.split()
        for cid in listing:
            run(["runc", "--root", str(runc_root), "delete", "--force", cid], check=False)


def stop_node(cluster: RunDir, i: int) -> None:
    """Node i dies as a machine that loses power does: its kubelet, containerd, shims and every
    container are SIGKILLed, nothing is drained. The Node object and its pods stay in the API for
    the control plane to notice (NotReady after the grace period, then taint-based eviction)."""
    nd = cluster.root / f"node{i}"
    procs: dict[str, int] = cluster.state.get("procs", {})
    victims = [procs.pop(n) for n in (f"kubelet-{i}", f"containerd-{i}") if n in procs]
    victims += pids_mentioning(f"{nd}/")  # the shims name the node's containerd socket
    for pid in victims:
        if ours(pid, cluster.marker):  # PIDs get reused: only a process naming our run dir
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    _force_delete_containers(sorted(nd.glob("runc/*")))
    # down() must not wait on a containerd that is gone: drain() skips nodes without a socket.
    (nd / "containerd.sock").unlink(missing_ok=True)
    cluster.state.setdefault("stopped_nodes", []).append(i)
    cluster._save()


def kill_containers(cluster: RunDir) -> None:
    """After the kubelets, shims and containerds are gone: delete any container still in our runc
    roots (a killed run leaves them running), then the pod network namespaces made since start."""
    _force_delete_containers(sorted(cluster.root.glob("node*/runc/*")))
    started = float(cluster.state.get("started", time.time()))
    netns_dir = Path("/run/netns")
    if netns_dir.is_dir():
        for ns in netns_dir.glob("cni-*"):
            # Only ours: containerd names them cni-<uuid>; ours are the ones made since this run began
            # (one node-mode cluster per machine).
            if ns.stat().st_mtime >= started - 1:
                run(["ip", "netns", "del", ns.name], check=False)
