"""The records the pods report and the operator reads: one node's measured record, the root's status.

    NodeRecord   what a parent measured about one of its children (swarm_worker.maths.reputation);
                 travels up the tree in an UPDATE's `meta.nodes` (swarm_worker.protocol.codec checks
                 its fields and types against this model), is served by the root in
                 `RootStatus.nodes`, and is copied by the operator into `status.nodes[]` (the CRD's
                 schema of those entries is generated from it, swarm_operator.crdgen).
    RootStatus   the root's GET /status, its `result.json`, and its pod's termination message.

This module is the one place their fields are spelled. Field names are camelCase on the wire and in
JSON (`lastRound`), snake_case in Python (`last_round`); `model_dump(by_alias=True)` gives the wire
form. Types are strict and bounds are those of the measurement, so a record that breaks them was not
measured by an honest parent; unknown fields are ignored, so an operator reads a newer root's status.

Pure: pydantic only, no torch, so the operator imports it too.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from pydantic.alias_generators import to_camel

from swarm_contract.topology import Role

#: Longest node id, parent id or job name a record may hold: a DNS name.
MAX_ID_LENGTH = 253

Phase = Literal["Pending", "Running", "Succeeded", "Failed"]
#: A score in [0, 1].
Unit = Annotated[float, Field(ge=0, le=1)]
Count = Annotated[int, Field(ge=0)]
NodeId = Annotated[str, Field(min_length=1, max_length=MAX_ID_LENGTH)]


class _Record(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="ignore",
        frozen=True,
        # JSON's types as they are: `true` is no number, `"1"` no integer (an int is a float, as in JSON).
        strict=True,
        allow_inf_nan=False,
    )


class NodeRecord(_Record):
    """What a parent measured about one child: its reputation and the signals it is made of."""

    #: Node id in the tree: root, agg-<i>, worker-<rank>.
    id: NodeId
    role: Role
    #: The aggregator that measured this record (with reshuffling, the one that saw it last).
    parent: Annotated[str, Field(max_length=MAX_ID_LENGTH)]
    #: EMA of the round scores; weights the node's updates; below the threshold for long enough, the
    #: node is quarantined.
    reputation: Unit
    #: EMA of delivering a valid update before the round's deadline.
    uptime: Unit
    #: EMA of how much the robust rule kept of the node's updates, lowered by outlier scores.
    agreement: Unit
    #: EMA of the positive cosine of the node's updates with the aggregate.
    contribution: Unit
    #: The parent excludes the node's updates; the operator replaces its pod.
    quarantined: bool
    #: The last round the node delivered an update in; -1 before its first.
    last_round: Annotated[int, Field(ge=-1)]


class ConsensusStatus(_Record):
    """The root replicas' agreement (spec.consensus, R > 1), as one replica saw it."""

    replicas: Annotated[int, Field(ge=1)]
    #: f: replicas that may crash or lie.
    tolerated: Count
    view: Count
    leader: Annotated[str, Field(max_length=MAX_ID_LENGTH)]
    #: Views entered after view 0: each one a leader that failed to commit in time.
    view_changes: Count = 0
    #: Seconds from a round's proposal (sent, or first received by this replica) to its commit:
    #: the consensus latency, of the last round and the mean over the run.
    last_commit_seconds: Annotated[float, Field(ge=0)] = 0.0
    mean_commit_seconds: Annotated[float, Field(ge=0)] = 0.0
    #: Replica id -> what it was caught doing -> times ("wrong-model": its proposal's claimed
    #: result is not what its inputs give; "disagreed": it voted for another value than the one
    #: committed; "forged-input", "bad-proposal", "signature"...). At most R entries.
    faults: dict[str, dict[str, Count]] = Field(default_factory=dict)


class RootStatus(_Record):
    """The root's view of the whole job: progress, traffic and every node's record."""

    #: The SwarmTraining's name.
    job: Annotated[str, Field(max_length=MAX_ID_LENGTH)] = ""
    phase: Phase
    #: Rounds committed so far.
    round: Count
    #: Rounds the spec asks for.
    rounds: Annotated[int, Field(ge=1)]
    #: Test loss at the last evaluation; null before the first, and when it was not finite (a
    #: diverged run: JSON, and so the status of a Kubernetes object, has no NaN).
    loss: float | None = None
    #: Test accuracy at the last evaluation; null before the first.
    accuracy: Unit | None = None
    #: Bytes every node sent so far, as the nodes reported them.
    bytes_sent: Count = 0
    #: What the same messages would have cost as dense float32 tensors.
    dense_equivalent_bytes: Count = 0
    #: Training samples per second of the last round, over all workers.
    samples_per_second: Annotated[float, Field(ge=0)] = 0.0
    #: Seconds since the root started training.
    wall_seconds: Annotated[float, Field(ge=0)] = 0.0
    #: Every node's record, least recently measured ones included. Left out of the termination
    #: message when the whole would not fit there.
    nodes: list[NodeRecord] = Field(default_factory=list)
    #: Messages the root dropped, by reason (a codec error's label, "late", "quarantined", ...).
    dropped: dict[str, Count] = Field(default_factory=dict)
    #: The root replicas' agreement; null with one root.
    consensus: ConsensusStatus | None = None

    @field_validator("loss", mode="before")
    @classmethod
    def _finite_or_none(cls, value: Any) -> Any:
        if isinstance(value, float) and not math.isfinite(value):
            return None
        return value


def valid_records(entries: Iterable[Any]) -> tuple[list[NodeRecord], int]:
    """(the entries that are valid NodeRecords, how many were not).

    For readers of records that came from peers: one record out of bounds is dropped on its own
    rather than making the whole message (or status) unreadable.
    """
    kept: list[NodeRecord] = []
    bad = 0
    for entry in entries:
        try:
            kept.append(NodeRecord.model_validate(entry))
        except ValidationError:
            bad += 1
    return kept, bad


def wire_fields(model: type[BaseModel]) -> tuple[str, ...]:
    """The model's field names as they are spelled on the wire (camelCase), in order."""
    return tuple(info.alias or name for name, info in model.model_fields.items())
