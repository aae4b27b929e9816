"""Round time with 4 root replicas (PBFT, `consensus.replicas: 4`) against one root, and the final
accuracy of both, in one run.

    python -m benchmarks.bench_consensus [--rounds 30] [--workers 4] [--seeds 2] [--quick] [--no-write]

Each arm is a whole local swarm (`swarm run`, real processes on loopback) on examples/digits.yaml
with `--workers` workers reporting to the root directly (branching factor = workers). With one root
a round costs the local steps, the updates' trip up, the aggregation and the outer step. With four
replicas each update goes to every replica, the leader proposes, every replica evaluates the same
round (aggregation and outer step, the digest of θ), signs and exchanges two rounds of votes, and
every replica sends the model down. Arms alternate their order from seed to seed. Round time: the
root's wall clock between committed rounds (metrics.jsonl `wallSeconds`), median over rounds
3..R (rounds 1-2 carry the start-up skew); the replicas' own figure: the mean time from a round's
proposal to its commit (status `consensus.meanCommitSeconds`). Writes benchmarks/results/consensus.md
(not with --no-write).
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

ROOT = Path(__file__).resolve().parents[1]
DIGITS = ROOT / "examples" / "digits.yaml"
SKIPPED_ROUNDS = 2
ARMS = (1, 4)


def manifest_doc(replicas: int, seed: int, args: argparse.Namespace) -> dict[str, Any]:
    doc: dict[str, Any] = copy.deepcopy(yaml.safe_load(DIGITS.read_text()))
    spec = doc["spec"]
    spec["workers"] = {"replicas": args.workers}
    spec["topology"]["branchingFactor"] = max(2, args.workers)
    spec["training"].update({"seed": seed, "rounds": args.rounds})
    spec["consensus"] = {"replicas": replicas}
    return doc


def run_arm(doc: dict[str, Any], output: Path) -> dict[str, Any]:
    lines = swarm_run(doc, output)
    walls = [x["wallSeconds"] for x in lines]
    rounds = [b - a for a, b in zip(walls[SKIPPED_ROUNDS:], walls[SKIPPED_ROUNDS + 1 :], strict=False)]
    result = json.loads((output / "result.json").read_text())
    consensus = result.get("consensus") or {}
    return {
        "round_s": statistics.median(rounds),
        "accuracy": lines[-1]["accuracy"],
        "commit_s": consensus.get("meanCommitSeconds"),
        "view_changes": consensus.get("viewChanges", 0),
    }


def report(args: argparse.Namespace, results: dict[int, dict[int, dict[str, Any]]]) -> str:
    seeds = sorted(results)
    head = (
        f"{args.workers} workers reporting to the root directly, examples/digits.yaml, {args.rounds} rounds, "
        f"seeds 0-{seeds[-1]}, mean (min-max) over seeds. Round time: median over rounds "
        f"{SKIPPED_ROUNDS + 1}..{args.rounds} of the root's time between commits."
    )
    rows = []
    for r in ARMS:
        got = [results[s][r] for s in seeds]
        commit = [g["commit_s"] for g in got if g["commit_s"] is not None]
        rows.append(
            [
                f"R = {r}",
                mean_range([g["round_s"] for g in got], "{:.3f}"),
                mean_range([100 * g["accuracy"] for g in got], "{:.2f}"),
                mean_range(commit, "{:.3f}") if commit else "-",
                sum(g["view_changes"] for g in got),
            ]
        )
    table = markdown_table(
        ["arm", "round time (s)", "final accuracy (%)", "proposal to commit (s)", "view changes"], rows
    )
    ratios = [results[s][4]["round_s"] / results[s][1]["round_s"] for s in seeds]
    return f"{head}\n\n{table}\n\nRound time R = 4 / R = 1 per seed: {mean_range(ratios, '{:.2f}')}x\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="1 seed, 6 rounds: every code path, fast")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args(argv)
    run = start_run("benchmarks.bench_consensus", argv)
    if args.quick:
        args.seeds, args.rounds = 1, 6
    results: dict[int, dict[int, dict[str, Any]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for seed in range(args.seeds):
            results[seed] = {}
            for r in ARMS if seed % 2 == 0 else ARMS[::-1]:
                results[seed][r] = got = run_arm(manifest_doc(r, seed, args), Path(tmp) / f"seed{seed}-r{r}")
                print(f"seed {seed} R = {r}: {json.dumps(got)}", flush=True)
    body = report(args, results)
    print(body)
    if not args.no_write:
        title = "Root replicas (R = 4) against one root: round time"
        print(f"wrote {write_result('consensus', title, run, body)}")


if __name__ == "__main__":
    main()
