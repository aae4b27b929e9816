"""Which local GPUs each `swarm run` node process sees, and its share of them.

The same shares as on Kubernetes (docs/gpu.md), applied to this machine's GPUs:

- `gpus: g` with 0 < g < 1: the process gets one GPU and SWARM_GPU_FRACTION=g (node/device.py caps
  its CUDA memory at that share). GPUs are filled one by one: floor(1/g) processes share GPU 0, the
  next ones GPU 1, and so on.
- `gpus: g` with g >= 1: ceil(g) whole GPUs of its own, no cap.
- `gpus: 0` (the default): no placement; the process sees every GPU (CUDA's device 0) uncapped.

Workers are placed when they would compute on CUDA (`workers.device: cuda`, or `auto` with a GPU
here); aggregators and the root only with `topology.aggregatorResources.gpus` > 0, after the
workers, on what the workers left. More processes than the GPUs hold is a one-line SpecError, never
a silent oversubscription. A process is told its GPUs by CUDA_VISIBLE_DEVICES, in the launcher's
own numbering (a launcher started with CUDA_VISIBLE_DEVICES=2,3 hands out 2 and 3).

GPUs are counted without CUDA (the launcher stays torch-free): CUDA_VISIBLE_DEVICES when set, else
`nvidia-smi -L`, else /proc/driver/nvidia/gpus/.
"""

from __future__ import annotations

import math
import os
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from swarm_contract.spec import SpecError, SwarmSpec
from swarm_contract.topology import Tree

CUDA_VISIBLE_DEVICES = "CUDA_VISIBLE_DEVICES"
#: The variable node/device.py reads (named there as GPU_FRACTION_ENV; not imported: it loads torch).
GPU_FRACTION_ENV = "SWARM_GPU_FRACTION"
PROC_GPUS = Path("/proc/driver/nvidia/gpus")
#: Slack for shares that add up to one GPU in floating point (10 x 0.1 is 0.9999999999999999).
EPS = 1e-9


@dataclass(frozen=True)
class Slot:
    """A process's GPUs, as indices into the launcher's list of GPUs, and its share of the one GPU
    it shares (None: whole GPUs, uncapped)."""

    gpus: tuple[int, ...]
    fraction: float | None = None


def place(shares: Sequence[float]) -> list[Slot | None]:
    """A slot for each process of `shares` (its `gpus`), in order; None for share 0 (not placed).

    A fraction goes to the first GPU with that much left, g >= 1 to the ceil(g) first untouched
    GPUs, on as many GPUs as that takes (`gpus_needed`).
    """
    left: list[float] = []  # capacity left on each GPU handed out so far
    slots: list[Slot | None] = []
    for share in shares:
        if share <= 0:
            slots.append(None)
        elif share < 1:
            index = next((i for i, free in enumerate(left) if free >= share - EPS), len(left))
            if index == len(left):
                left.append(1.0)
            left[index] -= share
            slots.append(Slot((index,), share))
        else:
            wanted = math.ceil(share)
            untouched = [i for i, free in enumerate(left) if free >= 1 - EPS][:wanted]
            fresh = list(range(len(left), len(left) + wanted - len(untouched)))
            left.extend([1.0] * len(fresh))
            for i in untouched + fresh:
                left[i] = 0.0
            slots.append(Slot(tuple(sorted(untouched + fresh))))
    return slots


def gpus_needed(slots: Sequence[Slot | None]) -> int:
    """How many GPUs the slots of `place` use (their highest index + 1)."""
    return max((i + 1 for slot in slots if slot is not None for i in slot.gpus), default=0)


def local_gpus(environ: Mapping[str, str] | None = None) -> list[str]:
    """This machine's GPUs as CUDA_VISIBLE_DEVICES entries: its own entries when set (up to the
    first empty or negative one, where CUDA stops reading), else indices 0..n-1."""
    env = os.environ if environ is None else environ
    if CUDA_VISIBLE_DEVICES in env:
        visible: list[str] = []
        for entry in (e.strip() for e in env[CUDA_VISIBLE_DEVICES].split(",")):
            if not entry or entry.startswith("-"):
                break
            visible.append(entry)
        return visible
    return [str(i) for i in range(_gpu_count())]


def _gpu_count() -> int:
    smi = shutil.which("nvidia-smi")
    if smi is not None:
        try:
            out = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=20, check=True)
        except (OSError, subprocess.SubprocessError):
            pass  # a driver that does not answer: try the kernel's list
        else:
            return sum(line.startswith("GPU ") for line in out.stdout.splitlines())
    try:
        return sum(1 for _ in PROC_GPUS.iterdir())
    except OSError:
        return 0


def node_shares(spec: SwarmSpec, tree: Tree, gpu_count: int) -> dict[str, float]:
    """The `gpus` of every node that computes on CUDA here, workers first (placement order)."""
    workers = spec.workers
    if workers.device == "cuda" and gpu_count == 0:
        raise SpecError(
            "workers.device: cuda, but this machine has no GPU (nvidia-smi, CUDA_VISIBLE_DEVICES)"
        )
    shares: dict[str, float] = {}
    if workers.device == "cuda" or (workers.device == "auto" and gpu_count > 0):
        shares.update((w.id, workers.resources.gpus) for w in tree.workers)
    aggregator_gpus = spec.topology.aggregator_resources.gpus
    if aggregator_gpus > 0 and gpu_count > 0:
        others = [n for n in tree.nodes.values() if n.role != "worker"]
        shares.update((n.id, aggregator_gpus) for n in sorted(others, key=lambda n: (-n.level, n.id)))
    return shares


def plan_local_gpus(spec: SwarmSpec, tree: Tree, gpus: Sequence[str]) -> dict[str, Slot | None]:
    """The slot of every node that computes on CUDA (None: it sees all GPUs, uncapped); nodes on
    CPU are absent. SpecError, naming the numbers, when the GPUs cannot hold the shares."""
    shares = node_shares(spec, tree, len(gpus))
    slots = place(list(shares.values()))
    needed = gpus_needed(slots)
    if needed > len(gpus):
        roles = [tree.node(node_id).role for node_id, share in shares.items() if share > 0]
        workers, others = roles.count("worker"), len(roles) - roles.count("worker")
        demand = []
        if workers:
            demand.append(f"{workers} workers with workers.resources.gpus {spec.workers.resources.gpus:g}")
        if others:
            gpus_each = spec.topology.aggregator_resources.gpus
            demand.append(
                f"{others} aggregator/root nodes with topology.aggregatorResources.gpus {gpus_each:g}"
            )
        raise SpecError(f"{' and '.join(demand)} need {needed} GPUs, this machine has {len(gpus)}")
    return dict(zip(shares, slots, strict=True))


def node_environ(base: Mapping[str, str], slot: Slot | None, gpus: Sequence[str]) -> dict[str, str]:
    """The environment of a node placed in `slot` (None: every GPU, uncapped): its GPUs in
    CUDA_VISIBLE_DEVICES, its share in SWARM_GPU_FRACTION, and no inherited share otherwise."""
    env = {k: v for k, v in base.items() if k != GPU_FRACTION_ENV}
    if slot is None:
        return env
    env[CUDA_VISIBLE_DEVICES] = ",".join(gpus[i] for i in slot.gpus)
    if slot.fraction is not None:
        env[GPU_FRACTION_ENV] = f"{slot.fraction:g}"
    return env


def describe(plan: Mapping[str, Slot | None], gpus: Sequence[str]) -> str | None:
    """One line for `swarm run`'s header, e.g. `GPU 0: worker-0 (0.5), worker-1 (0.5); GPU 1: ...`;
    None when no node is placed."""
    by_gpu: dict[str, list[str]] = {}
    shared = [node_id for node_id, slot in plan.items() if slot is None]
    for node_id, slot in plan.items():
        if slot is not None:
            label = f"{node_id} ({slot.fraction:g})" if slot.fraction is not None else node_id
            by_gpu.setdefault(",".join(gpus[i] for i in slot.gpus), []).append(label)
    parts = [f"GPU {key}: {', '.join(nodes)}" for key, nodes in by_gpu.items()]
    if shared:
        parts.append(f"all GPUs: {', '.join(shared)}")
    return "; ".join(parts) or None
