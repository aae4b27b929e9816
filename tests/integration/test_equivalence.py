"""The swarm computes what it claims: with compression off, H = 1, mean aggregation and outer SGD
lr 1, R rounds of the real multi-process swarm (two-level tree) equal R steps of single-process SGD
on the average of the same workers' gradients. A sign error in the pseudo-gradient Δ = θ - θ_local
(the root must subtract it) would make the swarm climb the loss and fail this test."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from swarm_worker.local.launcher import LocalSwarm
from swarm_worker.node.checkpoint import load_checkpoint
from swarm_worker.training.steps import flat_parameters
from swarm_worker.training.tasks import batches, build_task, initial_model, shard_indices
from tests.integration.swarm_helpers import manifest

pytestmark = pytest.mark.integration
ROUNDS = 4


def reference_parameters(m_spec: object, rounds: int) -> torch.Tensor:
    """Plain synchronous data-parallel SGD in one process: θ ← θ - lr · mean_i g_i(θ)."""
    spec = m_spec  # a SwarmSpec
    n = spec.workers.replicas  # type: ignore[attr-defined]
    tr = spec.training  # type: ignore[attr-defined]
    bundle = build_task(spec.task.name, spec.task.options, tr.seed)  # type: ignore[attr-defined]
    model = initial_model(bundle, tr.seed)
    streams = []
    for rank in range(n):
        shard = shard_indices(bundle.train_y, n, rank, partition="iid", alpha=0.5, seed=tr.seed)
        gen = torch.Generator().manual_seed(tr.seed * 1_000_003 + rank)  # the worker's batch order
        streams.append(batches(bundle.train_x[shard], bundle.train_y[shard], tr.batch_size, gen))
    lr = tr.inner_optimizer.lr
    for _ in range(rounds):
        grads = []
        for stream in streams:
            x, y = next(stream)
            model.zero_grad()
            bundle.loss_fn(model(x), y).backward()
            grads.append(torch.cat([p.grad.flatten() for p in model.parameters()]))  # type: ignore[union-attr]
        mean_grad = torch.stack(grads).mean(dim=0)
        with torch.no_grad():
            offset = 0
            for p in model.parameters():
                p -= lr * mean_grad[offset : offset + p.numel()].view_as(p)
                offset += p.numel()
    return flat_parameters(model)


def test_swarm_equals_single_process_gradient_averaging(tmp_path: Path) -> None:
    m = manifest(
        workers={"replicas": 4},
        topology={"branchingFactor": 2},  # 4 workers -> 2 aggregators -> root
        training={
            "rounds": ROUNDS,
            "syncEvery": 1,
            "innerOptimizer": {"name": "sgd", "lr": 0.1},
            "outerOptimizer": {"name": "sgd", "lr": 1.0},
            "roundDeadlineSeconds": 120,
        },
        compression={"method": "none"},
        robustness={"rule": "mean"},
        checkpoint={"everyRounds": 1},
    )
    result = LocalSwarm(m, tmp_path).run(timeout=300)
    assert result["round"] == ROUNDS
    state = load_checkpoint(tmp_path / "checkpoints")
    assert state is not None
    assert state["round"] == ROUNDS
    swarm_theta = state["theta"]
    expected = reference_parameters(m.spec, ROUNDS)
    initial = flat_parameters(initial_model(build_task("digits", {}, 0), 0))
    assert not torch.allclose(expected, initial), "the reference did not move"
    torch.testing.assert_close(swarm_theta, expected, rtol=1e-5, atol=1e-6)
