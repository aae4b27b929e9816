"""Bytes on the wire to reach 95% digits test accuracy, split into what fewer synchronisations save and
what compression saves: torch DDP (gloo, one all-reduce per step), local SGD without compression
(examples/digits.yaml with `compression.method: none` and `broadcast: dense`, the same H) and the
swarm (examples/digits.yaml as is), over several seeds, in one run.

    python -m benchmarks.bench_bytes_to_accuracy [--target 0.95] [--seeds 3] [--rounds N] [--output DIR]
        [--no-write]

The three arms train the same model on the same data split, workers, shards and batch size, from
the same initial model for a given seed (`training.seed` for the swarm runs, `--seed` of
benchmarks/ddp_baseline.py for DDP). Swarm bytes (both local-SGD arms) are what every node received
(headers included), summed over the tree, up to the first round whose test accuracy reaches the
target (evaluated once per round, so once per H local steps); DDP bytes are ring all-reduce
traffic, 2·(n-1)·model_bytes per step (see benchmarks/ddp_baseline.py), up to the first step that
reaches it (evaluated every step). Ratios are per seed, then mean and min-max over seeds:
DDP / uncompressed local SGD is what syncing every H steps saves, uncompressed / swarm what
compression saves, and their product the whole DDP / swarm ratio. Writes
benchmarks/results/bytes_to_accuracy.md (not with --no-write).
"""

from __future__ import annotations

import argparse
import copy
import json
import tempfile
from pathlib import Path
from typing import Any

import yaml

from benchmarks.common import markdown_table, mean_range, start_run, write_result
from benchmarks.ddp_baseline import run_ddp_baseline
from swarm_contract.manifest import parse_manifest
from swarm_worker.local.launcher import LocalSwarm

ROOT = Path(__file__).resolve().parents[1]
DIGITS = ROOT / "examples" / "digits.yaml"
ARMS = ("ddp", "local-sgd", "swarm")
LABELS = {
    "ddp": "DDP (gloo), all-reduce every step",
    "local-sgd": "local SGD, uncompressed (digits.yaml, `method: none`, `broadcast: dense`)",
    "swarm": "swarm, `examples/digits.yaml` (top-k + error feedback, delta broadcast)",
}


def digits_manifest(compressed: bool, seed: int, rounds: int | None) -> dict[str, Any]:
    """examples/digits.yaml with its seed (and rounds) set; uncompressed: dense updates and broadcast."""
    doc = copy.deepcopy(yaml.safe_load(DIGITS.read_text()))
    spec = doc["spec"]
    spec["training"]["seed"] = seed
    if rounds is not None:
        spec["training"]["rounds"] = rounds
    if not compressed:
        spec["compression"] = {"method": "none", "broadcast": "dense"}
    return doc


def swarm_bytes_to(doc: dict[str, Any], target: float, output: Path) -> dict[str, Any]:
    manifest = parse_manifest(doc)
    swarm = LocalSwarm(manifest, output)
    swarm.run(timeout=900)
    lines = swarm.metrics_lines()
    hit = next((x for x in lines if x["accuracy"] is not None and x["accuracy"] >= target), None)
    if hit is None:
        return {"reached": False, "syncs": None, "steps": None, "bytes": None, "rounds_run": len(lines)}
    return {
        "reached": True,
        "syncs": hit["round"],
        "steps": hit["round"] * manifest.spec.training.sync_every,
        "bytes": hit["bytesSent"],
        "dense_equivalent_bytes": hit["denseEquivalentBytes"],
        "wall_seconds": hit["wallSeconds"],
    }


def ddp_bytes_to(target: float, seed: int) -> dict[str, Any]:
    ddp = run_ddp_baseline(workers=8, target=target, seed=seed)
    label = f"{round(target * 100):d}"
    return {
        "reached": ddp["reached"],
        "syncs": ddp[f"steps_to_{label}"],
        "steps": ddp[f"steps_to_{label}"],
        "bytes": ddp[f"bytes_to_{label}"],
        "loopback_bytes": ddp["loopback_bytes_measured"],
        "wall_seconds": ddp["wall_s"],
    }


def _stat(runs: list[dict[str, Any]], key: str, fmt: str, scale: float = 1.0) -> str:
    values = [r[key] / scale for r in runs if r["reached"]]
    missed = len(runs) - len(values)
    text = mean_range(values, fmt) if values else "-"
    return text + (f" ({missed} of {len(runs)} did not reach it)" if missed else "")


def _ratio(results: dict[str, list[dict[str, Any]]], over: str, under: str) -> str:
    pairs = zip(results[over], results[under], strict=True)
    ratios = [a["bytes"] / b["bytes"] for a, b in pairs if a["reached"] and b["reached"]]
    return mean_range(ratios, "{:.1f}") + "x" if ratios else "-"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--target", type=float, default=0.95)
    parser.add_argument("--seeds", type=int, default=3, help="seeds 0 .. N-1, the same for every arm")
    parser.add_argument(
        "--rounds", type=int, help="rounds of the two local-SGD arms (default: digits.yaml's)"
    )
    parser.add_argument("--output", type=Path, help="where the swarm runs' files go (default: a temp dir)")
    parser.add_argument("--no-write", action="store_true", help="print only, leave results/ alone")
    args = parser.parse_args(argv)
    info = start_run("benchmarks.bench_bytes_to_accuracy", argv)
    results: dict[str, list[dict[str, Any]]] = {arm: [] for arm in ARMS}
    with tempfile.TemporaryDirectory() as tmp:
        output = args.output or Path(tmp)
        for seed in range(args.seeds):
            results["ddp"].append(ddp_bytes_to(args.target, seed))
            for arm, compressed in (("local-sgd", False), ("swarm", True)):
                doc = digits_manifest(compressed, seed, args.rounds)
                results[arm].append(swarm_bytes_to(doc, args.target, output / f"{arm}-{seed}"))
            print(json.dumps({"seed": seed, **{arm: results[arm][-1] for arm in ARMS}}), flush=True)

    digits = yaml.safe_load(DIGITS.read_text())["spec"]
    h = digits["training"]["syncEvery"]
    pct = f"{args.target:.0%}"
    rows = []
    for arm in ARMS:
        runs = results[arm]
        per_sync = [r["bytes"] / r["syncs"] / 1e3 for r in runs if r["reached"]]
        rows.append(
            [
                LABELS[arm],
                _stat(runs, "steps", "{:.0f}"),
                _stat(runs, "syncs", "{:.1f}"),
                _stat(runs, "bytes", "{:.3f}", 1e6),
                mean_range(per_sync, "{:.1f}") if per_sync else "-",
            ]
        )
    table = markdown_table(
        ["arm", f"local steps to {pct}", f"syncs to {pct}", f"MB to {pct}", "kB per sync"], rows
    )
    ratios = markdown_table(
        ["ratio of bytes to " + pct, "per seed: mean (min-max)"],
        [
            ["fewer syncs: DDP / uncompressed local SGD", _ratio(results, "ddp", "local-sgd")],
            ["compression: uncompressed local SGD / swarm", _ratio(results, "local-sgd", "swarm")],
            ["total: DDP / swarm", _ratio(results, "ddp", "swarm")],
        ],
    )
    seeds = markdown_table(
        ["seed", *(f"{arm}: steps, MB" for arm in ARMS)],
        [
            [
                seed,
                *(
                    f"{results[arm][seed]['steps']}, {results[arm][seed]['bytes'] / 1e6:.3f}"
                    if results[arm][seed]["reached"]
                    else "not reached"
                    for arm in ARMS
                ),
            ]
            for seed in range(args.seeds)
        ],
    )
    print(table, ratios, seeds, sep="\n\n")
    if args.no_write:
        return
    rounds = args.rounds or digits["training"]["rounds"]
    body = (
        f"8 workers, batch 32, SGD lr 0.1 (inner), the digits MLP; seeds 0-{args.seeds - 1}, mean "
        f"(min-max) over seeds. Both local-SGD arms: examples/digits.yaml (2 aggregators, root, H = {h} "
        f"local steps per round, outer SGD lr 1.0), {rounds} rounds run; a sync is one all-reduce for "
        "DDP and one round for local SGD.\n\n"
        + table
        + "\n\n"
        + ratios
        + "\n\nPer seed:\n\n"
        + seeds
        + "\n\nLocal-SGD bytes: every byte each node received (msgpack headers included), summed over "
        f"the tree, up to the first round whose test accuracy reached {pct}; accuracy is evaluated once "
        f"per round, so their step counts are multiples of H = {h}. DDP bytes: ring all-reduce of fp32 "
        f"gradients, 2·(n−1)·model_bytes per step, up to the first step reaching {pct} (evaluated every "
        "step; results/ddp.md cross-checks the formula against the loopback counter). kB per sync "
        "differs between DDP (ring all-reduce) and local SGD (a tree: updates up, model down), so the "
        "'fewer syncs' ratio also carries that difference."
    )
    write_result(
        "bytes_to_accuracy",
        f"Bytes on the wire to {pct} digits test accuracy: DDP vs uncompressed local SGD vs the swarm",
        info,
        body,
    )


if __name__ == "__main__":
    main()
