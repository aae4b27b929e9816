"""Attacks against real `swarm run` processes: final digits accuracy of the recommended robust
configuration (examples/robust.yaml) and of plain mean, with 2 of 8 workers attacking.

    python -m benchmarks.bench_attacks_swarm [--rounds 20] [--attacks alie ipm sign-flip gaussian label-flip]

For each attack: one run with the robust configuration, one with `rule: mean` and reputation off;
plus both without attackers. Reports final accuracy, the attackers' highest and the honest workers'
lowest final reputation, and who was quarantined. Writes benchmarks/results/attacks_swarm.md.
"""

from __future__ import annotations

import argparse
import copy
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

from swarm_contract.spec import parse_manifest
from swarm_worker.local.launcher import LocalSwarm

ROOT = Path(__file__).resolve().parents[1]
ATTACKERS = (2, 5)


def run(base: dict[str, Any], rule: str | None, attack: str | None, rounds: int, out: Path) -> dict[str, Any]:
    doc = copy.deepcopy(base)
    spec = doc["spec"]
    spec["training"]["rounds"] = rounds
    if rule is not None:
        # Plain: the rule alone, no reputation (so no quarantine either).
        spec["robustness"] = {"rule": rule, "reputation": {"enabled": False}}
    name, _, scale = (attack or "").partition(":")
    spec["simulation"] = {
        "byzantine": [
            {"worker": w, "attack": name, **({"scale": float(scale)} if scale else {})} for w in ATTACKERS
        ]
        if attack
        else []
    }
    result = LocalSwarm(parse_manifest(doc), out).run(timeout=1200)
    attackers = {f"worker-{w}" for w in ATTACKERS} if attack else set()
    nodes = [n for n in result["nodes"] if n["role"] == "worker"]
    bad = [n["reputation"] for n in nodes if n["id"] in attackers]
    good = [n["reputation"] for n in nodes if n["id"] not in attackers]
    return {
        "accuracy": result["accuracy"],
        "attacker_max_rep": max(bad) if bad else None,
        "honest_min_rep": min(good) if good else None,
        "quarantined": sorted(n["id"] for n in nodes if n["quarantined"]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument(
        "--attacks",
        nargs="+",
        default=["alie", "ipm", "sign-flip", "sign-flip:10", "gaussian", "label-flip"],
        help="attack names, optionally with a scale: sign-flip:10",
    )
    parser.add_argument("--output", type=Path, default=ROOT / "benchmarks" / "results" / "attacks_swarm.md")
    args = parser.parse_args()
    base = yaml.safe_load((ROOT / "examples" / "robust.yaml").read_text())
    rows: list[tuple[str, dict[str, Any], dict[str, Any]]] = []
    started = time.monotonic()
    with tempfile.TemporaryDirectory() as tmp:
        for attack in [None, *args.attacks]:
            name = attack or "none"
            robust = run(base, None, attack, args.rounds, Path(tmp) / f"{name}-robust")
            mean = run(base, "mean", attack, args.rounds, Path(tmp) / f"{name}-mean")
            rows.append((name, robust, mean))
            print(name, robust, mean, flush=True)
    clean = rows[0][1]["accuracy"]

    def rep(x: float | None) -> str:
        return "-" if x is None else f"{x:.2f}"

    rb = base["spec"]["robustness"]
    pre = "+".join(p["name"] for p in rb.get("preAggregation", []))
    lines = [
        "# Attacks against real swarm processes (digits, 8 workers, 2 attackers: workers 2 and 5)",
        "",
        f"Command: `python -m benchmarks.bench_attacks_swarm --rounds {args.rounds}`; "
        f"{time.strftime('%Y-%m-%d')}, 2-core machine, {time.monotonic() - started:.0f} s in all.",
        "",
        f"Robust = examples/robust.yaml: flat tree, {pre + ' + ' if pre else ''}{rb['rule']}, f = {rb['f']}, "
        "reputation with quarantine, common support. Mean = the same with `rule: mean` and no reputation.",
        "",
        "| attack | robust acc | Δ vs clean | mean acc | Δ vs clean | attackers' max rep | honest min rep "
        "| quarantined (robust run) |",
        "|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    mean_clean = rows[0][2]["accuracy"]
    for name, robust, mean in rows:
        lines.append(
            f"| {name} | {100 * robust['accuracy']:.1f}% | {100 * (robust['accuracy'] - clean):+.1f} "
            f"| {100 * mean['accuracy']:.1f}% | {100 * (mean['accuracy'] - mean_clean):+.1f} "
            f"| {rep(robust['attacker_max_rep'])} | {rep(robust['honest_min_rep'])} "
            f"| {', '.join(robust['quarantined']) or 'none'} |"
        )
    args.output.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
