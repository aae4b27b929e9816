"""The records the pods and the operator share (swarm_contract.records): one definition, its bounds,
and every spelling of it derived from it (the reputation book, the codec, the operator, the CRD)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from swarm_contract.records import NodeRecord, RootStatus, valid_records, wire_fields
from swarm_operator import crdgen
from swarm_operator.observe import parse_root_status
from swarm_operator.status import progress
from swarm_worker.maths.reputation import NodeReputation, RoundObservation, update_reputation
from swarm_worker.protocol.codec import NODE_RECORD_SCHEMA, Message, decode, encode

ROOT = Path(__file__).resolve().parents[2]
RECORD_KEYS = ("id", "role", "parent", "reputation", "uptime", "agreement", "contribution", "quarantined")


def record(**changes: Any) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": "worker-3",
        "role": "worker",
        "parent": "agg-1",
        "reputation": 0.9,
        "uptime": 1,
        "agreement": 0.75,
        "contribution": 0.5,
        "quarantined": False,
        "lastRound": 7,
    }
    out.update(changes)
    return out


def status(**changes: Any) -> dict[str, Any]:
    out: dict[str, Any] = {
        "job": "digits",
        "phase": "Running",
        "round": 3,
        "rounds": 30,
        "loss": 0.5,
        "accuracy": 0.9,
        "bytesSent": 10,
        "denseEquivalentBytes": 100,
        "samplesPerSecond": 1.5,
        "wallSeconds": 2.0,
        "nodes": [record()],
        "dropped": {"late": 2},
    }
    out.update(changes)
    return out


def test_a_record_round_trips_in_its_wire_form() -> None:
    parsed = NodeRecord.model_validate(record())
    assert (parsed.last_round, parsed.uptime) == (7, 1.0)
    assert parsed.model_dump(by_alias=True) == {**record(), "uptime": 1.0}


BAD_RECORDS = {
    "reputation above 1": record(reputation=1.5),
    "reputation below 0": record(reputation=-0.1),
    "uptime nan": record(uptime=math.nan),
    "agreement inf": record(agreement=math.inf),
    "contribution negative": record(contribution=-0.25),
    "lastRound below -1": record(lastRound=-2),
    "lastRound a float": record(lastRound=7.5),
    "empty id": record(id=""),
    "id longer than a DNS name": record(id="n" * 254),
    "unknown role": record(role="boss"),
    "quarantined as int": record(quarantined=1),
    "reputation as string": record(reputation="0.9"),
    "missing field": {k: v for k, v in record().items() if k != "uptime"},
}


@pytest.mark.parametrize("raw", list(BAD_RECORDS.values()), ids=list(BAD_RECORDS))
def test_a_record_out_of_bounds_is_refused(raw: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        NodeRecord.model_validate(raw)


def test_a_record_of_a_node_that_never_delivered_is_valid() -> None:
    assert NodeRecord.model_validate(record(lastRound=-1)).last_round == -1


BAD_STATUSES = {
    "unknown phase": status(phase="Exploded"),
    "negative round": status(round=-1),
    "zero rounds": status(rounds=0),
    "accuracy above 1": status(accuracy=1.2),
    "negative bytes": status(bytesSent=-1),
    "negative dense bytes": status(denseEquivalentBytes=-5),
    "negative samples per second": status(samplesPerSecond=-1.0),
    "negative wall seconds": status(wallSeconds=-0.5),
    "negative drop count": status(dropped={"late": -1}),
    "round as string": status(round="3"),
    "missing phase": {k: v for k, v in status().items() if k != "phase"},
    "nodes not a list": status(nodes={"worker-0": record()}),
}


@pytest.mark.parametrize("raw", list(BAD_STATUSES.values()), ids=list(BAD_STATUSES))
def test_a_status_out_of_bounds_is_refused(raw: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        RootStatus.model_validate(raw)


@pytest.mark.parametrize("loss", [math.nan, math.inf, -math.inf], ids=["nan", "inf", "-inf"])
def test_a_diverged_loss_reads_as_none(loss: float) -> None:
    assert RootStatus.model_validate(status(loss=loss)).loss is None


def test_unknown_fields_are_ignored_so_an_older_operator_reads_a_newer_root() -> None:
    parsed = RootStatus.model_validate(status(futureField=1, nodes=[record(futureField=2)]))
    assert parsed.nodes[0].id == "worker-3"


def test_one_bad_record_is_dropped_not_the_whole_status() -> None:
    kept, bad = valid_records([record(), record(id="worker-4", reputation=7.0), "junk"])
    assert ([r.id for r in kept], bad) == (["worker-3"], 2)
    raw = json.dumps(status(nodes=[record(), record(id="worker-4", reputation=7.0)]))
    parsed = parse_root_status(raw)
    assert parsed is not None
    assert [n.id for n in parsed.nodes] == ["worker-3"]


# ---------------------------------------------------------------------------------------------
# Every spelling of the record derives from the contract


def test_the_reputation_book_writes_contract_records() -> None:
    rep = NodeReputation(node_id="worker-0", role="worker", parent="agg-0")
    assert NodeRecord.model_validate(rep.record()).last_round == -1
    for r in range(5):
        update_reputation(
            rep,
            RoundObservation(delivered=r % 2 == 0, selected=1.0, mad_score=5.0, cosine=1.0000001),
            r,
            decay=0.8,
            threshold=0.5,
            quarantine_rounds=3,
        )
    out = rep.record()
    assert tuple(out) == wire_fields(NodeRecord)
    assert NodeRecord.model_validate(out).model_dump(by_alias=True) == out


def test_the_codec_checks_the_contract_fields() -> None:
    assert tuple(NODE_RECORD_SCHEMA) == wire_fields(NodeRecord) == (*RECORD_KEYS, "lastRound")
    rep = NodeReputation(node_id="worker-0", role="worker", parent="agg-0").record()
    meta = {"samples": 32, "workers": 1, "loss": 0.5, "nodes": [rep], "traffic": []}
    msg = Message(type="update", job="j", round=0, node="agg-0", meta=meta)
    assert decode(encode(msg)).meta["nodes"] == [rep]


def test_the_operator_copies_the_contract_progress_into_its_status_schema() -> None:
    schema = crdgen.status_schema()["properties"]
    parsed = RootStatus.model_validate(status())
    assert set(progress(parsed)) <= set(schema)
    assert schema["loss"]["nullable"] is True
    assert (schema["accuracy"]["minimum"], schema["accuracy"]["maximum"]) == (0, 1)


def test_the_crd_node_entries_are_contract_records_plus_what_the_operator_sees() -> None:
    node = crdgen.status_schema()["properties"]["nodes"]["items"]
    props = node["properties"]
    assert set(wire_fields(NodeRecord)) <= set(props)
    assert set(props) - set(wire_fields(NodeRecord)) == {
        "pod",
        "phase",
        "ready",
        "restarts",
        "lastFailureReason",
    }
    assert node["required"] == ["id"]  # a node the root has not measured yet has no record
    assert (props["reputation"]["minimum"], props["reputation"]["maximum"]) == (0, 1)
    assert props["lastRound"]["minimum"] == -1
    assert props["role"]["enum"] == ["worker", "aggregator", "root"]


# ---------------------------------------------------------------------------------------------
# The root's real output


@pytest.mark.integration
def test_a_real_root_status_parses_as_the_operators_model(tmp_path: Path) -> None:
    doc = yaml.safe_load((ROOT / "examples" / "digits.yaml").read_text())
    # Small and quick, but with interior aggregators, so records of both roles reach the root.
    doc["spec"]["workers"]["replicas"] = 4
    doc["spec"]["topology"]["branchingFactor"] = 2
    doc["spec"]["training"]["syncEvery"] = 5
    manifest = tmp_path / "digits.yaml"
    manifest.write_text(yaml.safe_dump(doc))
    out = tmp_path / "out"
    paths = [ROOT / "contract" / "src", ROOT / "worker" / "src", ROOT / "operator" / "src"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(map(str, paths))}
    argv = ["run", str(manifest), "--rounds", "2", "--output", str(out), "--quiet"]
    run = subprocess.run(
        [sys.executable, "-m", "swarm_worker.cli", *argv],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
        env=env,
    )
    assert run.returncode == 0, run.stderr
    raw = (out / "result.json").read_text()
    data = json.loads(raw)
    # The root writes exactly the contract's fields: a field added on one side only fails here.
    assert tuple(data) == wire_fields(RootStatus)
    assert all(tuple(n) == wire_fields(NodeRecord) for n in data["nodes"])
    direct = RootStatus.model_validate(data)
    parsed = parse_root_status(raw)
    assert parsed == direct
    assert (direct.phase, direct.round, direct.rounds) == ("Succeeded", 2, 2)
    assert {n.role for n in direct.nodes} == {"worker", "aggregator"}
    assert len(direct.nodes) == 6  # 4 workers and 2 aggregators, all measured by their parents
