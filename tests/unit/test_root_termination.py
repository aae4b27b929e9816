"""The root leaves its final status as the pod's termination message (read by the operator)."""

from __future__ import annotations

import json
from pathlib import Path

from swarm_worker.consensus.root_commit import TERMINATION_MESSAGE_BYTES, write_termination_message


def test_writes_the_final_status_when_the_file_exists(tmp_path: Path) -> None:
    log = tmp_path / "termination-log"
    log.touch()
    status = {"phase": "Succeeded", "round": 30, "accuracy": 0.97, "nodes": [{"id": "worker-0"}]}
    assert write_termination_message(status, log)
    assert json.loads(log.read_text()) == status


def test_drops_nodes_when_the_message_would_be_too_long(tmp_path: Path) -> None:
    log = tmp_path / "termination-log"
    log.touch()
    nodes = [{"id": f"worker-{i}", "reputation": 0.5} for i in range(500)]
    assert write_termination_message({"phase": "Succeeded", "round": 30, "nodes": nodes}, log)
    text = log.read_text()
    assert len(text.encode()) <= TERMINATION_MESSAGE_BYTES
    assert json.loads(text) == {"phase": "Succeeded", "round": 30}


def test_outside_a_pod_nothing_is_written(tmp_path: Path) -> None:
    assert not write_termination_message({"phase": "Succeeded"}, tmp_path / "absent")
    assert not (tmp_path / "absent").exists()
