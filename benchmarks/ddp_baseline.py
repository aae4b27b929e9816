"""The baseline we compare the swarm against: torch DDP over gloo on the digits task.

    python -m benchmarks.ddp_baseline [--workers 8] [--target 0.95] [--max-steps 3000] [--seed 0]

The same model, data and workers as examples/digits.yaml (swarm_worker.training.tasks: scikit-learn's
digits, 80/20 split with a fixed seed, features standardised with the train split's statistics,
MLP 64-128-10 with ReLU; iid shards by rank; batch 32 per worker; SGD lr 0.1), trained with
DistributedDataParallel, gloo backend, one process per worker on 127.0.0.1. Every `--eval-every`
steps each rank evaluates the (identical) model on the test split, without communicating, and all
stop at the first evaluation with test accuracy >= target.

Bytes on the wire, analytically: ring all-reduce of the gradients moves 2·(n-1)/n · model_bytes
per worker per step, so n workers move 2·(n-1) · model_bytes per step in all. The loopback
interface's byte counter (/proc/net/dev, `lo`) around the training loop is reported as a cross-check:
it includes TCP/IP headers, gloo's own algorithm choice and any other loopback traffic on the machine.

Prints one JSON line: {"steps_to_95": ..., "bytes_to_95": ..., ...}; writes
benchmarks/results/ddp.md (not with --no-write).

`run_ddp_baseline` also trains other tasks for other benchmarks (benchmarks/bench_lm.py: the `lm`
task with Adam): `task`, `options`, the inner optimizer, the batch, and `goal` "loss" (stop at the
first test loss <= target) instead of "accuracy" (>= target); `curve` holds every evaluation.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.nn.parallel import DistributedDataParallel

from benchmarks.common import markdown_table, start_run, write_result
from swarm_worker.training.tasks import batches, build_task, evaluate, initial_model, shard_indices

BYTES_FORMULA = "bytes per step = n_workers * 2*(n-1)/n * model_bytes  (ring all-reduce of fp32 gradients)"


def loopback_bytes() -> int | None:
    """Bytes received on `lo` so far (equal to bytes sent on a loopback interface), if Linux."""
    try:
        for line in Path("/proc/net/dev").read_text().splitlines():
            name, _, counters = line.partition(":")
            if name.strip() == "lo":
                return int(counters.split()[0])
    except OSError:
        return None
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass(frozen=True)
class Training:
    """What DDP trains, and how: digits with SGD lr 0.1, batch 32, to an accuracy, by default."""

    task: str = "digits"
    options: dict[str, Any] = field(default_factory=dict)
    optimizer: str = "sgd"  # or "adam"
    lr: float = 0.1
    batch: int = 32
    goal: str = "accuracy"  # or "loss": stop at test loss <= target


def _worker(
    rank: int,
    world: int,
    target: float,
    max_steps: int,
    eval_every: int,
    seed: int,
    out: str,
    training: Training = Training(),
) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        bundle = build_task(training.task, training.options, seed)
        model = initial_model(bundle, seed)
        ddp = DistributedDataParallel(model)  # broadcasts rank 0's parameters
        optimizer_class = torch.optim.Adam if training.optimizer == "adam" else torch.optim.SGD
        optimizer = optimizer_class(ddp.parameters(), lr=training.lr)
        shard = shard_indices(bundle.train_y, world, rank, partition="iid", alpha=1.0, seed=seed)
        stream = batches(
            bundle.train_x[shard],
            bundle.train_y[shard],
            training.batch,
            torch.Generator().manual_seed(seed * 1000 + rank),
        )
        dist.barrier()
        lo_before, start = loopback_bytes(), time.perf_counter()
        step, loss, accuracy, reached, curve = 0, float("nan"), 0.0, False, []
        while step < max_steps:
            x, y = next(stream)
            optimizer.zero_grad(set_to_none=True)
            bundle.loss_fn(ddp(x), y).backward()  # DDP all-reduces (averages) the gradients here
            optimizer.step()
            step += 1
            if step % eval_every == 0:
                loss, accuracy = evaluate(model, bundle)
                curve.append(
                    (step, loss if training.goal == "loss" else accuracy, time.perf_counter() - start)
                )
                if (loss <= target) if training.goal == "loss" else (accuracy >= target):
                    reached = True
                    break
        dist.barrier()
        lo_after, wall = loopback_bytes(), time.perf_counter() - start
        if rank == 0:
            result = {
                "steps": step,
                "reached": reached,
                "accuracy": accuracy,
                "loss": loss,
                "wall_s": wall,
                "loopback_bytes": None if lo_before is None or lo_after is None else lo_after - lo_before,
                "curve": curve,
                "model_params": sum(p.numel() for p in model.parameters()),
            }
            Path(out).write_text(json.dumps(result))
    finally:
        dist.destroy_process_group()


def run_ddp_baseline(
    workers: int = 8,
    target: float = 0.95,
    max_steps: int = 3000,
    seed: int = 0,
    eval_every: int = 1,
    training: Training = Training(),
) -> dict[str, Any]:
    """Train digits (or `training`'s task) with DDP (gloo) until test accuracy >= target (or its
    loss <= target); steps and bytes it took."""
    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(_free_port())
    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    with tempfile.TemporaryDirectory() as tmp:
        out = str(Path(tmp) / "rank0.json")
        mp.spawn(
            _worker,
            args=(workers, target, max_steps, eval_every, seed, out, training),
            nprocs=workers,
            join=True,
        )
        rank0 = json.loads(Path(out).read_text())
    model_bytes = rank0["model_params"] * 4
    per_step = workers * 2 * (workers - 1) / workers * model_bytes
    steps = rank0["steps"]
    label = f"{round(target * 100):d}"
    return {
        f"steps_to_{label}": steps if rank0["reached"] else None,
        f"bytes_to_{label}": round(steps * per_step) if rank0["reached"] else None,
        "reached": rank0["reached"],
        "steps_to_target": steps if rank0["reached"] else None,
        "bytes_to_target": round(steps * per_step) if rank0["reached"] else None,
        "curve": rank0["curve"],
        "target": target,
        "final_accuracy": rank0["accuracy"],
        "final_loss": rank0["loss"],
        "steps_run": steps,
        "workers": workers,
        "model_params": rank0["model_params"],
        "model_bytes": model_bytes,
        "bytes_per_step": per_step,
        "bytes_formula": BYTES_FORMULA,
        "bytes_analytic": round(steps * per_step),
        "loopback_bytes_measured": rank0["loopback_bytes"],
        "eval_every": eval_every,
        "seed": seed,
        "wall_s": round(rank0["wall_s"], 2),
        "backend": "gloo",
        "torch": torch.__version__,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--target", type=float, default=0.95)
    parser.add_argument("--max-steps", type=int, default=3000)
    parser.add_argument("--eval-every", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args(argv)
    run = start_run("benchmarks.ddp_baseline", argv)
    result = run_ddp_baseline(args.workers, args.target, args.max_steps, args.seed, args.eval_every)
    result.pop("curve")  # every evaluation: for other benchmarks, too long for this file
    print(json.dumps(result), flush=True)
    if not args.no_write:
        label = f"{round(args.target * 100):d}"
        measured = result["loopback_bytes_measured"]
        table = markdown_table(
            ["workers", "params", f"steps to {label}%", f"bytes to {label}% (analytic)", "lo bytes measured",
             "measured / analytic", "wall s"],
            [[
                result["workers"], result["model_params"], result[f"steps_to_{label}"],
                f"{result['bytes_analytic'] / 1e6:.1f} MB",
                "n/a" if measured is None else f"{measured / 1e6:.1f} MB",
                "n/a" if measured is None else f"{measured / result['bytes_analytic']:.2f}",
                result["wall_s"],
            ]],
        )  # fmt: skip
        body = (
            table + f"\n\n{BYTES_FORMULA}. The measured figure is the `lo` rx counter of /proc/net/dev "
            "between two barriers around the training loop: it adds TCP/IP headers and gloo's own "
            "protocol, and any other process's loopback traffic on this shared machine.\n\nJSON:\n\n"
            "```json\n" + json.dumps(result) + "\n```"
        )
        write_result(
            "ddp", f"DDP (gloo) baseline on digits: steps and bytes to {label}% test accuracy", run, body
        )


if __name__ == "__main__":
    main()
