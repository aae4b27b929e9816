"""Karimireddy, He & Jaggi (ICLR 2022), experiment 3, on digits: robust rules x worker momentum x
bucketing x attacks, with n = 25 workers of which f = 5 Byzantine, on non-iid (label-sorted) shards.

    .venv/bin/python -m benchmarks.karimireddy [--seeds 3] [--steps 100] [--lr 0.1] [--processes 2]
    .venv/bin/python -m benchmarks.karimireddy --quick      # smoke test: 10 steps, 1 seed, no file

The protocol (data split, worker momentum, attacks, server step) is in `benchmarks.byzsim`. Rows:
the paper's rules CM (coordinate-wise median), TM (trimmed mean, f trimmed each side), Krum, GM
(geometric median, RFA) and CClip (centered clipping around the previous aggregate), and ours:
NNM + CClip (ncrsh-swarm's default) and NNM + TM; each with worker momentum β ∈ {0, 0.9} and
bucketing s ∈ {0 (none), 2}. Columns: no attack, then BF, LF, mimic, IPM (ε = 0.1), ALIE; each
cell the final test accuracy (%) mean ± std over seeds; "worst" is the lowest mean over the five
attacks. Baseline: the plain mean with no attack. Every config trains the same number of steps.
Writes benchmarks/results/karimireddy.md (not with --quick or --no-write). The default run takes
about 15 minutes on 2 shared CPU cores (one torch thread per process).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import multiprocessing
import sys
import time
from collections import defaultdict

import torch

from benchmarks.byzsim import ATTACKS, Method, RunResult, SimConfig, mean_std, run
from benchmarks.common import markdown_table, start_run, write_result
from swarm_worker.training.tasks import TaskBundle, build_task

METHODS: tuple[Method, ...] = (
    Method("CM", "median"),
    Method("TM", "trimmed-mean"),
    Method("Krum", "krum"),
    Method("GM", "geometric-median"),
    Method("CClip", "centered-clipping"),
    Method("NNM + CClip (ours)", "centered-clipping", (("nnm", None),)),
    Method("NNM + TM", "trimmed-mean", (("nnm", None),)),
)
BASELINE = Method("mean (no attack)", "mean")
MOMENTA: tuple[float, ...] = (0.0, 0.9)
BUCKET_SIZES: tuple[int, ...] = (0, 2)
ATTACK_LABELS: dict[str, str] = {
    "none": "no attack",
    "bit-flip": "BF",
    "label-flip": "LF",
    "mimic": "mimic",
    "ipm": "IPM",
    "alie": "ALIE",
}

_bundle: TaskBundle | None = None


def _init_process() -> None:
    global _bundle
    torch.set_num_threads(1)  # one thread per process: the machine's cores are shared
    _bundle = build_task("digits", {}, 0)


def _run_one(config: SimConfig) -> tuple[SimConfig, RunResult]:
    return config, run(config, _bundle)


def configs(steps: int, lr: float, seeds: int) -> list[SimConfig]:
    out = [
        SimConfig(BASELINE, "none", momentum, 0, steps=steps, lr=lr, seed=seed)
        for momentum in MOMENTA
        for seed in range(seeds)
    ]
    out += [
        SimConfig(method, attack, momentum, s, steps=steps, lr=lr, seed=seed)
        for method in METHODS
        for momentum in MOMENTA
        for s in BUCKET_SIZES
        for attack in ATTACKS
        for seed in range(seeds)
    ]
    return out


def run_all(todo: list[SimConfig], processes: int) -> dict[SimConfig, RunResult]:
    """Every config's result; runs in `processes` spawned processes, printing progress to stderr."""
    results: dict[SimConfig, RunResult] = {}
    start = time.perf_counter()
    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(processes, context, initializer=_init_process) as pool:
        for done, (config, result) in enumerate(pool.map(_run_one, todo), start=1):
            results[config] = result
            if done % 20 == 0 or done == len(todo):
                elapsed = time.perf_counter() - start
                eta = elapsed / done * (len(todo) - done)
                print(f"{done}/{len(todo)} runs, {elapsed:.0f} s, ~{eta:.0f} s left", file=sys.stderr)
    return results


def _cell(results: dict[SimConfig, RunResult], group: list[SimConfig]) -> tuple[str, float]:
    accuracies = [100 * results[c].accuracy for c in group]
    mean, std = mean_std(accuracies)
    diverged = any(results[c].diverged for c in group)
    return f"{mean:.1f} ± {std:.1f}{' †' if diverged else ''}", mean


def tables(results: dict[SimConfig, RunResult]) -> tuple[str, dict[str, float]]:
    """The markdown body, and per method its worst-case mean accuracy over attacks and settings."""
    groups: dict[tuple[str, float, int, str], list[SimConfig]] = defaultdict(list)
    for config in results:
        key = (config.method.label, config.momentum, config.bucket_size, config.attack)
        groups[key].append(config)
    header = ["method", "β", "s", *(ATTACK_LABELS[a] for a in ATTACKS), "worst"]
    rows: list[list[object]] = []
    worst_by_method: dict[str, float] = {}
    summary_rows: list[list[object]] = []
    for method in METHODS:
        summary: list[object] = [method.label]
        for momentum in MOMENTA:
            for s in BUCKET_SIZES:
                cells, means = [], {}
                for attack in ATTACKS:
                    text, means[attack] = _cell(results, groups[(method.label, momentum, s, attack)])
                    cells.append(text)
                worst_attack = min((a for a in ATTACKS if a != "none"), key=lambda a: means[a])
                worst = means[worst_attack]
                rows.append(
                    [method.label, momentum, s, *cells, f"{worst:.1f} ({ATTACK_LABELS[worst_attack]})"]
                )
                summary.append(f"{worst:.1f}")
                worst_by_method[method.label] = min(worst_by_method.get(method.label, 100.0), worst)
        summary_rows.append(summary)
    baseline = [
        [f"β = {momentum}", _cell(results, groups[(BASELINE.label, momentum, 0, "none")])[0]]
        for momentum in MOMENTA
    ]
    summary_header = ["method", *(f"β={m}, s={s}" for m in MOMENTA for s in BUCKET_SIZES)]
    body = (
        "Baseline, plain mean with no attack (all 25 workers honest):\n\n"
        + markdown_table(["momentum", "test accuracy %"], baseline)
        + "\n\nTest accuracy % (mean ± std over seeds) by method, worker momentum β, bucket size s "
        "(0 = none) and attack; worst = lowest mean over the five attacks:\n\n"
        + markdown_table(header, rows)
        + "\n\nWorst case over the five attacks, per method and setting:\n\n"
        + markdown_table(summary_header, summary_rows)
    )
    return body, worst_by_method


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=100, help="SGD steps (rounds), the same for every run")
    parser.add_argument("--lr", type=float, default=0.1, help="server learning rate")
    parser.add_argument("--processes", type=int, default=2, help="runs in parallel, one thread each")
    parser.add_argument("--quick", action="store_true", help="10 steps, 1 seed, print only: a smoke test")
    parser.add_argument("--no-write", action="store_true", help="print the tables, do not write the file")
    args = parser.parse_args()
    run_info = start_run("benchmarks.karimireddy")
    if args.quick:
        args.steps, args.seeds = 10, 1
    torch.set_num_threads(1)
    todo = configs(args.steps, args.lr, args.seeds)
    start = time.perf_counter()
    results = run_all(todo, args.processes)
    minutes = (time.perf_counter() - start) / 60
    body, worst = tables(results)
    print(body)
    print(f"\n{len(todo)} runs in {minutes:.1f} min", file=sys.stderr)
    if args.quick or args.no_write:
        return
    best = max(worst, key=lambda label: worst[label])
    settings = (
        "Settings: scikit-learn digits (1,438 train / 359 test, standardised), MLP 64-128-10; "
        "n = 25 workers, f = 5 Byzantine; the 20 honest workers hold the training set sorted by "
        "label in contiguous shards, each Byzantine worker an iid sample of the same size; batch 32 "
        f"per worker; {args.steps} synchronous SGD steps, server lr {args.lr}, worker momentum "
        "m ← β m + g (so β = 0.9 has a 10x larger effective step); aggregate with the previous "
        "aggregate as CClip's centre and GM's start; bucketing after the method's own steps. "
        f"{args.seeds} seeds (model init, data order, Byzantine samples, bucketing shuffle). "
        f"{len(todo)} runs took {minutes:.1f} min with {args.processes} processes.\n\n" + body
    )
    summary = (
        f"\n\nBest worst case over every attack and setting: {best} ({worst[best]:.1f}%). "
        "† marks a cell with a run whose parameters became non-finite (scored 0)."
    )
    path = write_result(
        "karimireddy",
        "Karimireddy et al. (ICLR 2022) experiment 3 on digits: momentum and bucketing under attack",
        run_info,
        settings + summary,
    )
    print(f"wrote {path}", file=sys.stderr)


if __name__ == "__main__":
    main()
