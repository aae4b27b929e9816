"""Each rank's data and local trainer: its shard of the training split, its batch order, its
inner optimizer. Deterministic from the spec (seed, partition, replicas), so any process can rebuild
any rank's stream: the worker for itself, the attack simulation for the ranks it imitates.

The shard is moved once to the device the rank trains on (the model's), so batches are cut on the
device; the batch order is drawn on the CPU from the rank's generator, so it is the same sequence of
examples whatever the device.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch
from torch import nn

from swarm_contract.spec import SwarmSpec
from swarm_worker.training.steps import LocalTrainer, make_inner_optimizer
from swarm_worker.training.tasks import TaskBundle, batches, shard_indices

#: A change of a shard's labels, (n,) int64 -> (n,) int64 (the label-flip attack uses one).
Relabel = Callable[[torch.Tensor], torch.Tensor]


def batch_generator(spec: SwarmSpec, rank: int) -> torch.Generator:
    """The generator of rank's batch order; public, so an attacker can replay any rank's batches."""
    return torch.Generator().manual_seed(spec.training.seed * 1_000_003 + rank)


def model_device(model: nn.Module) -> torch.device:
    """The device of `model`'s parameters (CPU for a model without any)."""
    return next((p.device for p in model.parameters()), torch.device("cpu"))


def rank_batches(
    spec: SwarmSpec,
    bundle: TaskBundle,
    rank: int,
    *,
    relabel: Relabel | None = None,
    device: torch.device | None = None,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Rank's endless mini-batch stream, exactly as that rank's worker draws it, on `device` (CPU
    by default)."""
    shard = shard_indices(
        bundle.train_y,
        spec.workers.replicas,
        rank,
        partition=spec.task.partition,
        alpha=spec.task.dirichlet_alpha,
        seed=spec.training.seed,
    )
    x, y = bundle.train_x[shard], bundle.train_y[shard]
    if relabel is not None:
        y = relabel(y)
    if device is not None:
        x, y = x.to(device), y.to(device)
    return batches(x, y, spec.training.batch_size, batch_generator(spec, rank))


def honest_trainer(
    spec: SwarmSpec, bundle: TaskBundle, model: nn.Module, rank: int, *, relabel: Relabel | None = None
) -> LocalTrainer:
    """Rank's local trainer on `model`: its own inner optimizer and batch stream, H local steps, all
    on the model's device."""
    return LocalTrainer(
        model,
        make_inner_optimizer(model, spec.training.inner_optimizer),
        rank_batches(spec, bundle, rank, relabel=relabel, device=model_device(model)),
        bundle.loss_fn,
        local_steps=spec.training.sync_every,
        alpha=spec.training.alpha,
    )
