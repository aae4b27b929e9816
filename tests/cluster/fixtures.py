"""pytest fixtures for tests that need a real Kubernetes cluster.

Use in a test module (or register once with ``pytest_plugins = ["tests.cluster.fixtures"]`` in the
root conftest.py, which also adds the ``--existing-cluster`` option)::

    from tests.cluster.fixtures import kube_cluster  # noqa: F401

    @pytest.mark.cluster
    def test_something(kube_cluster):  # a path to an admin kubeconfig
        ...

Which cluster:
* ``--existing-cluster[=KUBECONFIG]`` or the ``KUBECONFIG`` environment variable: use that cluster
  (kind, a real one), start nothing;
* otherwise start our own for the session: control plane plus ``NCRSH_CLUSTER_FAKE_NODES`` (default
  1) fake 4-GPU nodes, or ``NCRSH_CLUSTER_NODES`` (1 or 2) real nodes (root, images.sh); the test
  is skipped, with the reason, when the binaries of tests/cluster/build.sh are not built.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from .binaries import CONTROL_PLANE_BINARIES, NODE_BINARIES, not_built
from .harness import Cluster, ClusterSpec


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--existing-cluster",
        nargs="?",
        const="",
        default=None,
        metavar="KUBECONFIG",
        help="run cluster tests against this kubeconfig (default: $KUBECONFIG) instead of starting one",
    )


def existing_kubeconfig(config: pytest.Config) -> Path | None:
    opt = config.getoption("--existing-cluster", default=None)
    if opt is not None:
        path = opt or os.environ.get("KUBECONFIG") or str(Path.home() / ".kube" / "config")
        return Path(path)
    env = os.environ.get("KUBECONFIG")
    return Path(env) if env else None


@pytest.fixture(scope="session")
def kube_cluster(request: pytest.FixtureRequest) -> Iterator[Path]:
    """The admin kubeconfig of a running cluster, for the whole session."""
    existing = existing_kubeconfig(request.config)
    if existing is not None:
        yield existing
        return
    nodes = int(os.environ.get("NCRSH_CLUSTER_NODES", "0"))
    spec = ClusterSpec(
        name=f"pytest-{os.getpid()}",
        nodes=nodes,
        fake_nodes=int(os.environ.get("NCRSH_CLUSTER_FAKE_NODES", "1")),
    )
    reason = not_built(*CONTROL_PLANE_BINARIES, *(NODE_BINARIES if nodes else ()))
    if reason:
        pytest.skip(reason)
    if nodes and os.geteuid() != 0:
        pytest.skip("NCRSH_CLUSTER_NODES needs root")
    with Cluster(spec).running() as cluster:
        yield cluster.kubeconfig
