"""Registers the cluster fixtures as a plugin, so `pytest --existing-cluster[=KUBECONFIG]` works
from the repository root (the option is defined in tests/cluster/fixtures.py)."""

pytest_plugins = ["tests.cluster.fixtures"]
