"""Bytes on the wire to reach 95% digits test accuracy: the swarm (examples/digits.yaml, real
processes) against torch DDP over gloo with the same model, data, workers and batch size, in one run.

    python -m benchmarks.bench_bytes_to_accuracy [--target 0.95] [--output DIR]

Swarm bytes are what every node received (headers included), summed over the tree, up to the
first round whose test accuracy reaches the target; DDP bytes are ring all-reduce traffic,
2·(n-1)·model_bytes per step (see benchmarks/ddp_baseline.py), up to the first step that reaches it.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import yaml

from benchmarks.ddp_baseline import run_ddp_baseline
from swarm_contract.spec import parse_manifest
from swarm_worker.local.launcher import LocalSwarm

ROOT = Path(__file__).resolve().parents[1]


def swarm_bytes_to(target: float, output: Path) -> dict[str, float]:
    manifest = parse_manifest(yaml.safe_load((ROOT / "examples" / "digits.yaml").read_text()))
    swarm = LocalSwarm(manifest, output)
    swarm.run(timeout=900)
    lines = swarm.metrics_lines()
    hit = next((x for x in lines if x["accuracy"] is not None and x["accuracy"] >= target), None)
    if hit is None:
        raise SystemExit(f"the swarm never reached {target:.0%}")
    return {
        "rounds": hit["round"],
        "local_steps": hit["round"] * manifest.spec.training.sync_every,
        "bytes": hit["bytesSent"],
        "dense_equivalent_bytes": hit["denseEquivalentBytes"],
        "wall_seconds": hit["wallSeconds"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--target", type=float, default=0.95)
    parser.add_argument("--output", type=Path, help="where the swarm run's files go (default: a temp dir)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        swarm = swarm_bytes_to(args.target, args.output or Path(tmp) / "swarm")
    ddp = run_ddp_baseline(workers=8, target=args.target)
    ratio = ddp["bytes_to_95"] / swarm["bytes"]
    report = {"target": args.target, "swarm": swarm, "ddp": ddp, "ddp_bytes_over_swarm_bytes": ratio}
    print(json.dumps(report))
    print()
    print(f"| run | steps to {args.target:.0%} | bytes to {args.target:.0%} |")
    print("|---|---:|---:|")
    print(f"| DDP (gloo), 8 workers, batch 32 | {ddp['steps_to_95']} | {ddp['bytes_to_95'] / 1e6:.2f} MB |")
    print(
        f"| swarm, examples/digits.yaml | {swarm['rounds']} rounds x 50 local steps "
        f"| {swarm['bytes'] / 1e6:.3f} MB |"
    )
    print(f"| ratio DDP / swarm | | **{ratio:.0f}x** |")


if __name__ == "__main__":
    main()
