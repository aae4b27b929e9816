"""A whole local swarm with `workers.device` set, aggregators and the root on the CPU: it finishes,
and every worker trains each round from the root's model, bit for bit (`model_digest`, compared as
in test_model_identity.py). Here the workers use the CPU; tests/gpu/test_device_worker.py runs the
same check with `workers.device: cuda`, where the digests compare a CUDA θ with the root's CPU θ."""

from __future__ import annotations

from pathlib import Path

import pytest

from swarm_worker.local.launcher import LocalSwarm
from tests.integration.swarm_helpers import digest_mismatches, manifest, trained_rounds

pytestmark = pytest.mark.integration
ROUNDS = 4
WORKERS = 4


def check_swarm_with_workers_on(device: str, output: Path) -> None:
    """Run digits with `workers.device: device` (2 aggregators on the CPU) and compare digests."""
    m = manifest(
        workers={"replicas": WORKERS, "device": device},
        topology={"branchingFactor": 2},
        training={"rounds": ROUNDS, "syncEvery": 20, "roundDeadlineSeconds": 60},
    )
    assert m.spec.compression.broadcast == "delta"
    swarm = LocalSwarm(m, output)
    result = swarm.run(timeout=300)
    assert result["phase"] == "Succeeded", result
    assert result["round"] == ROUNDS

    root = {line["round"]: line["modelDigest"] for line in swarm.metrics_lines()}
    assert sorted(root) == list(range(1, ROUNDS + 1))
    assert len(set(root.values())) == ROUNDS, f"the model did not change every round: {root}"
    workers = [f"worker-{rank}" for rank in range(WORKERS)]
    for w in workers:  # node/runtime.py's start line names the device the worker computes on
        assert f"{w} (worker) up on {device}" in (output / "logs" / f"{w}.log").read_text(), w
    trained = {w: trained_rounds(output, w) for w in workers}
    initial = {t.digest for w in workers for t in trained[w] if t.round == 0}
    assert len(initial) == 1, f"θ_0 differs between workers: {initial}"
    mismatches = digest_mismatches(trained, root)
    assert not mismatches, "\n".join(mismatches)
    assert {t.round for w in workers for t in trained[w]} == set(range(ROUNDS))


def test_cpu_workers_train_from_the_roots_model_bit_for_bit(tmp_path: Path) -> None:
    check_swarm_with_workers_on("cpu", tmp_path)
