"""Root replicas (`consensus.replicas: 4`) as real processes: `swarm run` with the leader SIGKILLed
again and again, and with a Byzantine replica of each kind.

digits with 4 workers reporting to the 4 replicas directly (branching 4), a 2 s view timeout. A
killed replica is restarted by the launcher and catches up from the others (state transfer).
Every worker reports every round (no deadline cut on this small swarm), so a run's inputs are the
same whoever leads and the killed run must end on the fault-free run's accuracy, within 0.5 points.
The certified chain: every metrics line of replica 0 carries its round's commit certificate, which
the test checks with the replicas' verify keys (2f + 1 = 3 distinct valid signatures), round after
round, each point opening the round after its base round.
"""

from __future__ import annotations

import json
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from swarm_contract.consensus import commit_quorum, replica_ids
from swarm_worker.protocol.certificate import certificate_from_json, verify_certificate
from swarm_worker.protocol.signing import verify_key_from_text
from tests.integration.swarm_helpers import SwarmThread, digest_mismatches, manifest, trained_rounds
from tests.polling import poll

pytestmark = [pytest.mark.integration, pytest.mark.slow]

REPLICAS = 4
REPLICA_IDS = replica_ids(REPLICAS)
ROUNDS = 40


def replica_manifest(**override: Any) -> Any:
    spec: dict[str, Any] = {
        "workers": {"replicas": 4},
        "topology": {"branchingFactor": 4},
        # 500 local steps: rounds of about half a second, so kills land mid-run, not after it.
        "training": {"rounds": ROUNDS, "roundDeadlineSeconds": 30, "syncEvery": 500},
        "consensus": {"replicas": REPLICAS, "viewTimeoutSeconds": 2},
        "checkpoint": {"everyRounds": 4},
    }
    for key, value in override.items():
        spec[key] = {**spec.get(key, {}), **value}
    return manifest(**spec)


def check_chain(output: Path) -> list[dict[str, Any]]:
    """metrics.jsonl of replica 0: rounds 1..ROUNDS once each, in order, each with a certificate of
    2f + 1 valid replica signatures naming that round."""
    lines = [json.loads(line) for line in (output / "metrics.jsonl").read_text().splitlines()]
    assert [line["round"] for line in lines] == list(range(1, ROUNDS + 1))
    keys = {
        p.name.removesuffix(".verify"): verify_key_from_text(p.read_text(), p.name)
        for p in (output / "keys").glob("root*.verify")
    }
    assert len(keys) == REPLICAS
    for line in lines:
        cert = certificate_from_json(line["certificate"], REPLICAS)
        assert cert.point.round == line["round"]
        assert cert.point.base_round == line["round"] - 1
        assert verify_certificate(cert, keys, commit_quorum(REPLICAS)) is None, line["round"]
    return lines


def current_leader(run: SwarmThread) -> str | None:
    """The leader most replicas that answer name (a restarted one may not know the view yet)."""
    named = [s["consensus"]["leader"] for r in REPLICA_IDS if (s := status_of(run, r)) is not None]
    return max(set(named), key=named.count) if named else None


def wait_until_committed(run: SwarmThread, round_index: int) -> None:
    poll(f"round {round_index}", lambda: committed(run) >= round_index, timeout=120)


def committed(run: SwarmThread) -> int:
    """The most rounds any replica has committed (the one whose files are the run's may be down)."""
    return max((s["round"] for r in REPLICA_IDS if (s := status_of(run, r)) is not None), default=0)


def status_of(run: SwarmThread, replica: str) -> dict[str, Any] | None:
    """A replica's /status while it serves one (None while it is down or restarting)."""
    port = run.swarm.processes[replica].metrics_port
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/status", timeout=2) as r:
            doc: dict[str, Any] = json.loads(r.read())
    except OSError:
        return None
    return doc if doc.get("consensus") else None  # None before its first status too


def test_fault_free_and_leader_killed_again_and_again_commit_every_round_once(tmp_path: Path) -> None:
    clean = SwarmThread(replica_manifest(), tmp_path / "clean").start()
    result = clean.join()
    assert result["phase"] == "Succeeded"
    check_chain(tmp_path / "clean")

    run = SwarmThread(replica_manifest(), tmp_path / "killed").start()
    killed: list[str] = []
    for at_round in (8, 18, 28):
        wait_until_committed(run, at_round)
        leader = poll("a leader", lambda: current_leader(run), timeout=30)
        assert leader is not None
        run.swarm.kill(leader)
        killed.append(leader)
        time.sleep(0.5)
    faulty = run.join()
    assert faulty["phase"] == "Succeeded", faulty
    lines = check_chain(tmp_path / "killed")
    assert len(set(killed)) >= 2, killed  # the view changed: leadership moved on
    assert faulty["consensus"]["viewChanges"] >= 1
    assert abs(faulty["accuracy"] - result["accuracy"]) <= 0.005, (faulty["accuracy"], result["accuracy"])
    assert lines[-1]["accuracy"] == faulty["accuracy"]


@pytest.mark.parametrize("attack", ["wrong-model", "equivocate", "wrong-hash"])
def test_a_byzantine_replica_is_outvoted_and_no_honest_node_applies_its_model(
    tmp_path: Path, attack: str
) -> None:
    # Replica 0 leads view 0: the liar is the leader from the start.
    m = replica_manifest(
        training={"rounds": 8}, simulation={"byzantineReplicas": [{"replica": 0, "attack": attack}]}
    )
    run = SwarmThread(m, tmp_path).start()
    result = run.join()
    assert result["phase"] == "Succeeded", result
    honest = json.loads((tmp_path / "replicas" / "root-1" / "result.json").read_text())
    faults = honest["consensus"]["faults"].get("root", {})
    expected = {"wrong-model": "wrong-model", "equivocate": "equivocated", "wrong-hash": "wrong-commit"}
    assert faults.get(expected[attack], 0) >= 1, honest["consensus"]
    assert set(honest["consensus"]["faults"]) == {"root"}, honest["consensus"]  # no honest one accused
    # Every worker trained every round on the honest replicas' model, bit for bit: whatever the
    # liar sent them (a tampered delta under a valid certificate, with `wrong-model`) was refused.
    digests = {line["round"]: line["modelDigest"] for line in honest_lines(tmp_path)}
    assert sorted(digests) == list(range(1, 9))
    trained = {w: trained_rounds(tmp_path, w) for w in worker_ids()}
    assert digest_mismatches(trained, digests) == []


def honest_lines(output: Path) -> list[dict[str, Any]]:
    text = (output / "replicas" / "root-1" / "metrics.jsonl").read_text()
    return [json.loads(line) for line in text.splitlines()]


def worker_ids() -> list[str]:
    return [f"worker-{i}" for i in range(4)]
