"""State transfer between root replicas: what a replica that fell behind (restarted, cut off) fetches
from the others to go on from the last committed round, without any volume.

A `state` mesh message carries the sender's committed round, the certificate of the model that
opens it, its metrics history, its books (reputations, subtree records), its elapsed time, and one
codec MODEL message with θ and, when there are any, the outer momentum, the common support and the
previous aggregate. The receiver believes θ and the support only because the certificate (2f + 1
replica signatures) names their digest: a lying sender cannot make it apply another model. The
books, momentum and previous aggregate are not in the certificate: a replica that took wrong ones
from a liar would compute other values than the honest replicas and be outvoted like any faulty
one (it cannot make anything commit); it takes them from the first sender whose θ checks out. They
are validated all the same, record by record (types, bounds, at most one per node of the job): a
liar's NaN or string must not break the scoring of the replica that took it.
"""

from __future__ import annotations

from dataclasses import dataclass
from dataclasses import fields as fields_of
from typing import Any

import torch

from swarm_contract.records import MAX_ID_LENGTH, valid_records
from swarm_worker.consensus.wire import certificate_fields, encode_mesh
from swarm_worker.maths.reputation import FIRST_CONTACT_ROUNDS, MAX_REPUTATION, MIN_REPUTATION, NodeReputation
from swarm_worker.node.combine import Aggregate
from swarm_worker.protocol.certificate import Certificate, theta_digest
from swarm_worker.protocol.codec import Message, encode


def state_frames(
    job: str,
    node: str,
    certificate: Certificate,
    theta: torch.Tensor,
    momentum: torch.Tensor | None,
    support: torch.Tensor | None,
    previous: Aggregate | None,
    history: list[dict[str, Any]],
    books: dict[str, Any],
    elapsed: float,
) -> list[Any]:
    """A `state` mesh message of the round `certificate` opens."""
    tensors: dict[str, Any] = {"theta": theta.detach().cpu()}
    if momentum is not None:
        tensors["momentum"] = momentum.detach().cpu()
    if support is not None:
        tensors["support"] = support.detach().cpu().to(torch.int32)
    if previous is not None:
        tensors["previous"] = previous.dense().detach().cpu().to(torch.float32)
    meta = {"base_round": -1, "final": False}
    nested = encode(Message("model", job, certificate.point.round, node, meta, tensors))
    wire_books = {
        "reputations": [vars(r).copy() for r in books["reputations"].values()],
        "subtree": list(books["subtree"].values()),
    }
    fields = {
        "round": certificate.point.round,
        "cert": certificate_fields(certificate),
        "history": history,
        "books": wire_books,
        "elapsed": elapsed,
    }
    return encode_mesh(job, "state", fields, [nested])


@dataclass(frozen=True)
class FetchedState:
    round: int
    certificate: Certificate
    theta: torch.Tensor
    momentum: torch.Tensor | None
    support: torch.Tensor | None
    previous: Aggregate | None
    history: list[dict[str, Any]]
    reputations: dict[str, NodeReputation]
    subtree: dict[str, Any]
    elapsed: float


_SCORES = {
    "reputation": (MIN_REPUTATION, MAX_REPUTATION),
    "uptime": (0, 1),
    "agreement": (0, 1),
    "contribution": (0, 1),
}
_COUNTS = {
    "rounds_below": (0, 1 << 31),
    "last_round": (-1, 1 << 31),
    "unscored_misses": (0, FIRST_CONTACT_ROUNDS),
}


def _reputation(raw: Any) -> NodeReputation:
    """One reputation record of a peer's books, every field of its type and in its bounds (a liar's
    NaN, string or huge number would break this replica's scoring later); ValueError otherwise."""
    if not isinstance(raw, dict) or set(raw) != {f.name for f in fields_of(NodeReputation)}:
        raise ValueError("fields")
    for name in ("node_id", "role", "parent"):
        if not isinstance(raw[name], str) or len(raw[name]) > MAX_ID_LENGTH:
            raise ValueError(name)
    for name, (low, high) in _SCORES.items():
        value = raw[name]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
            raise ValueError(name)  # NaN fails the comparison too
    for name, (low, high) in _COUNTS.items():
        if isinstance(raw[name], bool) or not isinstance(raw[name], int) or not low <= raw[name] <= high:
            raise ValueError(name)
    if not isinstance(raw["quarantined"], bool):
        raise ValueError("quarantined")
    return NodeReputation(**raw)


def read_state(
    fields: dict[str, Any], tensors: Message, numel: int, momentum_expected: bool, max_nodes: int
) -> FetchedState | str:
    """The state of a `state` mesh message whose certificate the caller verified, or why it is
    refused (θ or the support not what the certificate names, a tensor of the wrong size, books
    that do not validate or hold more records than the job has nodes, `max_nodes`)."""
    cert: Certificate = fields["cert"]
    t = tensors.tensors
    theta, support = t.get("theta"), t.get("support")
    if not isinstance(theta, torch.Tensor) or theta.numel() != numel or theta.dtype != torch.float32:
        return "theta"
    if support is not None and not isinstance(support, torch.Tensor):
        return "support"
    if fields["round"] != cert.point.round or theta_digest(theta, support) != cert.point.theta:
        return "theta-digest"
    momentum = t.get("momentum")
    if momentum_expected != (momentum is not None) or (
        isinstance(momentum, torch.Tensor) and (momentum.numel() != numel or momentum.dtype != torch.float32)
    ):
        return "momentum"
    previous = t.get("previous")
    if previous is not None and (not isinstance(previous, torch.Tensor) or previous.numel() != numel):
        return "previous"
    books = fields["books"]
    try:
        reputations = {r.node_id: r for r in map(_reputation, books["reputations"])}
        subtree_records, invalid = valid_records(books["subtree"])
    except (KeyError, TypeError, ValueError):
        return "books"
    if invalid or max(len(reputations), len(subtree_records)) > max_nodes:
        return "books"
    subtree = {r.id: r.model_dump(by_alias=True) for r in subtree_records}
    return FetchedState(
        round=cert.point.round,
        certificate=cert,
        theta=theta.clone(),
        momentum=None if not isinstance(momentum, torch.Tensor) else momentum.clone(),
        support=None if support is None else support.to(torch.int64).clone(),
        previous=Aggregate(previous.clone(), None, numel) if isinstance(previous, torch.Tensor) else None,
        history=list(fields["history"]),
        reputations=reputations,
        subtree=subtree,
        elapsed=fields["elapsed"],
    )
