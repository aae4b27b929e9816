"""Tasks: built-ins need no download, shards partition the data, entry points resolve or fail clearly."""

from __future__ import annotations

import pytest
import torch

from swarm_worker.training.tasks import (
    TaskBundle,
    TaskError,
    build_task,
    initial_model,
    resolve_task,
    shard_indices,
)


def test_digits_builds_offline_with_a_small_mlp() -> None:
    bundle = build_task("digits", {}, 0)
    assert bundle.train_x.shape[1] == 64
    assert len(bundle.train_x) + len(bundle.test_x) == 1797
    assert sum(p.numel() for p in initial_model(bundle, 0).parameters()) == 9_610


def test_mnist1d_is_generated_offline_with_a_model_of_millions_of_parameters() -> None:
    bundle = build_task("mnist1d", {"samples": 2000}, 0)
    assert bundle.train_x.shape[1] == 40
    assert set(bundle.train_y.unique().tolist()) <= set(range(10))
    params = sum(p.numel() for p in initial_model(bundle, 0).parameters())
    assert 4_000_000 < params < 5_000_000


def test_every_process_builds_the_same_initial_model() -> None:
    a = initial_model(build_task("digits", {}, 0), 7)
    b = initial_model(build_task("digits", {}, 0), 7)
    for pa, pb in zip(a.parameters(), b.parameters(), strict=True):
        assert torch.equal(pa, pb)


@pytest.mark.parametrize("partition", ["iid", "dirichlet"])
def test_shards_partition_the_training_set(partition: str) -> None:
    labels = build_task("digits", {}, 0).train_y
    shards = [shard_indices(labels, 8, r, partition=partition, alpha=0.5, seed=3) for r in range(8)]
    together = torch.cat(shards)
    assert len(together) == len(labels)
    assert len(together.unique()) == len(labels)


def test_dirichlet_shards_are_skewed() -> None:
    labels = build_task("digits", {}, 0).train_y
    shard = shard_indices(labels, 8, 0, partition="dirichlet", alpha=0.1, seed=3)
    counts = torch.bincount(labels[shard], minlength=10).float()
    assert counts.max() / counts.sum() > 0.3


def user_task(options: dict[str, object]) -> TaskBundle:
    return build_task("digits", options, 0)


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("nosuch", "neither a built-in task"),
        ("no_such_module_xyz:f", "cannot import module"),
        ("tests.unit.test_tasks:missing", "has no function"),
    ],
    ids=["unknown", "bad module", "bad function"],
)
def test_bad_task_names_fail_with_a_clear_message(name: str, message: str) -> None:
    with pytest.raises(TaskError, match=message):
        resolve_task(name)


def test_entry_point_task_resolves() -> None:
    assert build_task("tests.unit.test_tasks:user_task", {}, 0).num_classes == 10
