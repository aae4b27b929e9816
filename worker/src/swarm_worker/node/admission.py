"""What a child's UPDATE must be to enter a round, checked after the codec validated its bytes:
exactly the tensors an update carries, a vector of θ's length, on the round's common support when
there is one, and header fields within what the child's subtree can hold. A failed check is a
`DropReason` (the `reason` label of the dropped-messages counter), never an exception.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

import torch

from swarm_worker.maths.compression import SparseVector
from swarm_worker.maths.support import on_support
from swarm_worker.protocol.codec import Message


class DropReason(StrEnum):
    """Why a child's message was not used (the `reason` label of the dropped-messages counter)."""

    UNKNOWN_NODE = "unknown-node"  # not a child of this aggregator in any round
    UNEXPECTED_TYPE = "unexpected-type"  # not an UPDATE (HELLOs are answered before accept)
    NOT_ASSIGNED = "not-assigned"  # reshuffled: it reports to another aggregator this round
    LATE = "late"  # for a round already closed or passed
    FUTURE_ROUND = "future-round"  # for a round this node has not opened
    DUPLICATE = "duplicate"  # a second update from the same child in one round
    QUARANTINED = "quarantined"  # its reputation stayed below the threshold
    SHAPE = "shape"  # wrong tensors, or a vector of another length than θ
    SUPPORT = "support"  # off the round's common support
    FIELD = "field"  # a header field out of range (more workers than its subtree has)


@dataclass(frozen=True)
class ChildUpdate:
    vector: torch.Tensor  # (d,) fp32, dense
    samples: int
    workers: int
    loss: float
    votes: SparseVector | None = None  # common support: where the subtree wants to send next


def check_update(
    msg: Message, numel: int, support: torch.Tensor | None, max_workers: int
) -> ChildUpdate | DropReason:
    """The update as (d,) fp32 with its counts, or why it cannot enter the round."""
    payload = msg.tensors.get("delta")
    votes = msg.tensors.get("votes")
    if payload is None or set(msg.tensors) - {"delta", "votes"}:
        return DropReason.SHAPE
    if votes is not None and (not isinstance(votes, SparseVector) or votes.numel != numel):
        return DropReason.SHAPE
    if support is not None and not (isinstance(payload, SparseVector) and on_support(payload, support)):
        return DropReason.SUPPORT
    if (payload.numel if isinstance(payload, SparseVector) else payload.numel()) != numel:
        return DropReason.SHAPE
    if msg.meta["workers"] > max_workers:
        return DropReason.FIELD
    vector = payload.to_dense() if isinstance(payload, SparseVector) else payload.to(torch.float32).flatten()
    meta = msg.meta
    return ChildUpdate(vector, meta["samples"], meta["workers"], float(meta["loss"]), votes)
