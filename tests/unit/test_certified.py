"""Only certified models are applied (swarm_worker.node.certified): real job keys written to disk,
real ed25519 signatures by the root's replicas, messages as a receiver decodes them."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from swarm_contract.consensus import replica_ids
from swarm_contract.topology import plan_tree
from swarm_worker.maths.compression import SparseVector
from swarm_worker.node.certified import certificate_refusal, refused_model
from swarm_worker.node.model_sync import accepted_round, apply_model
from swarm_worker.node.telemetry import NodeMetrics
from swarm_worker.protocol.certificate import (
    Certificate,
    CommitPoint,
    certificate_to_wire,
    sign_point,
    tensors_digest,
    theta_digest,
)
from swarm_worker.protocol.codec import Message, Payload, decode, encode
from swarm_worker.protocol.curve import NodeKeys, load_node_keys, write_job_keys

R = 4  # f = 1, quorum 3
JOB = "digits"
D = 12
TREE = plan_tree(4, 2)  # agg-0 and agg-1 report to the root: to each of its 4 replicas


@dataclasses.dataclass(frozen=True)
class Job:
    node: NodeKeys  # agg-0's keys: what a child of the root checks with
    replicas: dict[str, NodeKeys]  # each replica's own keys (their signers)
    worker: NodeKeys  # a worker: holds a signing key, but is no replica


def job_keys(folder: Path, replicas: int = R) -> Job:
    write_job_keys(folder, TREE, replicas)

    def load(node_id: str) -> NodeKeys:
        return load_node_keys(folder, TREE, node_id, reshuffle=False, replicas=replicas)

    return Job(load("agg-0"), {r: load(r) for r in replica_ids(replicas)}, load("worker-0"))


@pytest.fixture(scope="module")
def job(tmp_path_factory: pytest.TempPathFactory) -> Job:
    return job_keys(tmp_path_factory.mktemp("keys"))


def received(msg: Message) -> Message:
    """What the child decodes: every frame as its own bytes object."""
    return decode([bytes(frame) for frame in encode(msg)])


def theta_at(round_index: int) -> torch.Tensor:
    return torch.linspace(-1.0, 1.0, D) * (round_index + 1)


SUPPORT = torch.tensor([0, 3, 7], dtype=torch.int32)


def delta_message(round_index: int = 8) -> Message:
    values = torch.tensor([0.5, -0.25, 2.0]).half()
    tensors: dict[str, Payload] = {"theta": SparseVector(SUPPORT, values, D), "support": SUPPORT}
    meta: dict[str, Any] = {"base_round": round_index - 1, "final": False}
    return Message("model", JOB, round_index, "root", meta, tensors)


def dense_message(round_index: int = 8, theta: torch.Tensor | None = None) -> Message:
    tensors: dict[str, Payload] = {
        "theta": theta_at(round_index) if theta is None else theta,
        "support": SUPPORT,
    }
    return Message("model", JOB, round_index, "root", {"base_round": -1, "final": False}, tensors)


def point_of(msg: Message, **changes: Any) -> CommitPoint:
    """The commit point the replicas sign for `msg`: for a dense model, the delta of the same round
    that the root sent (base round - 1 after it), named by θ's digest."""
    theta = msg.tensors["theta"]
    dense = msg.meta["base_round"] < 0
    assert isinstance(theta, torch.Tensor) or not dense
    point = CommitPoint(
        job=msg.job,
        view=0,
        round=msg.round,
        base_round=msg.round - 1,
        inputs=bytes(32),
        model=bytes(32) if dense else tensors_digest(msg.tensors),
        theta=theta_digest(theta if isinstance(theta, torch.Tensor) else theta_at(msg.round), SUPPORT),
    )
    return dataclasses.replace(point, **changes)


def certified(msg: Message, job: Job, signers: list[str], point: CommitPoint | None = None) -> Message:
    point = point_of(msg) if point is None else point
    sigs = tuple((r, sign_point(point, job.replicas[r].signer)) for r in signers)
    cert = certificate_to_wire(Certificate(point, sigs))
    return dataclasses.replace(msg, meta={**msg.meta, "cert": cert})


def forged_value(msg: Message) -> Message:
    payload = msg.tensors["theta"]
    assert isinstance(payload, SparseVector)
    values = payload.values.clone()
    values[1] = 1000.0
    return dataclasses.replace(
        msg, tensors={**msg.tensors, "theta": SparseVector(payload.indices, values, D)}
    )


QUORUM = ["root", "root-2", "root-3"]
CASES: list[tuple[str, Callable[[Job], Message], str | None]] = [
    ("valid-delta", lambda j: certified(delta_message(), j, QUORUM), None),
    ("valid-dense", lambda j: certified(dense_message(), j, QUORUM), None),
    ("all-four-sign", lambda j: certified(delta_message(), j, list(replica_ids(R))), None),
    ("forged-value-in-delta", lambda j: forged_value(certified(delta_message(), j, QUORUM)), "model"),
    (
        "wrong-theta-for-dense",
        lambda j: certified(dense_message(theta=theta_at(8) + 1e-3), j, QUORUM, point_of(dense_message())),
        "theta",
    ),
    ("missing-cert", lambda j: delta_message(), "missing"),
    ("two-of-four", lambda j: certified(delta_message(), j, ["root", "root-1"]), "quorum"),
    ("one-replica-thrice", lambda j: certified(delta_message(), j, ["root-1"] * 3), "duplicate-signer"),
    (
        "cert-of-another-round",
        lambda j: certified(delta_message(8), j, QUORUM, point_of(delta_message(7))),
        "round",
    ),
    (
        "delta-on-another-base",
        lambda j: certified(delta_message(), j, QUORUM, point_of(delta_message(), base_round=3)),
        "base_round",
    ),
    (
        "another-job",
        lambda j: certified(delta_message(), j, QUORUM, point_of(delta_message(), job="other")),
        "job",
    ),
    (
        "malformed",
        lambda j: dataclasses.replace(delta_message(), meta={**delta_message().meta, "cert": {}}),
        "wire",
    ),
]


@pytest.mark.parametrize(("make", "reason"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_a_model_is_applied_only_with_a_quorum_certificate_naming_it(
    job: Job, make: Callable[[Job], Message], reason: str | None
) -> None:
    assert certificate_refusal(received(make(job)), job.node, R) == reason


def test_a_signature_by_a_key_that_is_no_replicas_is_refused(job: Job) -> None:
    msg = delta_message()
    point = point_of(msg)
    # A worker's own valid signature, filed under replica names: what a lying relay could make.
    sigs = tuple((r, sign_point(point, job.worker.signer)) for r in QUORUM)
    forged = dataclasses.replace(
        msg, meta={**msg.meta, "cert": certificate_to_wire(Certificate(point, sigs))}
    )
    assert certificate_refusal(received(forged), job.node, R) == "signature"


def test_without_keys_nothing_is_checked(job: Job) -> None:
    assert certificate_refusal(received(delta_message()), None, R) is None


def test_one_root_signs_its_own_certificate(tmp_path: Path) -> None:
    single = job_keys(tmp_path, replicas=1)
    msg = received(certified(dense_message(), single, ["root"]))
    assert certificate_refusal(msg, single.node, 1) is None
    assert certificate_refusal(received(dense_message()), single.node, 1) == "missing"


@pytest.mark.parametrize("signed", [True, False], ids=["valid-cert", "no-valid-cert"])
def test_a_rollback_needs_a_valid_certificate_and_is_logged(
    job: Job, caplog: pytest.LogCaptureFixture, signed: bool
) -> None:
    """The root resumed from its round-3 checkpoint; this node holds round 8."""
    metrics = NodeMetrics("agg-0", "aggregator")
    held = theta_at(8)
    old = dense_message(3)
    msg = received(certified(old, job, QUORUM) if signed else certified(old, job, ["root"]))
    with caplog.at_level(logging.WARNING, logger="swarm"):
        refused = refused_model(msg, job.node, R, "agg-0", "root-2")
        if not refused:
            theta = apply_model(held, 8, msg)
            assert theta is not None
            assert accepted_round(metrics, "agg-0", 8, msg) == 3
            torch.testing.assert_close(theta, theta_at(3), rtol=0, atol=0)
    rollbacks = metrics.registry.get_sample_value(
        "swarm_model_rollbacks_total", {"node": "agg-0", "role": "aggregator"}
    )
    lines = [r.getMessage() for r in caplog.records]
    assert refused is not signed
    if signed:
        assert rollbacks == 1
        assert lines == [
            "agg-0: round 8 -> 3: the parent root sent an older model (the root resumed from a "
            "checkpoint, or the parent is behind); resyncing to it"
        ]
    else:
        assert rollbacks == 0
        assert lines == ["agg-0: refused the model of round 3 from root-2: certificate quorum"]
    torch.testing.assert_close(held, theta_at(8), rtol=0, atol=0)  # the θ held is never touched


def test_the_dense_check_is_the_digest_of_the_theta_apply_model_returns(job: Job) -> None:
    """Checked before θ changes, yet the same as hashing the θ the node ends up with."""
    msg = received(certified(dense_message(), job, QUORUM))
    theta = apply_model(torch.zeros(D), 7, msg)
    assert theta is not None
    cert = msg.meta["cert"]
    assert theta_digest(theta, SUPPORT) == cert["theta"]
