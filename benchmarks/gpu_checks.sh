#!/usr/bin/env bash
# Every GPU check of the project in one bounded run, for a machine with a CUDA GPU and a Python that
# already has torch (CI has no GPU; there the same tests skip with "no GPU").
#
#   benchmarks/gpu_checks.sh [OUTDIR]
#
# 1. the GPU tests: tests/gpu and the CUDA cases of the unit tests;
# 2. the GPU benchmarks: worker samples/s with the swarm vs a plain PyTorch loop (LM `base` preset,
#    ~100 M parameters), top-k with error feedback vs torch.topk on the device, robust rules on the
#    GPU vs CPU. Each writes benchmarks/results/<name>.md as on any machine.
# Packages the machine lacks (pyzmq, pydantic, mnist1d) can be put as wheels in .whl/ beside this
# repository's root; they are installed into a scratch directory, never into the system.
# Each step has its own time limit, and a failing step does not stop the next: the summary at the
# end lists every step's exit status. Logs and the results files land in OUTDIR (default /tmp/gpu-checks)
# as one archive, gpu-checks.tar.gz.
set -uo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
out="${1:-${OUT:-/tmp/gpu-checks}}"
mkdir -p "$out/logs"
cd "$root"
python="${PYTHON:-python3}"
if compgen -G ".whl/*.whl" >/dev/null; then
  "$python" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/gpu-checks-site .whl/*.whl || exit 1
  site=/tmp/gpu-checks-site
fi
export PYTHONPATH="$root/contract/src:$root/worker/src:$root${site:+:$site}"
export PYTHONUNBUFFERED=1
nvidia-smi -L || true
"$python" -c 'import sys, torch; print(sys.version.split()[0], torch.__version__, torch.cuda.get_device_name())' \
  || exit 1

summary=()
step() {  # step NAME SECONDS COMMAND...: run it with a limit, log it, remember its exit status
  local name=$1 limit=$2
  shift 2
  echo "== $(date -u +%T) $name (limit ${limit} s): $*"
  local t0=$SECONDS
  timeout -k 10 "$limit" "$@" >"$out/logs/$name.log" 2>&1
  local rc=$?
  tail -n 25 "$out/logs/$name.log"
  summary+=("$name rc=$rc $((SECONDS - t0)) s")
}

# -W default: the suite turns warnings into errors; a newer torch's deprecations are not failures here.
# (tests/unit/test_robust_rules.py compares with byzfl, which GPU images may lack: its CUDA cases
# need a byzfl wheel in .whl/.)
step gpu-tests 240 "$python" -m pytest --noconftest -q -p no:cacheprovider -W default -rs \
  tests/gpu tests/unit/test_robust_api.py
step bench-worker-gpu 150 "$python" -m benchmarks.bench_worker_gpu --device cuda --preset base \
  --batch-size 8 --local-steps 20 --rounds 5
step bench-topk-gpu 90 "$python" -m benchmarks.bench_topk --device cuda --sizes 1e7 1e8 --repeats 5
step bench-aggregation-gpu 120 "$python" -m benchmarks.bench_aggregation --device cuda

tar czf "$out/gpu-checks.tar.gz" -C "$root" benchmarks/results -C "$out" logs
echo "== summary"
printf '%s\n' "${summary[@]}"
