"""The test cluster's PKI (openssl, EC P-256): a CA, serving and client certificates for every
component and node, the service-account key pair, and kubeconfigs with embedded credentials."""

from __future__ import annotations

import base64
import json
from collections.abc import Sequence
from pathlib import Path

from .processes import run


def _openssl_cert(
    pki: Path, name: str, subject: str, *, sans: Sequence[str] = (), server: bool = False
) -> None:
    """A key and a CA-signed leaf certificate ``pki/name.{key,crt}``."""
    ext = ["basicConstraints=critical,CA:FALSE", "keyUsage=critical,digitalSignature,keyEncipherment"]
    ext.append("extendedKeyUsage=" + ("serverAuth,clientAuth" if server else "clientAuth"))
    if sans:
        ext.append("subjectAltName=" + ",".join(sans))
    (pki / f"{name}.ext").write_text("\n".join(ext) + "\n")
    run(
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
    run(
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
    run(
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
    run(["openssl", "ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", str(pki / "sa.key")])
    run(["openssl", "ec", "-in", str(pki / "sa.key"), "-pubout", "-out", str(pki / "sa.pub")])
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
