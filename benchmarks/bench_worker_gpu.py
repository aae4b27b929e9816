"""Worker throughput on its device: samples/s of a swarm worker's rounds vs a plain PyTorch training
loop on the same device, same model, batch, optimizer and data, in one run.

    python -m benchmarks.bench_worker_gpu --device cuda [--task lm] [--preset base] [--batch-size 8]
        [--local-steps 20] [--rounds 5] [--selector sampled]
    python -m benchmarks.bench_worker_gpu --device cpu --quick        (every code path, tiny preset)

Swarm arm, one round = what roles/worker.py does per round besides waiting on the network:
    model_digest(θ_r)                      the digest every worker logs (computed on the device)
    LocalTrainer.run_round(θ_r)            load θ_r into the model, H local steps, Δ = θ_r - θ_local
    ErrorFeedbackCompressor.compress(Δ)    a = Δ + e, top-k, e = a - sent, k values to the host
    encode_message(update)                 the codec's frames, as sent
    decode + apply_model                   the root's delta comes back (here the worker's own sent
                                           update, negated: the root of a one-worker swarm) and is
                                           applied to θ on the device
Plain arm, one round: the same H steps as a textbook loop (zero_grad, forward, loss, backward,
step) on its own copy of the model and optimizer, from the same batch stream (the rank's shard on
the device, `training.shards.rank_batches`), so the two arms differ only by the swarm's work.

Rounds alternate between the arms (one warm-up round each first); torch.cuda.synchronize() ends every
phase on CUDA. samples/s = rounds · H · batch / seconds; the ratio is swarm / plain. Both arms train
in fp32 (no autocast: the worker does not use it, so neither arm does). The spec is
examples/lm.yaml with --task/--preset/--batch-size/--local-steps/--selector applied. Writes
benchmarks/results/worker_gpu.md (not with --no-write).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from benchmarks.common import markdown_table, median, start_run, write_result
from swarm_contract.manifest import load_manifest, parse_spec, spec_to_dict
from swarm_contract.spec import SwarmSpec
from swarm_worker.maths.compression import VALUE_DTYPES, ErrorFeedbackCompressor, SparseVector
from swarm_worker.node.model_sync import apply_model, model_digest
from swarm_worker.protocol.codec import Message, decode
from swarm_worker.protocol.transport import encode_message
from swarm_worker.training.shards import honest_trainer, rank_batches
from swarm_worker.training.steps import LocalTrainer, flat_parameters, make_inner_optimizer
from swarm_worker.training.tasks import TaskBundle, build_task, initial_model

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "lm.yaml"
PHASES = ("digest", "train", "compress", "encode", "apply")


def bench_spec(args: argparse.Namespace) -> SwarmSpec:
    doc = spec_to_dict(load_manifest(EXAMPLE).spec)
    doc["task"]["name"] = args.task
    doc["task"]["options"] = {"preset": args.preset} if args.task == "lm" else {}
    doc["training"]["batchSize"] = args.batch_size
    doc["training"]["syncEvery"] = args.local_steps
    doc["compression"]["selector"] = args.selector
    return parse_spec(doc)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@dataclass
class SwarmWorker:
    """One worker's state between rounds: θ, its trainer and its compressor, on the device."""

    spec: SwarmSpec
    trainer: LocalTrainer
    compressor: ErrorFeedbackCompressor
    theta: torch.Tensor
    round: int = 0
    wire_bytes: int = 0

    def run_round(self, device: torch.device) -> dict[str, float]:
        """One round; seconds per phase (PHASES)."""
        seconds: dict[str, float] = {}
        clock = time.perf_counter()

        def lap(phase: str) -> None:
            nonlocal clock
            sync(device)
            now = time.perf_counter()
            seconds[phase] = now - clock
            clock = now

        model_digest(self.theta)
        lap("digest")
        result = self.trainer.run_round(self.theta)
        lap("train")
        sent = self.compressor.compress(result.delta)
        lap("compress")
        meta = {"samples": result.samples, "workers": 1, "loss": result.loss, "nodes": [], "traffic": []}
        update = encode_message(Message("update", "bench", self.round, "worker-0", meta, {"delta": sent}))
        self.wire_bytes = update.nbytes
        lap("encode")
        back = SparseVector(indices=sent.indices, values=-sent.values, numel=sent.numel)
        model_meta = {"base_round": self.round, "final": False}
        frames = encode_message(
            Message("model", "bench", self.round + 1, "root", model_meta, {"theta": back})
        )
        theta = apply_model(self.theta, self.round, decode(frames.frames))
        assert theta is not None, "the root's delta did not fit"
        self.theta, self.round = theta, self.round + 1
        lap("apply")
        return seconds


def plain_round(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    stream: Iterator[tuple[torch.Tensor, torch.Tensor]],
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    steps: int,
    device: torch.device,
) -> float:
    """H steps of a textbook training loop; seconds."""
    started = time.perf_counter()
    model.train()
    for _ in range(steps):
        x, y = next(stream)
        optimizer.zero_grad(set_to_none=True)
        loss = loss_fn(model(x), y)
        loss.backward()  # type: ignore[no-untyped-call]  # torch's stub leaves it untyped
        optimizer.step()
    sync(device)
    return time.perf_counter() - started


def build_arms(
    spec: SwarmSpec, bundle: TaskBundle, device: torch.device
) -> tuple[SwarmWorker, Callable[[], float]]:
    seed = spec.training.seed
    swarm_model = initial_model(bundle, seed).to(device)  # as node/runtime.py: built on CPU, moved
    comp = spec.compression
    numel = sum(p.numel() for p in swarm_model.parameters())
    worker = SwarmWorker(
        spec=spec,
        trainer=honest_trainer(spec, bundle, swarm_model, 0),
        compressor=ErrorFeedbackCompressor(
            numel, ratio=comp.ratio, value_dtype=VALUE_DTYPES[comp.value_dtype], selector=comp.selector
        ),
        theta=flat_parameters(swarm_model),
    )
    plain_model = initial_model(bundle, seed).to(device)
    optimizer = make_inner_optimizer(plain_model, spec.training.inner_optimizer)
    stream = rank_batches(spec, bundle, 0, device=device)
    steps = spec.training.sync_every

    def plain() -> float:
        return plain_round(plain_model, optimizer, stream, bundle.loss_fn, steps, device)

    return worker, plain


def measure(args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    spec = bench_spec(args)
    bundle = build_task(spec.task.name, spec.task.options, spec.training.seed)
    worker, plain = build_arms(spec, bundle, device)
    numel = worker.theta.numel()
    worker.run_round(device)  # warm-up: allocator, kernels, cuBLAS handles
    plain()
    swarm_phases: list[dict[str, float]] = []
    plain_seconds: list[float] = []
    for _ in range(args.rounds):
        swarm_phases.append(worker.run_round(device))
        plain_seconds.append(plain())
    samples = args.rounds * spec.training.sync_every * spec.training.batch_size
    swarm_total = sum(sum(p.values()) for p in swarm_phases)
    plain_total = sum(plain_seconds)
    return {
        "numel": numel,
        "k": worker.compressor.k,
        "swarm_sps": samples / swarm_total,
        "plain_sps": samples / plain_total,
        "phases_ms": {ph: 1e3 * median([p[ph] for p in swarm_phases]) for ph in PHASES},
        "plain_round_ms": 1e3 * median(plain_seconds),
        "wire_bytes": worker.wire_bytes,
        "peak_gib": torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default="cuda", help="cuda (default) or cpu")
    parser.add_argument("--task", default="lm")
    parser.add_argument("--preset", default="base", help="lm preset: tiny, small, base (~100 M)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--local-steps", type=int, default=20, help="H, local steps per round")
    parser.add_argument("--rounds", type=int, default=5, help="timed rounds per arm")
    parser.add_argument("--selector", choices=("exact", "sampled"), default="sampled")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--quick", action="store_true", help="tiny preset, batch 4, H = 2, 2 rounds")
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args(argv)
    if args.quick:
        args.preset, args.batch_size, args.local_steps, args.rounds = "tiny", 4, 2, 2
    run = start_run("benchmarks.bench_worker_gpu", argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    r = measure(args, device)
    ratio = r["swarm_sps"] / r["plain_sps"]
    phases = r["phases_ms"]
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU (no GPU)"
    task = f"{args.task} {args.preset}" if args.task == "lm" else args.task
    header = [
        "device", "task", "parameters", "batch", "H", "plain samples/s", "swarm samples/s", "swarm / plain",
    ]  # fmt: skip
    rows = [[
        f"{device} ({name})", task, f"{r['numel']:,}", args.batch_size, args.local_steps,
        f"{r['plain_sps']:.1f}", f"{r['swarm_sps']:.1f}", f"{100 * ratio:.1f}%",
    ]]  # fmt: skip
    breakdown = markdown_table(
        ["plain round ms", *[f"swarm {ph} ms" for ph in PHASES], "update bytes", "k", "peak GPU GiB"],
        [[
            f"{r['plain_round_ms']:.1f}", *[f"{phases[ph]:.1f}" for ph in PHASES], f"{r['wire_bytes']:,}",
            f"{r['k']:,}", "n/a" if r["peak_gib"] is None else f"{r['peak_gib']:.2f}",
        ]],
    )  # fmt: skip
    table = markdown_table(header, rows)
    print(table)
    print(breakdown)
    if args.no_write:
        return
    cpu_label = (
        "**CPU run**: it shows that every code path runs; its ratio says nothing about a GPU (issue "
        "13's figure is the `base` preset with `--device cuda`).\n\n"
        if device.type == "cpu"
        else ""
    )
    body = (
        cpu_label
        + f"Device: **{device}** ({name}); selector {args.selector}; {args.rounds} timed rounds per arm, "
        "alternating, after one warm-up round each; fp32 in both arms (no autocast).\n\n"
        + table
        + "\n\nMedian milliseconds per round, and the swarm arm's phases (the plain arm is its train "
        "phase without the rest):\n\n"
        + breakdown
        + "\n\nsamples/s = rounds · H · batch / total seconds of the arm. The swarm arm is a worker's "
        "per-round work without the network wait: digest of θ_r, H local steps from θ_r (LocalTrainer), "
        "top-k with error feedback on the device and the k values to the host, the codec's encoding of "
        "the update, and the decoding and application of the returning model delta on the device. "
        "The plain arm is a textbook PyTorch loop on the same model, optimizer, batch size and batch "
        "stream."
    )
    write_result("worker_gpu", "Worker samples/s: swarm worker vs a plain PyTorch loop", run, body)


if __name__ == "__main__":
    main()
