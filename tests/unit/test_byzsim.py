"""The Byzantine-robust training simulation behind benchmarks/karimireddy.py: shards, attacks,
bucketing wiring, per-worker gradients, and that an attack-free run learns."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch

from benchmarks.byzsim import (
    ATTACKS,
    Method,
    SimConfig,
    batch_indices,
    byzantine_messages,
    make_shards,
    mlp_gradients,
    run,
)
from swarm_worker.simulation.attacks import alie_z
from swarm_worker.training.tasks import TaskBundle, build_task, evaluate, initial_model

N, F = 25, 5


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Iterator[None]:
    # Tiny matmuls: extra threads only add contention (tenfold on a busy machine).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def bundle() -> TaskBundle:
    return build_task("digits", {}, 0)


def test_honest_shards_are_contiguous_runs_of_the_label_sorted_training_set(bundle: TaskBundle) -> None:
    shards = make_shards(bundle, N, F, flip=False, seed=0)
    honest_labels = torch.cat(shards.y[: N - F])
    assert torch.equal(honest_labels, torch.sort(bundle.train_y).values)
    assert sum(len(x) for x in shards.x[: N - F]) == len(bundle.train_x)
    # Non-iid: every honest worker sees at most two digits.
    assert max(len(set(y.tolist())) for y in shards.y[: N - F]) <= 2


def test_byzantine_workers_hold_iid_data_whose_labels_flip_only_under_label_flip(
    bundle: TaskBundle,
) -> None:
    clean = make_shards(bundle, N, F, flip=False, seed=0)
    flipped = make_shards(bundle, N, F, flip=True, seed=0)
    for worker in range(N - F):
        assert torch.equal(clean.y[worker], flipped.y[worker])
    for worker in range(N - F, N):
        assert len(set(clean.y[worker].tolist())) == 10
        assert len(clean.x[worker]) == len(clean.x[0])
        assert torch.equal(flipped.y[worker], 9 - clean.y[worker])


def test_batches_walk_each_shard_without_repeats_within_an_epoch(bundle: TaskBundle) -> None:
    shards = make_shards(bundle, N, F, flip=False, seed=0)
    indices = batch_indices(shards, steps=2, batch_size=32, generator=torch.Generator().manual_seed(0))
    assert indices.shape == (2, N, 32)
    starts = torch.tensor([0, *(len(x) for x in shards.x)]).cumsum(0)
    for worker in range(N):
        picked = indices[:, worker].flatten()
        assert len(set(picked.tolist())) == 64  # 2 batches of 32 from a shard of 71-72 examples
        assert bool(((picked >= starts[worker]) & (picked < starts[worker + 1])).all())


def test_mlp_gradients_match_autograd_worker_by_worker(bundle: TaskBundle) -> None:
    model = initial_model(bundle, 0)
    x = bundle.train_x[: 4 * 8].view(4, 8, -1)
    y = bundle.train_y[: 4 * 8].view(4, 8)
    expected = []
    for xb, yb in zip(x, y, strict=True):
        grads = torch.autograd.grad(bundle.loss_fn(model(xb), yb), list(model.parameters()))
        expected.append(torch.cat([g.flatten() for g in grads]))
    torch.testing.assert_close(mlp_gradients(model, x, y), torch.stack(expected), atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("attack", ATTACKS, ids=ATTACKS)
def test_attacks_replace_exactly_the_byzantine_rows_as_specified(attack: str) -> None:
    generator = torch.Generator().manual_seed(0)
    honest = torch.randn(N - F, 7, generator=generator)
    own = torch.randn(F, 7, generator=generator)
    sent = byzantine_messages(attack, own, honest, n=N, f=F, generator=generator)
    expected = {
        "none": own,
        "label-flip": own,  # the flip happened in the data; the message is the honest protocol's
        "bit-flip": -own,
        "mimic": honest[0].expand(F, -1),
        "ipm": (-0.1 * honest.mean(0)).expand(F, -1),
        "alie": (honest.mean(0) - alie_z(N, F) * honest.std(0)).expand(F, -1),
    }[attack]
    assert sent.shape == (F, 7)
    torch.testing.assert_close(sent, expected, atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize(
    ("method", "bucket_size", "expected"),
    [
        (Method("CM", "median"), 0, ()),
        (Method("CM", "median"), 1, ()),
        (Method("CM", "median"), 2, (("bucketing", 2.0),)),
        (Method("ours", "centered-clipping", (("nnm", None),)), 0, (("nnm", None),)),
        (Method("ours", "centered-clipping", (("nnm", None),)), 2, (("nnm", None), ("bucketing", 2.0))),
    ],
    ids=["no bucketing", "s=1 is none", "s=2", "nnm", "nnm then bucketing"],
)
def test_bucketing_is_appended_after_the_methods_own_steps(
    method: Method, bucket_size: int, expected: tuple[tuple[str, float | None], ...]
) -> None:
    assert SimConfig(method, bucket_size=bucket_size).pre_aggregation() == expected


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"attack": "gaussian"}, "unknown attack"),
        ({"f": 25}, "0 <= f < n"),
        ({"momentum": 1.0}, "momentum"),
        ({"bucket_size": -1}, "bucket_size"),
    ],
    ids=["unknown attack", "f = n", "momentum 1", "negative bucket size"],
)
def test_bad_configs_are_refused(changes: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        SimConfig(Method("CM", "median"), **changes)  # type: ignore[arg-type]


def test_an_attack_free_run_learns_and_is_deterministic(bundle: TaskBundle) -> None:
    config = SimConfig(Method("CClip", "centered-clipping"), bucket_size=2, momentum=0.9, steps=40, seed=1)
    untrained = evaluate(initial_model(bundle, 1), bundle)[1]
    first, second = run(config, bundle), run(config, bundle)
    assert first == second
    assert not first.diverged
    assert first.accuracy > untrained + 0.4
