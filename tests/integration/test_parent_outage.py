"""Real processes: an interior aggregator SIGKILLed and replaced, one of its children unable to reach
the replacement for several rounds (on a cluster: the replaced pod has a new address, which a child
may take a minute to connect to). The children did nothing wrong, so the replacement must not
quarantine any of them or leave one below the threshold. (examples/training.yaml's tree, as in the
e2e run: 6 workers, two aggregators of 3, root; trimmed mean with f = 1 and reputation on.)

The unreachable child is emulated by stopping its process (SIGSTOP) while its parent is down and
continuing it (SIGCONT) once the replacement closed `UNREACHED` rounds without it: it cannot connect,
so the replacement never hears from it. Each of those rounds waits out the deadline for it. With
the default reputation settings a fresh record is quarantined after 7 missed rounds (6 when it
has to climb back afterwards); `maths.reputation.FIRST_CONTACT_ROUNDS` rounds before a node's
first delivery to a book are not scored, so the child survives up to 3 + 5."""

from __future__ import annotations

import re
import signal
from pathlib import Path

import pytest

from tests.integration.swarm_helpers import SwarmThread, manifest
from tests.polling import poll

pytestmark = [pytest.mark.integration, pytest.mark.slow]
THRESHOLD = 0.5
CHILDREN = ("worker-0", "worker-1", "worker-2")  # agg-0's
UNREACHED = 6
#: agg-0's line for each round it opens (node.aggregating.AggregatorShell.advance).
OPENED = re.compile(r"agg-0: round (\d+): model")


def rounds_opened_by_replacement(output: Path) -> list[int]:
    """The rounds the second agg-0 process opened so far (its log follows the first one's)."""
    text = (output / "logs" / "agg-0.log").read_text()
    starts = [m.end() for m in re.finditer(r"agg-0 \(aggregator\) up on", text)]
    return [int(r) for r in OPENED.findall(text[starts[1] :])] if len(starts) > 1 else []


def test_children_of_a_replaced_aggregator_keep_their_reputation(tmp_path: Path) -> None:
    m = manifest(
        "training.yaml",
        training={"rounds": 16, "roundDeadlineSeconds": 3},
        restartPolicy={"backoffSeconds": 2},
        robustness={"reputation": {"threshold": THRESHOLD}},
    )
    run = SwarmThread(m, tmp_path, timeout=240).start()
    run.wait_for_round(3)
    run.swarm.kill("agg-0")
    run.swarm.kill("worker-2", signal.SIGSTOP)
    try:
        # The replacement's first round is the one the root was stalled on (its quorum needs agg-0):
        # it has closed UNREACHED rounds without worker-2 once it opened the UNREACHED-th after it.
        poll(
            f"the new agg-0 to close {UNREACHED} rounds",
            lambda: len(rounds_opened_by_replacement(tmp_path)) > UNREACHED,
            timeout=120,
        )
    finally:
        run.swarm.kill("worker-2", signal.SIGCONT)
    result = run.join(timeout=240)
    assert result["phase"] == "Succeeded"
    assert result["restarts"] == {"agg-0": 1}
    records = {r["id"]: r for r in result["nodes"]}
    for child in CHILDREN:
        record = records[child]
        assert not record["quarantined"], record
        assert record["reputation"] > THRESHOLD, record
    # worker-2 came back and was scored by the replacement again.
    assert records["worker-2"]["lastRound"] > rounds_opened_by_replacement(tmp_path)[UNREACHED]
