"""A node never goes back a round silently: a dense MODEL for an older round (its root resumed from a
checkpoint) is applied, as the explicit resync, with one WARNING naming both rounds and one count in
`swarm_model_rollbacks_total` (node.model_sync.accepted_round, used by roles.worker and
node.aggregating)."""

from __future__ import annotations

import logging

import pytest
import torch
from prometheus_client import generate_latest

from swarm_worker.node.model_sync import accepted_round, apply_model
from swarm_worker.node.telemetry import NodeMetrics
from swarm_worker.protocol.codec import Message


def _dense(round_index: int, theta: torch.Tensor) -> Message:
    return Message(
        "model", "job", round_index, "aggregator-0", {"base_round": -1, "final": False}, {"theta": theta}
    )


def _rollbacks(metrics: NodeMetrics) -> float:
    value = metrics.registry.get_sample_value(
        "swarm_model_rollbacks_total", {"node": "worker-3", "role": "worker"}
    )
    assert value is not None
    return value


@pytest.mark.parametrize(
    ("held", "received", "rollbacks"),
    [(5, 6, 0), (5, 5, 0), (0, 40, 0), (57, 50, 1), (1, 0, 1)],
    ids=["next-round", "same-round", "catch-up", "root-resumed", "back-to-zero"],
)
def test_only_an_older_round_is_counted_and_logged(
    caplog: pytest.LogCaptureFixture, held: int, received: int, rollbacks: int
) -> None:
    metrics = NodeMetrics("worker-3", "worker")
    with caplog.at_level(logging.INFO, logger="swarm"):
        got = accepted_round(metrics, "worker-3", held, _dense(received, torch.zeros(4)))

    assert got == received
    assert _rollbacks(metrics) == rollbacks
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    if rollbacks:
        assert warnings == [
            f"worker-3: round {held} -> {received}: the parent aggregator-0 sent an older model "
            "(the root resumed from a checkpoint, or the parent is behind); resyncing to it"
        ]
    else:
        assert warnings == []


def test_an_older_dense_model_replaces_theta_and_each_rollback_counts() -> None:
    metrics = NodeMetrics("worker-3", "worker")
    theta = torch.arange(6, dtype=torch.float32)
    resumed = torch.full((6,), 0.5)

    applied = apply_model(theta, 57, _dense(50, resumed))
    assert applied is not None
    torch.testing.assert_close(applied, resumed, rtol=0, atol=0)
    assert accepted_round(metrics, "worker-3", 57, _dense(50, resumed)) == 50
    assert accepted_round(metrics, "worker-3", 53, _dense(50, resumed)) == 50
    assert _rollbacks(metrics) == 2
    assert b"swarm_model_rollbacks_total" in generate_latest(metrics.registry)
