#!/usr/bin/env bash
# Set up (cached) and run the embedded default: 8 workers, two aggregators and a root learning
# scikit-learn's digits on this machine. Extra arguments go to `swarm run` (e.g. --output DIR).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$("$root/scripts/setup.sh" | tail -n 1)"
cd "$root"
# The venv is shared between checkouts: import this checkout's sources, not the last one installed.
export PYTHONPATH="$root/contract/src:$root/worker/src:$root/operator/src${PYTHONPATH:+:$PYTHONPATH}"
exec "$venv/bin/swarm" run examples/digits.yaml "$@"
