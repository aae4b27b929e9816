"""The outer step's maths (FedAvg, momentum, Nesterov, adaptive momentum) and local rounds."""

from __future__ import annotations

import pytest
import torch

from swarm_contract.spec import OuterOptimizer
from swarm_worker.training.steps import OuterStep


def run(cfg: OuterOptimizer, grads: list[torch.Tensor], agreements: list[float]) -> torch.Tensor:
    outer = OuterStep(cfg, grads[0].numel())
    theta = torch.zeros_like(grads[0])
    for g, a in zip(grads, agreements, strict=True):
        theta += outer.step(g, a)
    return theta


GRADS = [torch.tensor([1.0, -2.0]), torch.tensor([0.5, 0.5])]


@pytest.mark.parametrize(
    ("cfg", "agreements", "expected"),
    [
        (OuterOptimizer(name="sgd", lr=1.0), [1, 1], [-1.5, 1.5]),
        (OuterOptimizer(name="sgd", lr=0.5, momentum=0.9), [1, 1], [-0.5 - 0.5 * 1.4, 1.0 - 0.5 * (-1.3)]),
        # nesterov: m1 = g1, step1 = g1 + .9 g1; m2 = .9 g1 + g2, step2 = g2 + .9 m2
        (
            OuterOptimizer(name="nesterov", lr=1.0, momentum=0.9),
            [1, 1],
            [-(1.9 + 0.5 + 0.9 * 1.4), -(-3.8 + 0.5 + 0.9 * -1.3)],
        ),
        # adaptive with agreement 0: momentum forgets, so it is plain SGD
        (OuterOptimizer(name="sgd", lr=1.0, momentum=0.9, adaptive_momentum=True), [0, 0], [-1.5, 1.5]),
    ],
    ids=["fedavg", "momentum", "nesterov", "adaptive-disagree"],
)
def test_outer_step(cfg: OuterOptimizer, agreements: list[float], expected: list[float]) -> None:
    torch.testing.assert_close(run(cfg, GRADS, agreements), torch.tensor(expected), rtol=1e-6, atol=1e-6)
