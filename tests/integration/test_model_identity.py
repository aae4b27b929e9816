"""Every copy of the model is the root's, bit for bit: a worker logs the digest of θ_r it trains round r
from (`model_digest`, roles/worker.py), the root writes the digest of θ_R, the model that opens round
R, into the line of metrics.jsonl whose "round" is R (`modelDigest`). With the new model broadcast as a
sparse delta in float16, every child must apply exactly the rounded values the root applied; one
coordinate off, or one delta applied to the wrong base, changes the digest. (digits: 8 workers, two
aggregators, root.)"""

from __future__ import annotations

from pathlib import Path

import pytest

from swarm_worker.local.launcher import LocalSwarm
from tests.integration.swarm_helpers import digest_mismatches, manifest, trained_rounds

pytestmark = pytest.mark.integration
ROUNDS = 6


def test_every_worker_trains_each_round_from_the_roots_model(tmp_path: Path) -> None:
    m = manifest(training={"rounds": ROUNDS})
    assert m.spec.compression.broadcast == "delta"
    assert m.spec.compression.value_dtype == "float16"
    swarm = LocalSwarm(m, tmp_path)
    result = swarm.run(timeout=400)
    assert result["phase"] == "Succeeded"
    assert result["round"] == ROUNDS

    root = {line["round"]: line["modelDigest"] for line in swarm.metrics_lines()}
    assert sorted(root) == list(range(1, ROUNDS + 1))
    assert len(set(root.values())) == ROUNDS, f"the model did not change every round: {root}"

    workers = [f"worker-{rank}" for rank in range(m.spec.workers.replicas)]
    trained = {w: trained_rounds(tmp_path, w) for w in workers}
    # θ_0 is built from the shared seed on every node, never sent: all workers start from one model.
    initial = {t.digest for w in workers for t in trained[w] if t.round == 0}
    assert len(initial) == 1, initial
    assert initial.isdisjoint(root.values())
    mismatches = digest_mismatches(trained, root)
    assert not mismatches, "\n".join(mismatches)
    for w in workers:
        assert any(t.round >= 1 for t in trained[w]), f"{w} logged no round after round 0"
    seen = {t.round for w in workers for t in trained[w]}
    assert seen == set(range(ROUNDS)), f"rounds trained: {sorted(seen)}"
