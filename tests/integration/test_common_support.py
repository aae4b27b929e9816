"""Sparse updates on the root-announced common support keep a coordinate-wise robust rule accurate
(zero-filled own supports would bias the median towards zero)."""

from __future__ import annotations

from pathlib import Path

import pytest

from swarm_worker.local.launcher import LocalSwarm
from tests.integration.swarm_helpers import manifest

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_median_on_the_common_support_reaches_the_bar(tmp_path: Path) -> None:
    m = manifest(
        topology={"branchingFactor": 8},  # flat: the root takes the median of all 8 workers
        training={"rounds": 15, "roundDeadlineSeconds": 60},
        robustness={"rule": "median", "f": 2},
        compression={"support": "auto"},
    )
    assert m.spec.common_support
    result = LocalSwarm(m, tmp_path).run(timeout=600)
    assert result["accuracy"] >= 0.93
    assert "support" not in result["dropped"], "honest updates must all lie on the announced support"
    summary_bytes = result["bytesSent"]
    assert result["denseEquivalentBytes"] / summary_bytes >= 10, "common support must stay sparse"
