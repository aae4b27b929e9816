"""One of two processes sharing a GPU, each with SWARM_GPU_FRACTION=0.5 (tests/gpu/test_fractional.py).

    python tests/gpu/share_probe.py steady|greedy FLAG_DIR [--device cuda|cpu]

Both take their device from node/device.py's `node_device`, which caps the CUDA caching allocator at
the process's share. `steady` holds 30% of the device, says so (FLAG_DIR/ready), waits until
`greedy` is done, then keeps computing on what it holds. `greedy` waits for `steady`, asks for 55% of
the device (over its half, under what is free) and records the OutOfMemoryError it gets, then
allocates within its share. Each prints one JSON line, then its exit line (node/peak_memory.py).
`--device cpu` runs the same steps on the CPU against a pretend 256 MiB device, where nothing caps
memory: the handshake and the report are checked without a GPU.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch

from swarm_contract.manifest import parse_spec
from swarm_worker.node.device import node_device
from swarm_worker.node.peak_memory import parse_peak_line, peak_memory_line

HELD, OVER_SHARE, WITHIN_SHARE = 0.30, 0.55, 0.20
PRETEND_TOTAL = 256 * 2**20
WAIT_S = 60.0


def _wait_for(flag: Path) -> None:
    deadline = time.monotonic() + WAIT_S
    while not flag.exists():
        if time.monotonic() > deadline:
            raise SystemExit(f"share_probe: {flag.name} never appeared")
        time.sleep(0.05)


def steady(device: torch.device, total: int, flags: Path) -> dict[str, Any]:
    held = torch.ones(int(HELD * total) // 4, device=device)  # float32: HELD of the device
    (flags / "ready").touch()
    _wait_for(flags / "done")
    held.mul_(2)  # still computing after the neighbour's failure
    return {"role": "steady", "held": held.numel() * 4, "value": float(held[:8].sum())}


def greedy(device: torch.device, total: int, flags: Path) -> dict[str, Any]:
    _wait_for(flags / "ready")
    free = torch.cuda.mem_get_info(device)[0] if device.type == "cuda" else total
    wanted = int(OVER_SHARE * total)
    try:
        over = torch.empty(wanted, dtype=torch.uint8, device=device)
        oom = False
        del over
    except torch.cuda.OutOfMemoryError:
        oom = True
    within = torch.ones(int(WITHIN_SHARE * total) // 4, device=device)
    (flags / "done").touch()
    return {"role": "greedy", "oom": oom, "wanted": wanted, "free": free, "within": within.numel() * 4}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("role", choices=["steady", "greedy"])
    parser.add_argument("flags", type=Path)
    parser.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    args = parser.parse_args()
    device = node_device(parse_spec({"workers": {"device": args.device}}), "worker")
    total = torch.cuda.get_device_properties(device).total_memory if device.type == "cuda" else PRETEND_TOTAL
    report = (steady if args.role == "steady" else greedy)(device, total, args.flags)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    print(json.dumps({**report, "total": total}), flush=True)
    print(peak_memory_line(args.role), flush=True)


def run_probes(flags: Path, device: str) -> dict[str, tuple[dict[str, Any], dict[str, str | None]]]:
    """Both roles as concurrent processes with SWARM_GPU_FRACTION=0.5: each one's JSON report and
    exit-line fields. AssertionError, with its output, when one fails."""
    root = Path(__file__).resolve().parents[2]
    sources = [str(root / "contract" / "src"), str(root / "worker" / "src")]
    pythonpath = os.pathsep.join([*sources, os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env = {**os.environ, "PYTHONPATH": pythonpath, "SWARM_GPU_FRACTION": "0.5"}
    procs = {
        role: subprocess.Popen(
            [sys.executable, __file__, role, str(flags), "--device", device],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
        )
        for role in ("steady", "greedy")
    }
    out = {}
    for role, proc in procs.items():
        text, _ = proc.communicate(timeout=2 * WAIT_S)
        assert proc.returncode == 0, f"{role} exited {proc.returncode}:\n{text}"
        report = next(json.loads(line) for line in text.splitlines() if line.startswith("{"))
        peak = parse_peak_line(text)
        assert peak is not None, text
        out[role] = (report, peak)
    return out


if __name__ == "__main__":
    main()
