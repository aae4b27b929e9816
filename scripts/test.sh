#!/usr/bin/env bash
# Set up (cached) and run every check: ruff (lint and format), mypy --strict, then the whole pytest
# suite: unit, integration (real local processes) and cluster (a real Kubernetes control plane and
# kubelets built from source by tests/cluster/build.sh, images by tests/cluster/images.sh; both
# cached under ~/.cache/ncrsh-swarm, a cold build takes tens of minutes). Extra arguments go to pytest.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$("$root/scripts/setup.sh" | tail -n 1)"
cd "$root"
# The venv is shared between checkouts: import this checkout's sources, not the last one installed.
export PYTHONPATH="$root/contract/src:$root/worker/src:$root/operator/src${PYTHONPATH:+:$PYTHONPATH}"
echo "== test cluster: binaries and images (cached)"
"$root/tests/cluster/build.sh"
"$root/tests/cluster/images.sh" \
  docker.io/library/ncrsh-swarm-operator:0.1.0=Dockerfile.operator \
  docker.io/library/ncrsh-swarm-worker:0.1.0=Dockerfile.worker
echo "== ruff"
"$venv/bin/ruff" check .
"$venv/bin/ruff" format --check .
echo "== mypy"
"$venv/bin/python" -m mypy
echo "== pytest"
exec "$venv/bin/python" -m pytest "$@"
