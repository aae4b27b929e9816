#!/usr/bin/env bash
# Build the node-mode images with podman and save them as tars that harness.py imports into
# every node's containerd (namespace k8s.io). No registry and no Docker engine are involved.
#
#   tests/cluster/images.sh                         pause + the debootstrap base image
#   tests/cluster/images.sh IMAGE=DOCKERFILE ...     also build these (context: the repo root)
#   e.g. tests/cluster/images.sh ncrsh/swarm-worker:dev=Dockerfile.worker
#
# Output: ${NCRSH_CACHE:-$HOME/.cache/ncrsh-swarm}/images/*.tar (one per image, skipped when the
# image already exists in podman and its tar exists). Flags: reference section 0b (runc,
# ulimits, --pull=never, host network, the host's CA bundle for pip inside builds,
# mounted beside the image's own so that installing ca-certificates in a build still works).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
cache=${NCRSH_CACHE:-$HOME/.cache/ncrsh-swarm}
out=$cache/images
mkdir -p "$out"
log() { printf '[images.sh %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
pm() { nice -n 19 podman --cgroup-manager=cgroupfs --events-backend=file --runtime runc "$@"; }
BUILD_FLAGS=(--pull=never --network host --ulimit nofile=1024:1024 --ulimit nproc=1024:1024
  -v /etc/ssl/certs/ca-certificates.crt:/run/host-ca.crt:ro --build-arg PIP_CERT=/run/host-ca.crt)
tarname() { printf '%s.tar' "$(printf '%s' "$1" | tr '/:' '__')"; }
save() {  # IMAGE
  local t; t=$out/$(tarname "$1")
  pm save --format docker-archive -o "$t.partial" "$1" >/dev/null && mv "$t.partial" "$t"
  log "saved $1 -> $t ($(du -h "$t" | cut -f1))"
}
have() { pm image exists "$1" && [[ -s $out/$(tarname "$1") ]]; }
tmpdirs=()
# A build that was killed leaves its working containers, and with them whole layers (GBs for the
# worker), behind in podman's storage; nothing else on a test machine builds with this podman.
for leftover in $(pm ps -a --external -q); do pm rm -f "$leftover" >/dev/null 2>&1 || true; done
trap 'rm -rf "${tmpdirs[@]}"' EXIT

# pause: a static C program in an image FROM scratch.
if ! have registry.k8s.io/pause:3.10; then
  t=$SECONDS
  ctx=$(mktemp -d); tmpdirs+=("$ctx")
  gcc -static -O2 -o "$ctx/pause" "$here/images/pause/pause.c"
  cp "$here/images/pause/Dockerfile" "$ctx/"
  pm build "${BUILD_FLAGS[@]}" -t registry.k8s.io/pause:3.10 "$ctx" >/dev/null
  save registry.k8s.io/pause:3.10
  log "pause in $((SECONDS - t)) s"
fi

# The Dockerfiles' FROM image: Debian bookworm made by debootstrap from the same mirror as apt.
base=docker.io/library/debian:bookworm-slim
if ! have $base; then
  t=$SECONDS
  mirror=$(sed -n 's#^URIs: \(http[^ ]*/debian\)$#\1#p' /etc/apt/sources.list.d/*.sources 2>/dev/null | head -1)
  mirror=${mirror:-http://deb.debian.org/debian}
  rootfs=$(mktemp -d "$cache/debootstrap.XXXXXX"); tmpdirs+=("$rootfs")
  nice -n 19 debootstrap --variant=minbase bookworm "$rootfs" "$mirror" >/dev/null
  rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
  tar -C "$rootfs" -c . | pm import --change 'CMD ["bash"]' - $base >/dev/null
  rm -rf "$rootfs"
  save $base
  log "base image $base in $((SECONDS - t)) s"
fi

# Our Dockerfiles: rebuilt only when their inputs change (the Dockerfile, .dockerignore, the lock
# files and the sources that the build context admits); the hash is stored next to the tar.
inputs_hash() {  # DOCKERFILE
  (cd "$repo" && find "$1" .dockerignore pyproject.toml README.md locks contract/src worker/src operator/src -type f \
      -not -path '*/__pycache__/*' -not -name '*.pyc' -print0 | LC_ALL=C sort -z | xargs -0 sha256sum) \
    | sha256sum | cut -c1-16
}
for pair in "$@"; do
  img=${pair%%=*} dockerfile=${pair#*=}
  hash=$(inputs_hash "$dockerfile") stamp=$out/$(tarname "$img").inputs
  if have "$img" && [[ -f $stamp && $(cat "$stamp") == "$hash" ]]; then
    log "$img up to date (inputs $hash)"
    continue
  fi
  t=$SECONDS
  pm build "${BUILD_FLAGS[@]}" --label "io.ncrsh.inputs=$hash" -f "$repo/$dockerfile" -t "$img" "$repo" >&2
  save "$img"
  printf '%s\n' "$hash" > "$stamp"
  log "$img in $((SECONDS - t)) s ($(pm images --format '{{.Size}}' "$img") unpacked)"
  built=1
done
# Older builds of our images are dangling now; the stages they share with the new ones are kept.
[[ -n ${built:-} ]] && pm image prune -f >/dev/null
ls "$out"/*.tar
