"""The maths of one round: local steps on a worker, the outer step at the root.

Worker, round r (shapes: d = number of parameters, all flat fp32 vectors on the model's device):
    start   = θ_r                                   or, with cooperative alpha > 0,
            = (1 - alpha) θ_r + alpha θ_local       (keeps alpha of its own last progress)
    θ_local = H steps of the inner optimizer from `start` on the worker's shard
    Δ       = θ_r - θ_local                         (pseudo-gradient: the root SUBTRACTS it)
With H = 1, plain SGD (lr η) and no alpha, Δ = η g: exchanging Δ is gradient exchange.

Root, given the aggregate a (d,) of the round:
    sgd        step = a
    momentum   m = μ m + a;  step = m                (outer lr 1, μ 0 is FedAvg)
    nesterov   m = μ m + a;  step = a + μ m          (DiLoCo uses μ 0.9, lr 0.7)
    adaptive   μ is replaced by μ · agreement, the round's mean positive cosine of updates with a
    θ_{r+1} = θ_r - lr * step
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn.utils import parameters_to_vector

from swarm_contract.spec import Optimizer, OuterOptimizer


def flat_parameters(model: nn.Module) -> torch.Tensor:
    return parameters_to_vector(model.parameters()).detach().clone()


@torch.no_grad()
def load_flat(model: nn.Module, theta: torch.Tensor) -> None:
    """Copy θ into the parameters (torch's vector_to_parameters would alias them to θ instead)."""
    offset = 0
    for p in model.parameters():
        n = p.numel()
        p.copy_(theta[offset : offset + n].view_as(p))
        offset += n


def make_inner_optimizer(model: nn.Module, cfg: Optimizer) -> torch.optim.Optimizer:
    if cfg.name == "adam":
        return torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.SGD(
        model.parameters(),
        lr=cfg.lr,
        momentum=cfg.momentum,
        nesterov=cfg.name == "nesterov" and cfg.momentum > 0,
        weight_decay=cfg.weight_decay,
    )


@dataclass(frozen=True)
class LocalResult:
    delta: torch.Tensor  # (d,) θ_r - θ_local
    loss: float  # mean training loss over the H steps
    samples: int


class LocalTrainer:
    """A worker's model, inner optimizer and endless batch stream; `run_round` is one round."""

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        batch_stream: Iterator[tuple[torch.Tensor, torch.Tensor]],
        loss_fn: nn.Module | object,
        *,
        local_steps: int,
        alpha: float,
    ) -> None:
        self.model = model
        self.optimizer = optimizer
        self.batches = batch_stream
        self.loss_fn = loss_fn
        self.local_steps = local_steps
        self.alpha = alpha
        self._local_end: torch.Tensor | None = None

    def run_round(self, theta: torch.Tensor) -> LocalResult:
        start = theta
        if self.alpha > 0 and self._local_end is not None:
            start = (1 - self.alpha) * theta + self.alpha * self._local_end
        load_flat(self.model, start)
        self.model.train()
        # Summed on θ's device in float64 (what a Python float sum of the fp32 losses gives): reading
        # each step's loss on the host would make the CPU wait for the GPU every step.
        total_loss = torch.zeros((), dtype=torch.float64, device=theta.device)
        samples = 0
        for _ in range(self.local_steps):
            x, y = next(self.batches)
            self.optimizer.zero_grad(set_to_none=True)
            loss = self.loss_fn(self.model(x), y)  # type: ignore[operator]
            loss.backward()
            self.optimizer.step()
            total_loss += loss.detach()
            samples += len(y)
        local_end = flat_parameters(self.model)
        self._local_end = local_end
        return LocalResult(
            delta=theta - local_end, loss=float(total_loss) / self.local_steps, samples=samples
        )

    def step(self) -> tuple[torch.Tensor, int]:
        """One inner step on the next batch from the parameters the model holds now: (the batch's
        loss, detached, 0-d on the model's device; the batch's samples). `run_round` is H of these
        from a loaded start; a pipelined or adaptive worker (`training.pipeline`) calls it one step at
        a time so that it can poll its sockets in between."""
        x, y = next(self.batches)
        self.optimizer.zero_grad(set_to_none=True)
        loss = self.loss_fn(self.model(x), y)  # type: ignore[operator]
        loss.backward()
        self.optimizer.step()
        return loss.detach(), len(y)


class OuterStep:
    """The root's optimizer on flat vectors; its state is the momentum buffer (checkpointed), on
    `device` with θ (the root's GPU with `topology.aggregatorResources.gpus`), in fp32."""

    def __init__(self, cfg: OuterOptimizer, numel: int, device: torch.device | None = None) -> None:
        self.cfg = cfg
        self.momentum = torch.zeros(numel, device=device) if cfg.momentum > 0 else None

    def step(self, aggregate: torch.Tensor, agreement: float = 1.0) -> torch.Tensor:
        """The change to apply to θ (d,): -lr * step. With adaptive momentum, μ is scaled by the
        round's `agreement` in [0, 1]."""
        step = aggregate
        if self.momentum is not None:
            mu = self.cfg.momentum * (min(1.0, max(0.0, agreement)) if self.cfg.adaptive_momentum else 1.0)
            self.momentum.mul_(mu).add_(aggregate)
            step = aggregate + mu * self.momentum if self.cfg.name == "nesterov" else self.momentum
        return -self.cfg.lr * step
