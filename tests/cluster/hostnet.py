"""Host changes of node mode, each recorded in the run directory's state before it is made and each
undone idempotently: the iptables guards (nothing from a pod leaves the machine), the node address
bridge, sysctls, cgroups, the kubelet's iptables chains, pod network namespaces, and the mounts under
the run directory.

See shared/reference/control-plane.md section 0b for the traps these guard against (T7).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from pathlib import Path

from .processes import run
from .rundir import RunDir

SERVICE_CIDR = "10.96.0.0/16"
CLUSTER_CIDR = "10.244.0.0/16"
HOST_BRIDGE = "ncrsh-host"  # no ports: carries the node addresses 10.244.0.(1+i)/32
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


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return run(["ip", *args], check=check)


def link_exists(name: str) -> bool:
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
    exists = run([tool, "-w", "-t", table, "-C", chain, *rule], check=False).returncode == 0
    if add and not exists:
        run([tool, "-w", "-t", table, "-I", chain, "1", *rule])
    elif not add:
        while run([tool, "-w", "-t", table, "-D", chain, *rule], check=False).returncode == 0:
            pass


def _delete_chain(tool: str, table: str, chain: str) -> None:
    """Remove every jump to ``chain`` in ``table``, then flush and delete it."""
    dump = run([tool + "-save", "-t", table], check=False).stdout
    if f":{chain} " not in dump:
        return
    for line in dump.splitlines():
        parts = line.split()
        if line.startswith("-A ") and "-j" in parts and parts[parts.index("-j") + 1] == chain:
            run([tool, "-w", "-t", table, "-D", *parts[1:]], check=False)
    run([tool, "-w", "-t", table, "-F", chain], check=False)
    run([tool, "-w", "-t", table, "-X", chain], check=False)


def cgroup_hierarchies() -> list[Path]:
    base = Path("/sys/fs/cgroup")
    if (base / "cgroup.controllers").exists():  # cgroup v2 unified
        return [base]
    return sorted(p for p in base.iterdir() if p.is_dir() and not p.is_symlink())


def make_cgroup(name: str) -> None:
    for h in cgroup_hierarchies():
        d = h / name
        d.mkdir(exist_ok=True)
        if h.name == "cpuset":
            for f in ("cpuset.cpus", "cpuset.mems"):
                if not (d / f).read_text().strip():
                    (d / f).write_text((h / f).read_text())


def _remove_cgroup(name: str) -> None:
    for h in cgroup_hierarchies():
        top = h / name
        if not top.is_dir():
            continue
        dirs = sorted((p for p in top.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True)
        for d in [*dirs, top]:
            with contextlib.suppress(OSError):
                d.rmdir()


def mounts_under(root: Path) -> list[str]:
    out = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        mnt = line.split()[4].replace("\\040", " ")
        if mnt == str(root) or mnt.startswith(str(root) + "/"):
            out.append(mnt)
    return sorted(set(out), key=lambda m: m.count("/"), reverse=True)


def unmount_under(root: Path) -> None:
    for _ in range(5):
        mounts = mounts_under(root)
        if not mounts:
            return
        for m in mounts:
            if run(["umount", m], check=False).returncode != 0:
                run(["umount", "-l", m], check=False)


def setup(cluster: RunDir) -> None:
    """Guards first (nothing from a pod may leave the machine), then the node address bridge."""
    orig = {k: _read_sysctl(k) for k in SYSCTLS}
    cluster.state["sysctls"] = {k: v for k, v in orig.items() if v is not None}
    cluster._save()
    # Directories the kubelet and the CNI plugins make outside the run directory; removed at
    # teardown when we made them and they are empty again.
    for d in SHARED_DIRS:
        if not Path(d).exists():
            cluster._record("created_dirs", d)
    # mangle FORWARD comes after DNAT and before filter FORWARD, where kube-proxy puts its own
    # jumps above anything of ours: this guard stays first whatever kube-proxy inserts.
    cluster._record(
        "rules",
        ["iptables", "mangle", "FORWARD", "-s", CLUSTER_CIDR, "!", "-d", CLUSTER_CIDR, "-j", "DROP"],
    )
    for tool in ("iptables",):
        cluster._record(
            "rules",
            [tool, "filter", "FORWARD", "-s", CLUSTER_CIDR, "!", "-d", CLUSTER_CIDR, "-j", "DROP"],
        )
        # A ClusterIP that kube-proxy does not (yet) serve would follow the default route off the
        # machine (T7); after kube-proxy's DNAT the destination is a pod, which this never sees.
        cluster._record("rules", [tool, "filter", "OUTPUT", "-d", SERVICE_CIDR, "-j", "REJECT"])
        cluster._record("rules", [tool, "filter", "FORWARD", "-d", SERVICE_CIDR, "-j", "REJECT"])
    for tool, table, chain, *rule in cluster.state["rules"]:
        _iptables_rule(tool, table, chain, rule, add=True)
    cluster._record("links", HOST_BRIDGE)
    if not link_exists(HOST_BRIDGE):
        _ip("link", "add", HOST_BRIDGE, "type", "bridge")
    for i in range(cluster.spec.nodes):
        _ip("addr", "replace", f"10.244.0.{1 + i}/32", "dev", HOST_BRIDGE)
    _ip("link", "set", HOST_BRIDGE, "up")


def undo(cluster: RunDir) -> None:
    """Undo every host change the cluster's state records (also those of a killed earlier run)."""
    st = cluster.state
    if st.get("spec", {}).get("nodes") and "kube-proxy" in st.get("procs", {}):
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            run([str(cluster.bin / "kube-proxy"), "--cleanup", "--v=0"], check=False, timeout=60)
    if st.get("kubelet_chains"):
        for tool in ("iptables", "ip6tables"):
            for table in ("filter", "nat", "mangle"):
                for chain in KUBELET_CHAINS:
                    _delete_chain(tool, table, chain)
    for tool, table, chain, *rule in st.get("rules", []):
        _iptables_rule(tool, table, chain, rule, add=False)
    for link in st.get("links", []):
        if link_exists(link):
            _ip("link", "del", link, check=False)
    for ns in st.get("netns", []):
        _ip("netns", "del", ns, check=False)
    logs = Path("/var/log/containers")
    if logs.is_dir():  # the kubelet's symlinks into our pod logs, when a pod was force-deleted
        for link in logs.iterdir():
            if link.is_symlink() and os.readlink(link).startswith(cluster.marker):
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
