"""A pure, in-process simulation of Byzantine-robust synchronous SGD: the core of `karimireddy.py`.

One run is the protocol of Karimireddy, He & Jaggi, "Byzantine-robust learning on heterogeneous
datasets via bucketing" (ICLR 2022), on scikit-learn digits and the digits MLP (64-128-10):

    n workers, the last f Byzantine; each round t every worker i draws a batch of `batch_size`
    from its own shard, computes g_i = ∇ loss(x_t; batch_i) and its worker momentum
        m_i ← β m_i + g_i                     (β = 0: m_i = g_i, plain SGD)
    and sends m_i. Byzantine workers replace their message by the attack (below). The server sets
        v_t = aggregate(rule, M (n, d), f, pre_aggregation [+ ("bucketing", s)], previous=v_{t-1})
        x_{t+1} = x_t - lr v_t.

Data (`make_shards`): the honest workers' data is the training set sorted by label and cut into
n - f contiguous shards (each honest worker sees one or two digits, as the paper's non-iid split);
each Byzantine worker holds an iid sample of the same size (its own data, which the label-flip
and bit-flip attackers train on). Attacks (`ATTACKS`), omniscient as in the paper's simulation:
they see this round's honest messages M_H (the n - f honest rows):

    none        the f workers behave honestly on their data
    bit-flip    -m_b, the attacker's own honest momentum with its sign flipped ("BF")
    label-flip  the attacker's honest protocol on labels y -> 9 - y ("LF")
    mimic       every attacker sends honest worker 0's message (digit 0's shard): it over-weights
                one worker of a heterogeneous set (the paper picks the worker by a variance
                heuristic after a warm-up; a fixed one is the simplest instance)
    ipm         -ε mean(M_H), ε = 0.1 (inner-product manipulation)
    alie        mean(M_H) - z std(M_H), z = alie_z(n, f) (0.47 for n = 25, f = 5)

Per-worker gradients are one batched forward/backward of the n batches (`mlp_gradients`), so a
round costs about that plus the aggregation.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from swarm_worker.maths.robust import aggregate
from swarm_worker.simulation.attacks import craft_update, flip_labels
from swarm_worker.training.tasks import TaskBundle, build_task, evaluate, initial_model

ATTACKS: tuple[str, ...] = ("none", "bit-flip", "label-flip", "mimic", "ipm", "alie")
#: ε of inner-product manipulation, as in the paper's experiments.
IPM_EPSILON = 0.1

PreAggregation = tuple[tuple[str, float | None], ...]


@dataclass(frozen=True)
class Method:
    """An aggregation method as a row label of the table: a rule after pre-aggregation steps.

    Bucketing is not part of the method: the run adds ("bucketing", s) after these steps.
    """

    label: str
    rule: str
    pre_aggregation: PreAggregation = ()


@dataclass(frozen=True)
class SimConfig:
    """One training run. Every field is a setting of the protocol in the module docstring."""

    method: Method
    attack: str = "none"
    #: Worker momentum β: each worker sends m ← β m + g.
    momentum: float = 0.0
    #: Bucket size s; 0 (or 1) means no bucketing.
    bucket_size: int = 0
    n: int = 25
    f: int = 5
    steps: int = 100
    lr: float = 0.1
    batch_size: int = 32
    seed: int = 0

    def __post_init__(self) -> None:
        if self.attack not in ATTACKS:
            raise ValueError(f"unknown attack {self.attack!r}; expected one of {', '.join(ATTACKS)}")
        if not 0 <= self.f < self.n:
            raise ValueError(f"need 0 <= f < n, got n={self.n}, f={self.f}")
        if not 0 <= self.momentum < 1:
            raise ValueError(f"momentum must be in [0, 1), got {self.momentum}")
        if self.bucket_size < 0 or self.steps < 0 or self.batch_size < 1 or self.lr <= 0:
            raise ValueError("bucket_size and steps must be >= 0, batch_size >= 1 and lr > 0")

    def pre_aggregation(self) -> PreAggregation:
        """The method's steps, then bucketing when s > 1 (the paper buckets right before the rule)."""
        steps = self.method.pre_aggregation
        return (*steps, ("bucketing", float(self.bucket_size))) if self.bucket_size > 1 else steps


@dataclass(frozen=True)
class Shards:
    """Each worker's training data: x (n, ...) lists; Byzantine workers' labels already flipped
    under label-flip."""

    x: list[torch.Tensor] = field(repr=False)
    y: list[torch.Tensor] = field(repr=False)


def make_shards(bundle: TaskBundle, n: int, f: int, *, flip: bool, seed: int) -> Shards:
    """Honest workers 0..n-f-1: the training set sorted by label (stably), cut into n - f contiguous
    shards of near-equal size. Byzantine workers n-f..n-1: an iid sample (without replacement) of
    the honest shard size each, labels flipped when `flip`."""
    order = torch.sort(bundle.train_y, stable=True).indices
    honest = torch.tensor_split(order, n - f)
    size = math.ceil(len(order) / (n - f))
    generator = torch.Generator().manual_seed(seed)
    byzantine = [torch.randperm(len(order), generator=generator)[:size] for _ in range(f)]
    xs = [bundle.train_x[idx] for idx in (*honest, *byzantine)]
    ys = [bundle.train_y[idx] for idx in (*honest, *byzantine)]
    if flip:
        ys[n - f :] = [flip_labels(y, bundle.num_classes) for y in ys[n - f :]]
    return Shards(x=xs, y=ys)


def batch_indices(shards: Shards, steps: int, batch_size: int, generator: torch.Generator) -> torch.Tensor:
    """(steps, n, b) indices into the concatenated shards (`torch.cat(shards.x)`): each worker walks
    its own shard in a fresh permutation every epoch, so no example repeats within an epoch
    (b = min(batch_size, smallest shard))."""
    lengths = [len(x) for x in shards.x]
    size = min(batch_size, *lengths)
    offset = 0
    per_worker = []
    for length in lengths:
        per_epoch = length // size
        epochs = -(-steps // per_epoch)  # ceil: enough epochs for `steps` batches
        walk = torch.cat(
            [torch.randperm(length, generator=generator)[: per_epoch * size] for _ in range(epochs)]
            or [torch.empty(0, dtype=torch.long)]
        )
        per_worker.append(walk[: steps * size].view(steps, size) + offset)
        offset += length
    return torch.stack(per_worker, dim=1)


def mlp_gradients(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """(n, d) each worker's gradient of its mean cross-entropy on its own batch, x (n, b, features),
    y (n, b), flattened in `model.parameters()` order, for an `nn.Sequential` of Linear layers with
    ReLU between them (the digits MLP). Written out as batched matmuls because that is 3x faster
    than `torch.func.vmap(grad(...))` at this size; the unit test checks it against autograd."""
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    with torch.no_grad():
        inputs = [x]  # the input of each Linear, (n, b, in)
        logits = x
        for i, layer in enumerate(linears):
            logits = inputs[-1] @ layer.weight.t() + layer.bias
            if i < len(linears) - 1:
                inputs.append(logits.clamp_min(0))
        # d(mean cross-entropy)/d(logits) = (softmax - onehot) / b, (n, b, classes)
        delta = torch.softmax(logits, dim=-1)
        delta.scatter_add_(-1, y[..., None], torch.full(y[..., None].shape, -1.0, dtype=delta.dtype))
        delta /= x.shape[1]
        grads: list[torch.Tensor] = []
        for i in range(len(linears) - 1, -1, -1):
            grads.append(delta.sum(1))  # bias, (n, out)
            grads.append((delta.transpose(1, 2) @ inputs[i]).flatten(1))  # weight, (n, out * in)
            if i > 0:
                delta = (delta @ linears[i].weight) * (inputs[i] > 0)
        return torch.cat(grads[::-1], dim=1)


def check_mlp(model: nn.Module) -> None:
    """Raise ValueError unless `mlp_gradients` can differentiate `model`."""
    if not isinstance(model, nn.Sequential) or not all(isinstance(m, nn.Linear | nn.ReLU) for m in model):
        raise ValueError(f"the simulation needs an nn.Sequential of Linear and ReLU layers, got {model}")


def byzantine_messages(
    attack: str, own: torch.Tensor, honest: torch.Tensor, *, n: int, f: int, generator: torch.Generator
) -> torch.Tensor:
    """(f, d) what the Byzantine workers send, given their own honest messages `own` (f, d) (for
    label-flip already computed on flipped labels) and the honest workers' messages (n - f, d)."""
    if attack in ("none", "label-flip") or own.shape[0] == 0:
        return own
    if attack == "bit-flip":
        flat = craft_update("sign-flip", own.flatten(), None, n=n, f=f, scale=None, generator=generator)
        return flat.view_as(own)
    update_attack, scale = {"mimic": ("mimic", 0.0), "ipm": ("ipm", IPM_EPSILON), "alie": ("alie", None)}[
        attack
    ]
    # These depend on the honest messages only: every attacker sends the same vector.
    crafted = craft_update(update_attack, own[0], honest, n=n, f=f, scale=scale, generator=generator)
    return crafted.expand_as(own)


@dataclass(frozen=True)
class RunResult:
    accuracy: float
    #: True when the messages became non-finite (the run stopped there, scored by `final_accuracy`).
    diverged: bool


def run(config: SimConfig, bundle: TaskBundle | None = None) -> RunResult:
    """Train per `config` and return the final test accuracy. Deterministic for a given seed."""
    bundle = bundle if bundle is not None else build_task("digits", {}, 0)
    n, f = config.n, config.f
    model = initial_model(bundle, config.seed)
    shards = make_shards(bundle, n, f, flip=config.attack == "label-flip", seed=config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    check_mlp(model)
    all_x, all_y = torch.cat(shards.x), torch.cat(shards.y)
    indices = batch_indices(shards, config.steps, config.batch_size, generator)  # (steps, n, b)
    params = list(model.parameters())
    d = sum(p.numel() for p in params)
    momentum = torch.zeros(n, d)
    previous = torch.zeros(d)
    pre_aggregation = config.pre_aggregation()
    for step in range(config.steps):
        batch = indices[step]
        gradients = mlp_gradients(model, all_x[batch], all_y[batch])  # (n, d)
        momentum = config.momentum * momentum + gradients
        messages = momentum.clone()
        messages[n - f :] = byzantine_messages(
            config.attack, momentum[n - f :], momentum[: n - f], n=n, f=f, generator=generator
        )
        if not bool(torch.isfinite(messages).all()):
            return RunResult(accuracy=final_accuracy(model, bundle), diverged=True)
        result = aggregate(
            config.method.rule,
            messages,
            f=f,
            previous=previous,
            pre_aggregation=pre_aggregation,
            generator=generator,
        )
        previous = result.vector
        with torch.no_grad():
            offset = 0
            for p in params:
                p.sub_(result.vector[offset : offset + p.numel()].view_as(p), alpha=config.lr)
                offset += p.numel()
    return RunResult(accuracy=final_accuracy(model, bundle), diverged=False)


def final_accuracy(model: nn.Module, bundle: TaskBundle) -> float:
    """Test accuracy; 0 for a model with non-finite parameters (rather than whatever the argmax of
    NaN logits happens to pick)."""
    if not all(bool(torch.isfinite(p).all()) for p in model.parameters()):
        return 0.0
    return evaluate(model, bundle)[1]


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    mean = sum(values) / len(values)
    if len(values) < 2:
        return mean, 0.0
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))
