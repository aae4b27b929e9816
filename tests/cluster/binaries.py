"""Where the test cluster's binaries are: the one lookup every test uses, importable without starting
anything.

build.sh puts the binaries (kube-*, kubectl, etcd, coredns, helm) in
``${NCRSH_CACHE:-~/.cache/ncrsh-swarm}/k8s-<version>-<hash>/bin``, the hash covering its inputs;
``build.sh --print-bin-dir`` computes that directory with the same code, so a test finds exactly
what the last ``tests/cluster/build.sh`` built, never a stale or an unrelated binary on PATH.
``NCRSH_CLUSTER_BIN`` names another directory instead.
"""

from __future__ import annotations

import functools
import os
import subprocess
from pathlib import Path

HERE = Path(__file__).resolve().parent
CONTROL_PLANE_BINARIES = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubectl")
NODE_BINARIES = ("kubelet", "kube-proxy", "coredns")


def versions() -> dict[str, str]:
    """The pinned versions of versions.env (K8S_VERSION, HELM_VERSION, ...)."""
    out = {}
    for line in (HERE / "versions.env").read_text().splitlines():
        if "=" in line and not line.lstrip().startswith("#"):
            k, v = line.split("=", 1)
            out[k.strip()] = v.strip()
    return out


@functools.cache
def _build_sh_bin_dir() -> Path:
    # build.sh hashes its inputs (versions.env, go.mod/go.sum, `go version`): these do not change
    # while tests run, so one process asks once.
    out = subprocess.run(
        ["bash", str(HERE / "build.sh"), "--print-bin-dir"], check=True, capture_output=True, text=True
    )
    return Path(out.stdout.strip())


def default_bin_dir() -> Path:
    """``NCRSH_CLUSTER_BIN`` if set, else where build.sh puts (or would put) the binaries."""
    env = os.environ.get("NCRSH_CLUSTER_BIN")
    if env:
        return Path(env)
    return _build_sh_bin_dir()


def built_binary(name: str) -> Path:
    """The path of the binary ``name`` (``helm``, ``kubectl``, ...) in :func:`default_bin_dir`. It
    may not be built yet: a test that needs it checks :func:`not_built` first and skips with that."""
    return default_bin_dir() / name


def binaries_missing(bin_dir: Path, nodes: int = 0) -> list[str]:
    names = list(CONTROL_PLANE_BINARIES)
    if nodes:
        names += NODE_BINARIES
    return [n for n in names if not os.access(bin_dir / n, os.X_OK)]


def not_built(*names: str) -> str:
    """Why a test that runs these binaries cannot: which are missing, where, and what to run; ""
    when every one is built (the skip reason, so a test is skipped only when one truly is missing)."""
    bin_dir = default_bin_dir()
    missing = [n for n in names if not os.access(bin_dir / n, os.X_OK)]
    if not missing:
        return ""
    return f"test cluster binaries not built in {bin_dir} ({', '.join(missing)}): run tests/cluster/build.sh"


def kubectl(
    kubeconfig: Path, *args: str, stdin: str | None = None, check: bool = True, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """Our kubectl against any cluster (a kubeconfig path); CalledProcessError when `check` fails."""
    return subprocess.run(
        [str(built_binary("kubectl")), *args],
        input=stdin,
        capture_output=True,
        text=True,
        check=check,
        env={**os.environ, "KUBECONFIG": str(kubeconfig)},
        timeout=timeout,
    )
