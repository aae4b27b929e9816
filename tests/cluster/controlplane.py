"""The control plane of the test cluster: etcd, kube-apiserver, kube-controller-manager and
kube-scheduler. Flags: shared/reference/control-plane.md section 2.2; traps (T5): section 6."""

from __future__ import annotations

import json
import ssl
import time
import urllib.error
import urllib.request

from .hostnet import SERVICE_CIDR
from .pki import write_kubeconfig
from .rundir import RunDir


def start(cluster: RunDir, api_ip: str, ports: dict[str, int], node_mode: bool) -> None:
    """Start each component and wait until it is healthy, writing every component's kubeconfig on
    the way; done once KCM has made the default ServiceAccount."""
    b, pki, d = cluster.bin, cluster.pki, cluster.root
    etcd_url = f"http://127.0.0.1:{ports['etcd']}"
    peer_url = f"http://127.0.0.1:{ports['etcd_peer']}"
    cluster._spawn(
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

    cluster._wait("etcd /health", etcd_healthy, ("etcd",))
    # Loopback: the endpoint reconciler refuses 127.0.0.0/8 (trap T5), so it is off; node mode
    # advertises the host bridge address and keeps the default reconciler.
    addr = [f"--advertise-address={api_ip}"] if node_mode else ["--endpoint-reconciler-type=none"]
    cluster._spawn(
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
    server = cluster.state["server"]
    for user in ("admin", "kcm", "scheduler", "kube-proxy", "coredns"):
        write_kubeconfig(cluster.root / f"{user}.kubeconfig", server, pki, user)
    cluster._wait(
        "kube-apiserver /readyz", lambda: cluster.api_get("/readyz") == "ok", ("etcd", "kube-apiserver")
    )
    cluster.timings["apiserver_ready_s"] = time.monotonic() - cluster._t_start
    kcm, sch = cluster.root / "kcm.kubeconfig", cluster.root / "scheduler.kubeconfig"
    cluster._spawn(
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
    cluster._spawn(
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
        with urllib.request.urlopen(f"https://127.0.0.1:{port}/healthz", context=unverified, timeout=2) as r:
            return bool(r.read() == b"ok")

    watch = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler")
    cluster._wait("kube-controller-manager /healthz", lambda: healthy(ports["kcm"]), watch)
    cluster._wait("kube-scheduler /healthz", lambda: healthy(ports["scheduler"]), watch)

    def default_sa() -> bool:
        try:
            cluster.api_get("/api/v1/namespaces/default/serviceaccounts/default")
        except urllib.error.HTTPError as e:
            if e.code == 404:
                return False
            raise
        return True

    cluster._wait("the default ServiceAccount (KCM working)", default_sa, watch)
    cluster.kubectl("config", "set-context", "--current", "--namespace=default")
