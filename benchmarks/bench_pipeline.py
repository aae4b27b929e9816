"""Round time with `training.pipeline` on vs off when every link has a one-way delay, and the final
accuracy of both, in one run.

    python -m benchmarks.bench_pipeline [--delay-ms 50] [--seeds 3] [--rounds 30] [--workers 4]
        [--sync-every 50] [--device cpu] [--mechanism auto|netem|proxy] [--quick] [--output DIR]
        [--no-write]

Each arm is a whole local swarm (`swarm run`, real processes) on examples/digits.yaml with
`--workers` workers in a two-level tree (branching factor 2: workers -> aggregators -> root), run
inside a network namespace whose every TCP link delays each direction by `--delay-ms`
(benchmarks/netdelay.py: tc netem where the kernel has it, else its transparent delay proxy). A round
without pipeline costs the local steps plus four one-way delays (update up two hops, model down two);
pipelined, the steps of round r+1 run while that exchange is in flight, so a round costs about the
larger of the two. `--sync-every` sets the local steps, to make compute and exchange comparable.

Round time: the root's wall clock between committed rounds (metrics.jsonl `wallSeconds`), median
over rounds 3..R (rounds 1-2 carry the processes' start-up skew). Arms alternate their order from
seed to seed, in one namespace. Final accuracy: the root's test accuracy after round R. Needs root,
`ip` and `tc` or `iptables`. Writes benchmarks/results/pipeline.md (not with --no-write).
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import tempfile
from pathlib import Path
from typing import Any

import yaml

from benchmarks.common import markdown_table, mean_range, start_run, swarm_run, write_result
from benchmarks.netdelay import DelayedNamespace, delayed_namespace

ROOT = Path(__file__).resolve().parents[1]
DIGITS = ROOT / "examples" / "digits.yaml"
#: Rounds left out of the round time: the processes start at different times.
SKIPPED_ROUNDS = 2
ARMS = ("off", "on")


def manifest_doc(pipeline: bool, seed: int, args: argparse.Namespace) -> dict[str, Any]:
    """examples/digits.yaml with the arm's pipeline flag and the benchmark's size."""
    doc: dict[str, Any] = copy.deepcopy(yaml.safe_load(DIGITS.read_text()))
    spec = doc["spec"]
    spec["workers"] = {"replicas": args.workers, "device": args.device}
    spec["topology"]["branchingFactor"] = 2
    spec["training"].update(
        {"seed": seed, "rounds": args.rounds, "syncEvery": args.sync_every, "pipeline": pipeline}
    )
    return doc


def run_arm(ns: DelayedNamespace, doc: dict[str, Any], output: Path) -> dict[str, Any]:
    """One `swarm run` inside the namespace: its round times and final accuracy."""
    lines = swarm_run(doc, output, ns.command)
    walls = [x["wallSeconds"] for x in lines]
    rounds = [b - a for a, b in zip(walls[SKIPPED_ROUNDS:], walls[SKIPPED_ROUNDS + 1 :], strict=False)]
    return {
        "round_s": statistics.median(rounds),
        "round_mean_s": statistics.fmean(rounds),
        "accuracy": lines[-1]["accuracy"],
        "rounds": len(lines),
    }


def report(
    args: argparse.Namespace, ns: DelayedNamespace, results: dict[int, dict[str, dict[str, Any]]]
) -> str:
    seeds = sorted(results)

    def arm(name: str, key: str) -> list[float]:
        return [results[s][name][key] for s in seeds]

    speedups = [results[s]["off"]["round_s"] / results[s]["on"]["round_s"] for s in seeds]
    gaps = [100 * (results[s]["on"]["accuracy"] - results[s]["off"]["accuracy"]) for s in seeds]
    head = (
        f"{args.workers} workers, branching factor 2 (workers -> aggregators -> root), examples/digits.yaml, "
        f"H = {args.sync_every} local steps, {args.rounds} rounds, device {args.device}; one-way delay "
        f"{args.delay_ms:g} ms on every link (mechanism: {ns.mechanism}, benchmarks/netdelay.py); "
        f"seeds 0-{seeds[-1]}, mean (min-max) over seeds. Round time: median over rounds "
        f"{SKIPPED_ROUNDS + 1}..{args.rounds} of the root's time between commits."
    )
    summary = markdown_table(
        ["arm", "round time (s)", "final accuracy (%)"],
        [
            [
                f"pipeline {name}",
                mean_range(arm(name, "round_s"), "{:.3f}"),
                mean_range([100 * a for a in arm(name, "accuracy")], "{:.2f}"),
            ]
            for name in ARMS
        ],
    )
    ratios = markdown_table(
        ["per seed", "mean (min-max)"],
        [
            ["speed-up: round time off / on", mean_range(speedups, "{:.2f}") + "x"],
            ["accuracy on - off (points)", mean_range(gaps, "{:+.2f}")],
            ["mean accuracy on - off (points)", f"{statistics.fmean(gaps):+.2f}"],
        ],
    )

    def cell(seed: int, name: str) -> str:
        r = results[seed][name]
        return f"{r['round_s']:.3f} ({r['round_mean_s']:.3f}), {100 * r['accuracy']:.2f}%"

    per_seed = markdown_table(
        ["seed", "off: round s (mean), accuracy", "on: round s (mean), accuracy", "speed-up"],
        [[s, cell(s, "off"), cell(s, "on"), f"{speedups[i]:.2f}x"] for i, s in enumerate(seeds)],
    )
    return f"{head}\n\n{summary}\n\n{ratios}\n\nPer seed:\n\n{per_seed}\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--delay-ms", type=float, default=50.0, help="one-way delay on every link")
    parser.add_argument("--seeds", type=int, default=3, help="seeds 0 .. N-1, both arms each")
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--sync-every", type=int, default=50, help="local steps per round (H)")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="cpu", help="workers.device")
    parser.add_argument("--mechanism", choices=["auto", "netem", "proxy"], default="auto")
    parser.add_argument("--quick", action="store_true", help="1 seed, 6 rounds: every code path, fast")
    parser.add_argument("--output", type=Path, help="where the swarm runs' files go (default: a temp dir)")
    parser.add_argument("--no-write", action="store_true", help="print only, leave results/ alone")
    args = parser.parse_args(argv)
    run = start_run("benchmarks.bench_pipeline", argv)
    if args.quick:
        args.seeds, args.rounds = 1, 6
    mechanism = None if args.mechanism == "auto" else args.mechanism
    results: dict[int, dict[str, dict[str, Any]]] = {}
    with tempfile.TemporaryDirectory() as tmp, delayed_namespace(args.delay_ms, mechanism) as ns:
        base = args.output or Path(tmp)
        for seed in range(args.seeds):
            results[seed] = {}
            order = ARMS if seed % 2 == 0 else ARMS[::-1]  # alternate, so drift hits both arms
            for name in order:
                doc = manifest_doc(name == "on", seed, args)
                results[seed][name] = got = run_arm(ns, doc, base / f"seed{seed}-{name}")
                print(f"seed {seed} pipeline {name}: {json.dumps(got)}", flush=True)
        body = report(args, ns, results)
    print(body)
    if not args.no_write:
        path = write_result(
            "pipeline", "Pipelined rounds under a one-way link delay: round time and accuracy", run, body
        )
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
