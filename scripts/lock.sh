#!/usr/bin/env bash
# Regenerate locks/<extra>.txt: the exact versions pip resolves today for the image's extra, which
# Dockerfile.worker / Dockerfile.operator install (`pip install --requirement`) so that builds are pinned.
#   scripts/lock.sh            both extras (worker, operator)
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
py=${PYTHON:-$HOME/.cache/ncrsh-swarm/venv-py311/bin/python}
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
for extra in worker operator; do
  "$py" -m pip install --quiet --dry-run --ignore-installed --report "$tmp/$extra.json" "$repo[$extra]"
  {
    echo "# Resolved by scripts/lock.sh on $(date -u +%F) for the '$extra' extra (Python 3.11, linux x86_64)."
    "$py" - "$tmp/$extra.json" <<'PY'
import json
import sys

report = json.load(open(sys.argv[1]))
pins = [
    (item["metadata"]["name"], item["metadata"]["version"])
    for item in report["install"]
    if item["metadata"]["name"] != "ncrsh-swarm"
]
for name, version in sorted(pins, key=lambda p: p[0].lower()):
    print(f"{name}=={version}")
PY
  } > "$repo/locks/$extra.txt"
  echo "locks/$extra.txt: $(grep -vc '^#' "$repo/locks/$extra.txt") pins"
done
