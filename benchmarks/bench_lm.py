"""The language-model task on CPU: bytes on the wire to a validation loss, the swarm against torch
DDP (gloo), and a run of the ~25 M-parameter preset with its peak memory per process, in one run.

    python -m benchmarks.bench_lm [--target 2.5] [--also 3.0 2.8 2.6] [--rounds 16] [--seeds 1]
        [--ddp-max-steps 2000] [--ddp-eval-every 20] [--small-rounds 3] [--small-steps 2]
        [--skip-small] [--quick] [--output DIR] [--no-write]

(a) Bytes to a validation loss (nats per byte; ln 256 = 5.55 is a uniform guess): `--target`, and
    the looser `--also` targets read off the same runs.
    swarm: examples/lm.yaml as is (the `tiny` preset, 1.03 M parameters; 4 workers under the root;
    H = 25 local Adam steps of batch 16 per round; top-1% updates with error feedback, float16
    values; delta broadcast), `training.seed` = seed, `--rounds` rounds; its bytes are every byte
    each node received (headers and the dense model each worker receives on joining included), up
    to the first round whose validation loss reaches the target; the root evaluates every round.
    DDP: benchmarks/ddp_baseline.py with the same task and options (so the same corpus, windows,
    validation subset and initial model for the seed), 4 processes, batch 16 each, Adam with the
    same lr, one gradient all-reduce per step, until `--target`; bytes 2·(n-1)·model_bytes per step
    (ring all-reduce, see ddp_baseline.py), up to the first evaluation (every `--ddp-eval-every`
    steps) reaching the target, so DDP's count may overshoot by up to that many steps.
    Time to a target is each arm's wall clock from its start of training, evaluations included.
(b) The `small` preset (25.5 M parameters) with 4 workers for `--small-rounds` rounds of
    `--small-steps` local steps (batch 2, context 128, so a CPU round stays short): it must
    complete; the peak RSS of every process comes from the line each `swarm node` logs at exit
    (swarm_worker.node.peak_memory: getrusage's ru_maxrss).

Writes benchmarks/results/lm.md (not with --no-write). `--quick` runs every code path in a minute
or two (a loose target, a few rounds, a one-step small run); its figures mean nothing.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from benchmarks.common import markdown_table, mean_range, start_run, write_result
from benchmarks.ddp_baseline import Training, run_ddp_baseline
from swarm_contract.manifest import parse_manifest
from swarm_worker.local.launcher import LocalSwarm
from swarm_worker.node.peak_memory import PEAK_LINE

ROOT = Path(__file__).resolve().parents[1]
LM = ROOT / "examples" / "lm.yaml"
WORKERS = 4


def lm_manifest(seed: int, rounds: int) -> dict[str, Any]:
    doc: dict[str, Any] = copy.deepcopy(yaml.safe_load(LM.read_text()))
    doc["spec"]["training"]["seed"] = seed
    doc["spec"]["training"]["rounds"] = rounds
    return doc


#: One evaluation of an arm: (syncs, local steps per worker, validation loss, bytes so far, seconds).
Point = tuple[int, int, float, float, float]


def swarm_points(doc: dict[str, Any], output: Path) -> list[Point]:
    """Every round of examples/lm.yaml's run: the root evaluates after each."""
    swarm = LocalSwarm(parse_manifest(doc), output)
    swarm.run(timeout=3600)
    h = doc["spec"]["training"]["syncEvery"]
    return [
        (x["round"], x["round"] * h, x["testLoss"], x["bytesSent"], x["wallSeconds"])
        for x in swarm.metrics_lines()
        if x["testLoss"] is not None
    ]


def ddp_points(
    doc: dict[str, Any], target: float, seed: int, max_steps: int, eval_every: int
) -> tuple[list[Point], int]:
    """DDP's evaluations up to the first that reaches `target`, and the model's parameter count."""
    spec = doc["spec"]
    training = Training(
        task=spec["task"]["name"],
        options=dict(spec["task"]["options"]),
        optimizer=spec["training"]["innerOptimizer"]["name"],
        lr=spec["training"]["innerOptimizer"]["lr"],
        batch=spec["training"]["batchSize"],
        goal="loss",
    )
    ddp = run_ddp_baseline(
        workers=spec["workers"]["replicas"],
        target=target,
        max_steps=max_steps,
        seed=seed,
        eval_every=eval_every,
        training=training,
    )
    per_step = ddp["bytes_per_step"]
    points = [(step, step, loss, step * per_step, seconds) for step, loss, seconds in ddp["curve"]]
    return points, int(ddp["model_params"])


def first_reaching(points: list[Point], target: float) -> Point | None:
    return next((p for p in points if p[2] <= target), None)


def small_manifest(rounds: int, steps: int) -> dict[str, Any]:
    doc = lm_manifest(0, rounds)
    doc["metadata"]["name"] = "lm-small"
    spec = doc["spec"]
    spec["task"]["options"].update({"preset": "small", "context": 128, "evalTokens": 2048})
    spec["training"].update({"syncEvery": steps, "batchSize": 2, "roundDeadlineSeconds": 1800})
    return doc


def peak_rss(logs: Path) -> dict[str, int]:
    """Node id -> peak RSS in MiB, from the exit line of each node's log."""
    peaks = {}
    for log in sorted(logs.glob("*.log")):
        for line in log.read_text(errors="replace").splitlines():
            if (m := PEAK_LINE.search(line)) is not None:
                peaks[m["node"]] = int(m["rss"])
    return peaks


def small_run(rounds: int, steps: int, output: Path) -> dict[str, Any]:
    doc = small_manifest(rounds, steps)
    swarm = LocalSwarm(parse_manifest(doc), output)
    result = swarm.run(timeout=3600)
    lines = swarm.metrics_lines()
    return {
        "phase": result["phase"],
        "rounds": len(lines),
        "local_steps": steps,
        "final_loss": lines[-1]["testLoss"] if lines else None,
        "wall_seconds": lines[-1]["wallSeconds"] if lines else None,
        "bytes": lines[-1]["bytesSent"] if lines else None,
        "dense_equivalent_bytes": lines[-1]["denseEquivalentBytes"] if lines else None,
        "peak_rss_mib": peak_rss(output / "logs"),
    }


@dataclass
class Arms:
    """Both arms' evaluations, one list per seed."""

    ddp: list[list[Point]] = field(default_factory=list)
    swarm: list[list[Point]] = field(default_factory=list)
    params: int = 0


def _cell(hit: Point | None, sync: str) -> str:
    if hit is None:
        return "not reached"
    steps = f" ({hit[1]} steps)" if hit[1] != hit[0] else ""
    return f"{sync} {hit[0]}{steps}, {hit[3] / 1e6:,.1f} MB, {hit[4]:.0f} s"


def targets_table(arms: Arms, targets: list[float]) -> tuple[str, dict[float, list[float]]]:
    """One row per target and seed: each arm's first evaluation reaching it, and the bytes ratio."""
    rows: list[list[object]] = []
    ratios: dict[float, list[float]] = {}
    for target in targets:
        ratios[target] = []
        for seed, (ddp, swarm) in enumerate(zip(arms.ddp, arms.swarm, strict=True)):
            d, w = first_reaching(ddp, target), first_reaching(swarm, target)
            ratio = d[3] / w[3] if d is not None and w is not None else None
            if ratio is not None:
                ratios[target].append(ratio)
            rows.append(
                [target, seed, _cell(d, "step"), _cell(w, "round"), f"{ratio:,.0f}x" if ratio else "-"]
            )
    header = [
        "loss target",
        "seed",
        "DDP: first reaching it",
        "swarm: first reaching it",
        "DDP / swarm bytes",
    ]
    return markdown_table(header, rows), ratios


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--target", type=float, default=2.5, help="validation loss DDP trains to")
    parser.add_argument(
        "--also",
        type=float,
        nargs="*",
        default=[3.0, 2.8, 2.6],
        help="looser targets, read off the same runs",
    )
    parser.add_argument("--rounds", type=int, default=16, help="rounds of the swarm runs")
    parser.add_argument("--seeds", type=int, default=1, help="seeds 0 .. N-1, the same for both arms")
    parser.add_argument("--ddp-max-steps", type=int, default=2000)
    parser.add_argument("--ddp-eval-every", type=int, default=20)
    parser.add_argument("--small-rounds", type=int, default=3)
    parser.add_argument("--small-steps", type=int, default=2)
    parser.add_argument("--skip-small", action="store_true", help="only the bytes-to-target part")
    parser.add_argument("--quick", action="store_true", help="every code path, small sizes (a smoke test)")
    parser.add_argument("--output", type=Path, help="where the swarm runs' files go (default: a temp dir)")
    parser.add_argument("--no-write", action="store_true", help="print only, leave results/ alone")
    args = parser.parse_args(argv)
    if args.quick:
        args.target, args.also, args.rounds, args.ddp_max_steps = 3.5, [4.5], 2, 60
        args.ddp_eval_every, args.small_rounds, args.small_steps = 5, 1, 1
    info = start_run("benchmarks.bench_lm", argv)
    arms, small = Arms(), None
    with tempfile.TemporaryDirectory() as tmp:
        output = args.output or Path(tmp)
        for seed in range(args.seeds):
            doc = lm_manifest(seed, args.rounds)
            ddp, arms.params = ddp_points(doc, args.target, seed, args.ddp_max_steps, args.ddp_eval_every)
            arms.ddp.append(ddp)
            arms.swarm.append(swarm_points(doc, output / f"swarm-{seed}"))
            print(json.dumps({"seed": seed, "ddp": arms.ddp[-1], "swarm": arms.swarm[-1]}), flush=True)
        if not args.skip_small:
            small = small_run(args.small_rounds, args.small_steps, output / "small")
            print(json.dumps({"small": small}), flush=True)
    body = report(args, arms, small)
    print(body)
    if not args.no_write:
        title = "The language-model task on CPU: bytes to a validation loss vs DDP, and the 25 M preset"
        write_result("lm", title, info, body)


def report(args: argparse.Namespace, arms: Arms, small: dict[str, Any] | None) -> str:
    spec = yaml.safe_load(LM.read_text())["spec"]
    targets = sorted({args.target, *args.also}, reverse=True)
    table, ratios = targets_table(arms, targets)
    summary = markdown_table(
        ["loss target", "DDP / swarm bytes, mean (min-max) over seeds"],
        [[t, mean_range(r, "{:.0f}") + "x" if r else "-"] for t, r in ratios.items()],
    )
    curves = "\n".join(
        f"- seed {seed}: DDP (step, loss) {_thin([(p[0], p[2]) for p in d], 12)}; "
        f"swarm (round, loss) {_thin([(p[0], p[2]) for p in w], 12)}"
        for seed, (d, w) in enumerate(zip(arms.ddp, arms.swarm, strict=True))
    )
    h = spec["training"]["syncEvery"]
    text = (
        f"## (a) Bytes to a validation loss (uniform guess: ln 256 = {math.log(256):.2f} nats per byte)\n\n"
        f"The `tiny` preset ({arms.params:,} parameters), {WORKERS} workers, batch "
        f"{spec['training']['batchSize']} per worker, Adam lr {spec['training']['innerOptimizer']['lr']}, "
        f"the same corpus, windows and validation subset ({spec['task']['options']['evalTokens']} tokens), "
        f"seeds 0-{args.seeds - 1}. Swarm: examples/lm.yaml (H = {h} local steps per round, top-1% "
        f"updates, delta broadcast), {args.rounds} rounds, evaluated every round. DDP: evaluated every "
        f"{args.ddp_eval_every} steps, run until loss {args.target} (at most {args.ddp_max_steps} steps); "
        "the looser targets are read off the same runs. Steps are local steps per worker (DDP: "
        "one all-reduce each); seconds are wall time from the start of training, evaluations included.\n\n"
        f"{summary}\n\n{table}\n\nLoss curves (thinned):\n\n{curves}\n"
    )
    if small is not None:
        peaks = small["peak_rss_mib"]
        rows = [[node, f"{mib:,}"] for node, mib in sorted(peaks.items())]
        text += (
            f"\n## (b) The `small` preset (~25 M parameters), {WORKERS} workers\n\n"
            f"examples/lm.yaml with `preset: small`, context 128, batch 2, {small['local_steps']} local "
            f"steps per round, evalTokens 2048: phase **{small['phase']}** after {small['rounds']} rounds "
            f"in {small['wall_seconds']:.0f} s; {small['bytes'] / 1e6:.1f} MB sent "
            f"(dense fp32 equivalent {small['dense_equivalent_bytes'] / 1e6:.1f} MB); final validation "
            f"loss {small['final_loss']:.3f}.\n\n"
            "Peak RSS per process (ru_maxrss, from each node's exit line):\n\n"
            + markdown_table(["node", "peak RSS (MiB)"], rows)
            + "\n"
        )
    return text


def _thin(curve: list[tuple[int, float]], most: int) -> str:
    """At most `most` points of a curve, evenly spaced, always with the last one."""
    if not curve:
        return "-"
    stride = max(1, math.ceil(len(curve) / most))
    picked = [*curve[::stride][: most - 1], curve[-1]] if len(curve) > most else curve
    return ", ".join(f"({x}, {y:.3f})" for x, y in picked)


if __name__ == "__main__":
    main()
