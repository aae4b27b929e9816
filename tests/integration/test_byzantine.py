"""Attackers as real processes: two sign-flip workers (one under each aggregator) against the
coordinate-wise median with reputation. The run must still learn, and the aggregators must have
measured the attackers as the least trustworthy nodes. (digits: 8 workers, two aggregators, root.)"""

from __future__ import annotations

from pathlib import Path

import pytest

from swarm_worker.local.launcher import LocalSwarm
from tests.integration.swarm_helpers import manifest

pytestmark = [pytest.mark.integration, pytest.mark.slow]
BAR = 0.93
ATTACKERS = {"worker-1", "worker-6"}  # one per aggregator: each of them faces f = 1 of 4


def test_sign_flip_attackers_are_outvoted_and_lose_reputation(tmp_path: Path) -> None:
    # A long deadline: rounds close as soon as every child reported, and a slow start cannot make an
    # aggregator close round 0 on a lone (attacker's) update.
    m = manifest(
        training={"rounds": 20, "roundDeadlineSeconds": 60},
        robustness={"rule": "median", "f": 1, "reputation": {"enabled": True}},
        simulation={
            "byzantine": [
                {"worker": 1, "attack": "sign-flip", "scale": 10.0},
                {"worker": 6, "attack": "sign-flip", "scale": 10.0},
            ]
        },
    )
    result = LocalSwarm(m, tmp_path).run(timeout=300)
    assert result["phase"] == "Succeeded"
    assert result["accuracy"] >= BAR
    workers = {r["id"]: r for r in result["nodes"] if r["role"] == "worker"}
    assert set(workers) == {f"worker-{i}" for i in range(8)}
    worst_honest = min(r["reputation"] for w, r in workers.items() if w not in ATTACKERS)
    for attacker in sorted(ATTACKERS):
        assert workers[attacker]["reputation"] < worst_honest, workers
    for attacker in sorted(ATTACKERS):
        log = (tmp_path / "logs" / f"{attacker}.log").read_text()
        assert f"{attacker}: Byzantine rank {attacker[-1]}, attack sign-flip" in log
