"""SIGTERM to the root (what `kubectl delete pod` sends): it writes its checkpoint at the round it
reached and exits within a couple of seconds; restarted, it resumes there, not at its last periodic
checkpoint, and every round is committed exactly once."""

from __future__ import annotations

import re
import signal
import time
from pathlib import Path

import pytest

from tests.integration.swarm_helpers import SwarmThread, manifest
from tests.polling import poll

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _exited(pid: int) -> bool:
    """Gone, or a zombie its parent (the launcher) has not reaped yet."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return True
    return state in ("Z", "X")


def test_root_stops_on_sigterm_with_a_checkpoint_and_resumes_there(tmp_path: Path) -> None:
    # No periodic checkpoint before the end: a resume past round 0 can only come from the SIGTERM one.
    m = manifest(training={"rounds": 12, "roundDeadlineSeconds": 3}, checkpoint={"everyRounds": 1000})
    run = SwarmThread(m, tmp_path).start()
    run.wait_for_round(4)
    reached = run.committed_rounds()
    pid = run.swarm.kill("root", signal.SIGTERM)
    signalled = time.monotonic()
    poll("the root to exit after SIGTERM", lambda: _exited(pid), timeout=10)
    stop_seconds = time.monotonic() - signalled
    result = run.join()
    # Well inside the kubelet's default 30-s grace period even on a loaded 2-core machine (about
    # 1 s on a quiet one, most of it the interpreter's teardown of torch): without a handler a
    # root as PID 1 ignored SIGTERM and trained on until the grace period ran out.
    assert stop_seconds < 15.0, f"the root took {stop_seconds:.1f} s to stop"
    assert result["phase"] == "Succeeded"
    assert result["round"] == 12
    assert result["restarts"] == {"root": 1}
    log = (tmp_path / "logs" / "root.log").read_text()
    stopped = [int(m) for m in re.findall(r"root: stopping at round (\d+), checkpoint written", log)]
    assert len(stopped) == 1
    assert stopped[0] >= reached  # rounds may close between the read and the signal
    resumed = [
        int(line.rsplit(" ", 1)[1]) for line in log.splitlines() if "resumed from checkpoint at round" in line
    ]
    assert len(resumed) == 1
    assert resumed == stopped, "the restarted root must resume where the signalled one stopped"
    rounds = [line["round"] for line in run.swarm.metrics_lines()]
    assert rounds == list(range(1, 13)), "metrics.jsonl must hold each round once after the resume"
