"""A replica catching up takes θ only as its certificate names it, and books only when every record
is of its type and in its bounds: a lying replica's books are refused whole, never half-installed."""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch

from swarm_worker.consensus.transfer import FetchedState, read_state
from swarm_worker.maths.reputation import NodeReputation
from swarm_worker.protocol.certificate import Certificate, CommitPoint, theta_digest
from swarm_worker.protocol.codec import Message

NUMEL = 16
THETA = torch.arange(NUMEL, dtype=torch.float32)
CERT = Certificate(CommitPoint("j", 0, 7, 6, b"i" * 32, b"m" * 32, theta_digest(THETA, None)), ())
RECORD = {
    "id": "worker-0",
    "role": "worker",
    "parent": "root",
    "reputation": 0.9,
    "uptime": 1.0,
    "agreement": 0.8,
    "contribution": 0.7,
    "quarantined": False,
    "lastRound": 6,
}


def _state(reputations: list[Any], subtree: list[Any] | None = None, theta: torch.Tensor = THETA) -> Any:
    fields = {
        "round": 7,
        "cert": CERT,
        "history": [],
        "books": {"reputations": reputations, "subtree": [] if subtree is None else subtree},
        "elapsed": 1.0,
    }
    return read_state(fields, Message("model", "j", 7, "root-1", {}, {"theta": theta}), NUMEL, False, 4)


def _honest() -> dict[str, Any]:
    return vars(NodeReputation("worker-0", "worker", "root", reputation=0.7, last_round=6)).copy()


def test_an_honest_state_installs() -> None:
    fetched = _state([_honest()], [RECORD])
    assert isinstance(fetched, FetchedState)
    assert fetched.round == 7
    assert fetched.reputations["worker-0"].reputation == 0.7
    assert fetched.subtree["worker-0"]["lastRound"] == 6


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("reputation", math.nan),
        ("reputation", 5.0),
        ("uptime", "1.0"),
        ("agreement", True),
        ("rounds_below", -1),
        ("rounds_below", 2.5),
        ("last_round", 1 << 40),
        ("unscored_misses", 99),
        ("quarantined", 0),
        ("node_id", "x" * 300),
        ("role", None),
    ],
)
def test_a_record_out_of_type_or_bounds_refuses_the_books(field: str, value: Any) -> None:
    assert _state([{**_honest(), field: value}]) == "books"


def test_unknown_or_missing_fields_and_too_many_records_refuse_the_books() -> None:
    assert _state([{**_honest(), "extra": 1}]) == "books"
    missing = _honest()
    del missing["uptime"]
    assert _state([missing]) == "books"
    assert _state(["not a record"]) == "books"
    many = [{**_honest(), "node_id": f"worker-{i}"} for i in range(5)]  # the job has 4 nodes
    assert _state(many) == "books"
    assert _state([_honest()], [{**RECORD, "reputation": "high"}]) == "books"


def test_theta_not_the_certified_one_is_refused() -> None:
    assert _state([_honest()], theta=THETA + 1) == "theta-digest"
