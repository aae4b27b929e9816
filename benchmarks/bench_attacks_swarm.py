"""Attacks against real `swarm run` processes: final digits accuracy of the recommended robust
configuration (examples/robust.yaml), of the same configuration with `rule: mean`, and of
examples/byzantine.yaml, with 2 of 8 workers attacking, over several seeds, and the share of
attackers each configuration detects (quarantines).

    python -m benchmarks.bench_attacks_swarm [--rounds 20] [--seeds 3] [--run-timeout 600] [--no-write]
        [--attacks alie ipm sign-flip sign-flip:10 gaussian label-flip]

For each attack (and without attackers), each seed (`training.seed`: model init and batch order)
and each arm, one run of real processes. The two arms differ only in `robustness.rule`:
centered-clipping (robust.yaml's) or mean. Everything else is robust.yaml's in both, reputation
with quarantine included; the compression support is pinned to what robust.yaml resolves to
(`auto` would otherwise switch to each worker's own top-k for the mean). Reports each arm's final
accuracy (mean and min-max over seeds), the attackers' highest and the honest workers' lowest
final reputation, and how many attackers and honest workers were quarantined. A run that gives no
final status within --run-timeout seconds (a stalled round) counts with the accuracy of its last
committed round and is listed under the table. Writes
benchmarks/results/attacks_swarm.md (not with --no-write). The full table (7 rows x 3 seeds x 3
arms = 63 runs at 20 rounds) takes about 70 minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import tempfile
from pathlib import Path
from typing import Any

import yaml

from benchmarks.common import markdown_table, mean_range, start_run, write_result
from swarm_contract.manifest import parse_manifest
from swarm_worker.local.launcher import LocalSwarm, SwarmFailedError

ROOT = Path(__file__).resolve().parents[1]
ATTACKERS = (2, 5)
ALL_ATTACKS = ["alie", "ipm", "sign-flip", "sign-flip:10", "gaussian", "label-flip"]
#: robust: examples/robust.yaml; mean: the same with `rule: mean`; byzantine: examples/byzantine.yaml
#: (two-level tree, trimmed mean with f = 1) with the row's attack on its own attackers.
ARMS = ("robust", "mean", "byzantine")


def attackers_of(arm: str, byzantine_base: dict[str, Any]) -> tuple[int, ...]:
    """The attacking ranks of an arm: workers 2 and 5, or the ones examples/byzantine.yaml names."""
    if arm == "byzantine":
        return tuple(b["worker"] for b in byzantine_base["spec"]["simulation"]["byzantine"])
    return ATTACKERS


def manifest_for(
    base: dict[str, Any], arm: str, attack: str | None, rounds: int, seed: int, attackers: tuple[int, ...]
) -> dict[str, Any]:
    """The arm's manifest (robust.yaml, or with the mean, or byzantine.yaml) with the attack on
    `attackers`, `rounds` and `seed`."""
    doc = copy.deepcopy(base)
    spec = doc["spec"]
    spec["training"]["rounds"] = rounds
    spec["training"]["seed"] = seed
    if arm != "byzantine":
        # Pin the support robust.yaml resolves to, so that `auto` does not change it with the rule.
        common = parse_manifest(base).spec.common_support
        spec.setdefault("compression", {})["support"] = "common" if common else "own"
    if arm == "mean":
        spec["robustness"]["rule"] = "mean"
    name, _, scale = (attack or "").partition(":")
    spec["simulation"] = {
        "byzantine": [
            {"worker": w, "attack": name, **({"scale": float(scale)} if scale else {})} for w in attackers
        ]
        if attack
        else []
    }
    return doc


def run(
    doc: dict[str, Any], attack: str | None, attacking: tuple[int, ...], out: Path, timeout: float
) -> dict[str, Any]:
    """One run's final accuracy, reputations and quarantines; a run that ends without a result
    (a stall past `timeout`, a spent restart budget) is data: its last evaluated accuracy and why."""
    swarm = LocalSwarm(parse_manifest(doc), out)
    try:
        result = swarm.run(timeout=timeout)
    except SwarmFailedError as e:
        evaluated = [x for x in swarm.metrics_lines() if x.get("accuracy") is not None]
        return {
            "failed": f"{e} (last committed round {evaluated[-1]['round'] if evaluated else 0})",
            "accuracy": evaluated[-1]["accuracy"] if evaluated else 0.0,
        }
    attackers = {f"worker-{w}" for w in attacking} if attack else set()
    nodes = [n for n in result["nodes"] if n["role"] == "worker"]
    return {
        "failed": None,
        "accuracy": result["accuracy"],
        "attacker_reps": [n["reputation"] for n in nodes if n["id"] in attackers],
        "honest_reps": [n["reputation"] for n in nodes if n["id"] not in attackers],
        "attackers": sum(1 for n in nodes if n["id"] in attackers),
        "honest": sum(1 for n in nodes if n["id"] not in attackers),
        "quarantined_attackers": sum(1 for n in nodes if n["quarantined"] and n["id"] in attackers),
        "quarantined_honest": sum(1 for n in nodes if n["quarantined"] and n["id"] not in attackers),
    }


def row(name: str, runs: dict[str, list[dict[str, Any]]], clean: dict[str, float]) -> list[str]:
    cells = [name]
    for arm in ARMS:
        accuracies = [100 * r["accuracy"] for r in runs[arm]]
        failed = sum(1 for r in runs[arm] if r["failed"])
        cells += [
            mean_range(accuracies) + (f" ({failed} without result)" if failed else ""),
            f"{statistics.fmean(accuracies) - clean[arm]:+.1f}",
        ]
    robust = [r for r in runs["robust"] if not r["failed"]]
    attacker_reps = [x for r in robust for x in r["attacker_reps"]]
    honest_reps = [x for r in robust for x in r["honest_reps"]]
    cells += [
        f"{max(attacker_reps):.2f}" if attacker_reps else "-",
        f"{min(honest_reps):.2f}" if honest_reps else "-",
    ]
    for kind in ("attackers", "honest"):
        counts = []
        for arm in ARMS:
            finished = [r for r in runs[arm] if not r["failed"]]
            possible = sum(r[kind] for r in finished)
            counts.append(
                f"{sum(r[f'quarantined_{kind}'] for r in finished)}/{possible}" if possible else "-"
            )
        cells.append(" / ".join(counts))
    rates = []
    for arm in ("robust", "byzantine"):
        finished = [r for r in runs[arm] if not r["failed"]]
        possible = sum(r["attackers"] for r in finished)
        caught = sum(r["quarantined_attackers"] for r in finished)
        rates.append(f"{100 * caught / possible:.0f}%" if possible else "-")
    cells.append(" / ".join(rates))
    return cells


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--seeds", type=int, default=3, help="seeds 0 .. N-1 for every arm and attack")
    parser.add_argument(
        "--attacks",
        nargs="+",
        default=ALL_ATTACKS,
        help="attack names, optionally with a scale: sign-flip:10",
    )
    parser.add_argument(
        "--run-timeout", type=float, default=600, help="seconds before a run counts as without result"
    )
    parser.add_argument("--no-write", action="store_true", help="print only, leave results/attacks_swarm.md")
    args = parser.parse_args(argv)
    info = start_run("benchmarks.bench_attacks_swarm", argv)
    base = yaml.safe_load((ROOT / "examples" / "robust.yaml").read_text())
    byzantine_base = yaml.safe_load((ROOT / "examples" / "byzantine.yaml").read_text())
    if base["spec"]["workers"]["replicas"] != 8:
        raise SystemExit("examples/robust.yaml no longer has 8 workers; update ATTACKERS and the table")
    rows: list[list[str]] = []
    clean: dict[str, float] = {}
    failures: list[str] = []
    with tempfile.TemporaryDirectory() as tmp:
        for attack in [None, *args.attacks]:
            name = attack or "none"
            runs: dict[str, list[dict[str, Any]]] = {arm: [] for arm in ARMS}
            for seed in range(args.seeds):
                for arm in ARMS:
                    attacking = attackers_of(arm, byzantine_base)
                    arm_base = byzantine_base if arm == "byzantine" else base
                    doc = manifest_for(arm_base, arm, attack, args.rounds, seed, attacking)
                    out = Path(tmp) / f"{name}-{arm}-{seed}"
                    runs[arm].append(run(doc, attack, attacking, out, args.run_timeout))
                    print(name, arm, seed, runs[arm][-1], flush=True)
            if attack is None:
                clean = {arm: statistics.fmean(100 * r["accuracy"] for r in runs[arm]) for arm in ARMS}
            rows.append(row(name, runs, clean))
            failures += [
                f"{name}, {arm}, seed {seed}: {r['failed']}"
                for arm in ARMS
                for seed, r in enumerate(runs[arm])
                if r["failed"]
            ]
            print(" | ".join(rows[-1]), flush=True)
    header = [
        "attack", "robust acc %", "Δ vs clean", "mean acc %", "Δ vs clean",
        "byzantine.yaml acc %", "Δ vs clean",
        "attackers' max rep (robust)", "honest min rep (robust)",
        "attackers quarantined (robust / mean / byzantine.yaml)",
        "honest quarantined (robust / mean / byzantine.yaml)",
        "detection rate (robust / byzantine.yaml)",
    ]  # fmt: skip
    table = markdown_table(header, rows)
    print(table)
    if args.no_write:
        return
    robustness = base["spec"]["robustness"]
    pre = "+".join(p["name"] for p in robustness.get("preAggregation", []))
    support = "common" if parse_manifest(base).spec.common_support else "own"
    body = (
        f"Digits, 8 worker processes, workers {' and '.join(map(str, ATTACKERS))} attacking, "
        f"{args.rounds} rounds, seeds 0-{args.seeds - 1} (`training.seed`). Robust = examples/robust.yaml: "
        f"flat tree, {pre + ' + ' if pre else ''}{robustness['rule']}, f = {robustness['f']}, reputation "
        f"with quarantine, `{support}` support. Mean = the same manifest with `rule: mean` and nothing else "
        f"changed: reputation and quarantine stay on (mean weighs by samples only, but quarantined "
        f"workers are dropped as for the robust rule) and the support stays pinned to `{support}`. "
        f"byzantine.yaml = examples/byzantine.yaml as shipped (two aggregators of 4 under the root, "
        f"trimmed mean with f = 1, reputation with quarantine) with the row's attack on its own "
        f"attackers, workers {' and '.join(map(str, attackers_of('byzantine', byzantine_base)))} "
        f"(one under each aggregator).\n\n"
        + table
        + "\n\nAccuracy: final test accuracy, mean over seeds (min-max); Δ vs clean: this row's mean minus "
        "the arm's mean without attackers. Reputations: the highest of any attacker and the lowest of "
        "any honest worker over all seeds of the robust arm. Quarantined: workers quarantined at the "
        "end, summed over the seeds with a result, out of the number possible; detection rate: the "
        "share of attackers quarantined at the end. A run without a "
        f"result (no final status within {args.run_timeout:.0f} s, or a spent restart budget) counts "
        "with the test accuracy of its last committed round and is listed below the table."
    )
    if failures:
        body += "\n\nRuns without a result:\n\n" + "\n".join(f"- {line}" for line in failures)
    if args.attacks != ALL_ATTACKS or args.rounds != 20 or args.seeds != 3:
        body += (
            f"\n\nReduced run: the full table is `--rounds 20 --seeds 3` with every attack "
            f"({', '.join(ALL_ATTACKS)}); this one has {args.rounds} rounds, {args.seeds} seed(s) and "
            f"{', '.join(args.attacks)}."
        )
    write_result(
        "attacks_swarm",
        "Attacks against real swarm processes: robust rule vs mean, 2 of 8 workers",
        info,
        body,
    )


if __name__ == "__main__":
    main()
