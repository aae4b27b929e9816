"""Training tasks: a model, its data and its loss, built the same way in every process.

Built-in tasks need no download:
- `digits`: scikit-learn's bundled 8x8 digits (1,797 images), an MLP 64-128-10 (9,610 parameters).
- `mnist1d`: procedurally generated 1-D digits from the `mnist1d` package (`make_dataset`, offline),
  an MLP 40-2048-2048-10 (4.3 M parameters) that exercises compression at a realistic size.
- `lm`: a GPT-style byte-level decoder (presets of about 1 M, 25 M and 100 M parameters) on the
  Python standard library's own sources (swarm_worker.training.lm has the options). Its metric is
  perplexity: `evaluate` returns (validation loss, next-byte accuracy) and reports show exp(loss).
A user's own task is `package.module:function`; the function takes the task's `options` mapping
and returns a `TaskBundle`. Every process builds the task from the same seed, so the data splits
and the initial model are identical everywhere without shipping them.

Sharding (`shard_indices`) splits the training set by worker rank: `iid` deals a seeded permutation
round-robin; `dirichlet` draws each class's share per worker from Dirichlet(alpha), the usual
non-iid benchmark (Hsu et al. 2019); it needs one class label per example, so not for `lm`.

`batches` and `evaluate` work wherever the tensors are: a shard may live on the GPU (the batch order
still comes from a CPU generator, so it is the same on every device), and `evaluate` moves the test
split to the model's device one mini-batch at a time.
"""

from __future__ import annotations

import importlib
import itertools
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from swarm_worker.training.lm import GPT, VOCAB, lm_data, lm_loss

#: What a task's progress is read as: test accuracy, or perplexity (exp of the test loss).
Metric = Literal["accuracy", "perplexity"]


class TaskError(ValueError):
    """The task named in the spec cannot be built (unknown name, bad entry point, bad bundle)."""


@dataclass(frozen=True)
class TaskBundle:
    """What a task provides. Tensors are CPU tensors; labels are int64 class indices, or for a
    sequence task (B, T) targets with logits (B, T, V): `loss_fn` then flattens them, and accuracy
    counts every position. Integer inputs may be stored narrower (uint8) and converted by the model."""

    build_model: Callable[[], nn.Module]
    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    num_classes: int
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = nn.functional.cross_entropy
    metric: Metric = "accuracy"


def _mlp(sizes: list[int]) -> nn.Module:
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(itertools.pairwise(sizes)):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


def _split_standardise(
    x: np.ndarray, y: np.ndarray, seed: int, test_fraction: float
) -> tuple[torch.Tensor, ...]:
    """Seeded train/test split; features standardised with the train split's statistics."""
    order = np.random.default_rng(seed).permutation(len(x))
    n_test = round(test_fraction * len(x))
    test, train = order[:n_test], order[n_test:]
    mean = x[train].mean(axis=0)
    std = x[train].std(axis=0) + 1e-6
    xs = ((x - mean) / std).astype(np.float32)
    return (
        torch.from_numpy(xs[train]),
        torch.from_numpy(y[train].astype(np.int64)),
        torch.from_numpy(xs[test]),
        torch.from_numpy(y[test].astype(np.int64)),
    )


def digits_task(options: Mapping[str, Any]) -> TaskBundle:
    from sklearn.datasets import load_digits

    hidden = int(options.get("hidden", 128))
    data = load_digits()
    train_x, train_y, test_x, test_y = _split_standardise(
        data.data, data.target, int(options.get("splitSeed", 0)), float(options.get("testFraction", 0.2))
    )
    return TaskBundle(
        build_model=lambda: _mlp([64, hidden, 10]),
        train_x=train_x,
        train_y=train_y,
        test_x=test_x,
        test_y=test_y,
        num_classes=10,
    )


def mnist1d_task(options: Mapping[str, Any]) -> TaskBundle:
    from mnist1d.data import get_dataset_args, make_dataset

    args = get_dataset_args()
    args.num_samples = int(options.get("samples", 10_000))
    args.seed = int(options.get("dataSeed", 42))
    data = make_dataset(args)  # generated in memory, never downloaded (get_dataset would download)
    x = np.concatenate([data["x"], data["x_test"]])
    y = np.concatenate([data["y"], data["y_test"]])
    hidden = int(options.get("hidden", 2048))
    train_x, train_y, test_x, test_y = _split_standardise(
        x, y, int(options.get("splitSeed", 0)), float(options.get("testFraction", 0.2))
    )
    return TaskBundle(
        build_model=lambda: _mlp([x.shape[1], hidden, hidden, 10]),
        train_x=train_x,
        train_y=train_y,
        test_x=test_x,
        test_y=test_y,
        num_classes=10,
    )


def lm_task(options: Mapping[str, Any]) -> TaskBundle:
    try:
        data = lm_data(options)
    except ValueError as e:
        raise TaskError(str(e)) from e
    return TaskBundle(
        build_model=lambda: GPT(data.config),
        train_x=data.train_x,
        train_y=data.train_y,
        test_x=data.test_x,
        test_y=data.test_y,
        num_classes=VOCAB,
        loss_fn=lm_loss,
        metric="perplexity",
    )


BUILTIN_TASKS: dict[str, Callable[[Mapping[str, Any]], TaskBundle]] = {
    "digits": digits_task,
    "mnist1d": mnist1d_task,
    "lm": lm_task,
}
#: The metric of each built-in task whose metric is not accuracy, known without building the task
#: (the console of `swarm run` needs it before any node has built one).
BUILTIN_METRICS: dict[str, Metric] = {"lm": "perplexity"}


def task_metric(name: str) -> Metric:
    """How `swarm run` reports the task named `name`: a user's task is reported as accuracy."""
    return BUILTIN_METRICS.get(name, "accuracy")


def resolve_task(name: str) -> Callable[[Mapping[str, Any]], TaskBundle]:
    """A built-in task's builder, or the function named by `package.module:function`."""
    if name in BUILTIN_TASKS:
        return BUILTIN_TASKS[name]
    module_name, sep, func_name = name.partition(":")
    if not sep or not module_name or not func_name:
        known = ", ".join(sorted(BUILTIN_TASKS))
        raise TaskError(f"task.name: {name!r} is neither a built-in task ({known}) nor 'module:function'")
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise TaskError(f"task.name: cannot import module {module_name!r}: {e}") from e
    func = getattr(module, func_name, None)
    if not callable(func):
        raise TaskError(f"task.name: {module_name!r} has no function {func_name!r}")
    return func  # type: ignore[no-any-return]


def build_task(name: str, options: Mapping[str, Any], seed: int) -> TaskBundle:
    """Build the task with torch's RNG seeded, so every process makes the same initial model."""
    bundle = resolve_task(name)(options)
    if not isinstance(bundle, TaskBundle):
        raise TaskError(f"task.name: {name!r} returned {type(bundle).__name__}, expected TaskBundle")
    if len(bundle.train_x) != len(bundle.train_y) or len(bundle.test_x) != len(bundle.test_y):
        raise TaskError(f"task {name!r}: features and labels differ in length")
    return bundle


def initial_model(bundle: TaskBundle, seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return bundle.build_model()


def shard_indices(
    labels: torch.Tensor, world: int, rank: int, *, partition: str, alpha: float, seed: int
) -> torch.Tensor:
    """Indices of the training examples that worker `rank` of `world` trains on."""
    if not 0 <= rank < world:
        raise ValueError(f"rank {rank} outside [0, {world})")
    rng = np.random.default_rng(seed)
    n = len(labels)
    if partition == "iid":
        return torch.from_numpy(rng.permutation(n)[rank::world].copy())
    if partition != "dirichlet":
        raise ValueError(f"unknown partition {partition!r}")
    if labels.dim() != 1:
        raise ValueError("partition 'dirichlet' needs one class label per example; use 'iid' for this task")
    y = labels.numpy()
    owner = np.empty(n, dtype=np.int64)
    for cls in np.unique(y):
        members = rng.permutation(np.flatnonzero(y == cls))
        shares = rng.dirichlet(np.full(world, alpha))
        cuts = (np.cumsum(shares)[:-1] * len(members)).astype(np.int64)
        for w, part in enumerate(np.split(members, cuts)):
            owner[part] = w
    mine = np.flatnonzero(owner == rank)
    if len(mine) == 0:
        # A worker with no data would stall the round; give it one example of the pool instead.
        mine = rng.choice(n, size=1)
    return torch.from_numpy(mine)


def batches(
    x: torch.Tensor, y: torch.Tensor, batch_size: int, generator: torch.Generator
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Endless shuffled mini-batches (reshuffled every epoch) from one worker's shard, on the shard's
    device; `generator` is a CPU generator, so the order is the same whatever that device is."""
    n = len(x)
    size = min(batch_size, n)
    while True:
        order = torch.randperm(n, generator=generator).to(x.device)
        for start in range(0, n - size + 1, size):
            idx = order[start : start + size]
            yield x[idx], y[idx]


@torch.no_grad()
def evaluate(
    model: nn.Module, bundle: TaskBundle, max_examples: int = 10_000, batch_targets: int = 4_096
) -> tuple[float, float]:
    """(test loss, test accuracy) on up to `max_examples` test examples, on the model's device.

    Mini-batches of about `batch_targets` targets (examples, or B·T positions of a sequence task)
    bound the memory; the loss is the mean over targets (each batch's mean loss weighted by its
    targets), accuracy the share of targets whose arg-max logit is right. A test split of at most
    `batch_targets` targets is one batch, so classification results are those of a single pass.
    """
    device = next(model.parameters()).device
    x_all, y_all = bundle.test_x[:max_examples], bundle.test_y[:max_examples]
    if len(y_all) == 0:
        raise ValueError("evaluate: the task's test split is empty")
    step = max(1, batch_targets // max(1, y_all[0].numel()))
    model.eval()
    loss_sum, correct, targets = 0.0, 0, 0
    for start in range(0, len(y_all), step):
        x = x_all[start : start + step].to(device)
        y = y_all[start : start + step].to(device)
        logits = model(x)
        loss_sum += float(bundle.loss_fn(logits, y)) * y.numel()
        correct += int((logits.argmax(dim=-1) == y).sum())
        targets += y.numel()
    model.train()
    return loss_sum / targets, correct / targets
