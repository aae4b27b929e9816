"""What a child's UPDATE must be to enter a round, checked after the codec validated its bytes:
exactly the tensors an update carries, a vector of θ's length, on the round's common support when
there is one, header fields within what the child's subtree can hold, and values in the form and
size an honest child of this spec sends (`ValueRules`). A failed check is a `DropReason` (the
`reason` label of the dropped-messages counter), never an exception.

The forms honest nodes send (roles/worker.py, roles/aggregator.py), all that is accepted:
    worker, top-k          sparse, values in the wire dtype (`compression.valueDtype`)
    worker, no compression dense fp32
    aggregator             sparse in the wire dtype (fp32 without compression), or dense fp32
                           when at least half its entries are nonzero (`compression.to_wire`)

An accepted update is kept in the form it came in, never densified here (`ChildUpdate`): on the
round's common support its k values in the support's order (zeros where the child sent nothing),
else its own ascending indices and values, or the dense (d,) vector a dense payload is; values fp32.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from enum import StrEnum

import torch

from swarm_contract.spec import SwarmSpec
from swarm_worker.maths.compression import SparseVector, wire_dtype
from swarm_worker.maths.support import on_support
from swarm_worker.protocol.codec import Message, Payload


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
    DTYPE = "dtype"  # values in a dtype or encoding no honest child of this spec sends
    MAGNITUDE = "magnitude"  # a value above robustness.maxUpdateRatio x max(1, max |θ|)


@dataclass(frozen=True)
class ChildUpdate:
    """One accepted update, in its own form (module docstring); `vector` densifies it on demand."""

    #: fp32: the dense (d,) vector when `indices` is None, else the values at `indices`.
    values: torch.Tensor
    #: int64 ascending coordinates of θ (on the CPU); None: `values` is dense.
    indices: torch.Tensor | None
    numel: int
    samples: int
    workers: int
    loss: float
    votes: SparseVector | None = None  # common support: where the subtree wants to send next
    #: `indices` is the round's common support: `values` is (k,), zeros where the child sent nothing.
    on_support: bool = False

    @property
    def vector(self) -> torch.Tensor:
        """(d,) fp32 dense, on the device of `values`."""
        if self.indices is None:
            return self.values
        out = torch.zeros(self.numel, dtype=torch.float32, device=self.values.device)
        out[self.indices.to(out.device)] = self.values
        return out

    def to(self, device: torch.device) -> ChildUpdate:
        """The same update with its values on `device` (moved once, when the round takes it); the
        indices stay on the CPU, where the support and the rows' columns are computed."""
        return replace(self, values=self.values.to(device))


@dataclass(frozen=True)
class ValueRules:
    """The values one child may send in one round: see the module docstring and `value_rules`."""

    #: The dtype of a sparse update's values (`maths.compression.wire_dtype`).
    sparse_dtype: torch.dtype
    sparse: bool  # a sparse update is a form this child sends
    dense: bool  # a dense fp32 vector is a form this child sends
    #: Largest |value| accepted.
    max_abs: float


def value_rules(spec: SwarmSpec, child_role: str, theta: torch.Tensor) -> ValueRules:
    """What a child of role `child_role` may send in a round on θ (d,).

    The bound is `robustness.maxUpdateRatio` x max(1, max |θ|): an honest update is H local steps of
    lr-scaled gradients, a small multiple of the model's own scale (see the field's documentation for
    the figures), and an aggregate of bounded updates (every rule combines its inputs convexly, up to
    the clipping rules' bounded steps) stays within the same bound, so it holds at every level.
    """
    compressed = spec.compression.method == "topk"
    scale = max(1.0, float(theta.abs().max())) if theta.numel() else 1.0
    return ValueRules(
        sparse_dtype=wire_dtype(spec),
        sparse=child_role != "worker" or compressed,
        dense=child_role != "worker" or not compressed,
        max_abs=spec.robustness.max_update_ratio * scale,
    )


def values_fit(payload: Payload, rules: ValueRules) -> DropReason | None:
    """None when the payload's form, dtype and largest |value| are what `rules` allow, else why not."""
    if isinstance(payload, SparseVector):
        if not rules.sparse or payload.values.dtype != rules.sparse_dtype:
            return DropReason.DTYPE
        values = payload.values
    else:
        if not rules.dense or payload.dtype != torch.float32:
            return DropReason.DTYPE
        values = payload
    # The codec refused non-finite values, so the maximum is a number; compared in fp32 (fp16 fits).
    largest = float(values.abs().max()) if values.numel() else 0.0
    return DropReason.MAGNITUDE if largest > rules.max_abs else None


def check_update(
    msg: Message, numel: int, support: torch.Tensor | None, max_workers: int, rules: ValueRules
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
    if (unfit := values_fit(payload, rules)) is not None:
        return unfit
    meta = msg.meta

    def update(values: torch.Tensor, indices: torch.Tensor | None) -> ChildUpdate:
        samples, workers, loss = meta["samples"], meta["workers"], float(meta["loss"])
        common = indices is not None and indices is support
        return ChildUpdate(values, indices, numel, samples, workers, loss, votes, common)

    if not isinstance(payload, SparseVector):
        return update(payload.flatten().to(torch.float32), None)
    indices, values = payload.indices.long(), payload.values.to(torch.float32)
    if support is None:
        return update(values, indices)
    # On the common support: its k values in the support's order, so the rows of a round stack as
    # (n, k) (the check above proved every index is on the support).
    values_on_support = torch.zeros(support.numel(), dtype=torch.float32)
    values_on_support[torch.searchsorted(support, indices)] = values
    return update(values_on_support, support)
