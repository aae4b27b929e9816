"""Only certified models are applied: the check every worker and aggregator runs on a MODEL before
its θ changes.

The root's replicas sign each committed outer step (swarm_worker.protocol.certificate); the root
attaches the commit certificate to every MODEL it sends as meta `cert`, an aggregator forwards a
delta as received (its `cert` with it) and attaches the certificate of the round it holds to the
dense model it builds (`AggregatorShell._dense`). A node with keys (`--keys`) applies a MODEL only
when `certificate_refusal` returns None:

    cert        present and well formed for R replicas (`certificate_from_wire`)
    signatures  at least commit_quorum(R) = 2f + 1 valid signatures of distinct replicas, checked
                with the replicas' verify keys (`NodeKeys.replica_verify`; one, the root's, for R = 1)
    names it    a delta (base_round >= 0): the point's job, round, base round and the digest of
                the message's tensors (`model_mismatch`); a dense model (base_round = -1): the
                point's job and round, and `theta_digest(θ, support)` = point.theta, θ being the
                message's `theta` as fp32 and support its `support` tensor, if any

Both parts run before θ changes, so a node never holds a θ that failed. For a dense model that is
the same check as hashing the θ `model_sync.apply_model` returns: that θ is the payload converted
to fp32 (exact, deterministic), and `theta_digest` hashes exactly that fp32 conversion. A delta is
certified through its tensors; the θ it yields is the certified one because the θ it applies to
was (by induction from θ_0, which every node builds itself).

A rollback (a dense model for a round older than the one held: the root resumed from a checkpoint)
passes only with a valid certificate, like any model; `model_sync.accepted_round` logs and counts it.

Without keys (plain links, some tests) nothing is checked: today's behaviour.
"""

from __future__ import annotations

import logging

import torch

from swarm_contract.consensus import commit_quorum
from swarm_worker.protocol.certificate import (
    certificate_from_wire,
    model_mismatch,
    theta_digest,
    verify_certificate,
)
from swarm_worker.protocol.codec import CodecError, Message
from swarm_worker.protocol.curve import NodeKeys

log = logging.getLogger("swarm")
#: The dropped-messages reason of a refused model (NodeMetrics.dropped).
DROP_REASON = "certificate"


def certificate_refusal(msg: Message, keys: NodeKeys | None, replicas: int) -> str | None:
    """None when the MODEL `msg` may be applied (see the module docstring), else why not: "missing",
    "wire" (malformed), a `verify_certificate` reason ("quorum", "signature", ...), the field of
    the point that does not name the message ("job", "round", "base_round", "model"), "payload"
    or "support" (a dense model's tensors are not tensors), or "theta". No keys: always None."""
    if keys is None:
        return None
    raw = msg.meta.get("cert")
    if raw is None:
        return "missing"
    try:
        cert = certificate_from_wire(raw, replicas)
    except CodecError:
        return "wire"
    # Cheap comparisons first: a stale or misdirected certificate costs no signature check.
    point = cert.point
    if point.job != msg.job:
        return "job"
    if point.round != msg.round:
        return "round"
    dense = msg.meta["base_round"] < 0  # the codec checked it is an integer
    if not dense:
        # The base round and the tensors' digest (hashes the delta's frames: 1% of θ or so).
        mismatch = model_mismatch(point, msg)
        if mismatch is not None:
            return mismatch
    problem = verify_certificate(cert, keys.replica_verify, commit_quorum(replicas))
    if problem is not None:
        return problem
    if dense:
        theta, support = msg.tensors.get("theta"), msg.tensors.get("support")
        if not isinstance(theta, torch.Tensor):
            return "payload"
        if support is not None and not isinstance(support, torch.Tensor):
            return "support"
        if theta_digest(theta, support) != point.theta:
            return "theta"
    return None


def refused_model(msg: Message, keys: NodeKeys | None, replicas: int, node_id: str, sender: str) -> bool:
    """Whether the MODEL `msg` from `sender` must be dropped: counted by the caller as
    DROP_REASON; one WARNING line here names the reason, the round and the sender."""
    reason = certificate_refusal(msg, keys, replicas)
    if reason is None:
        return False
    log.warning(
        "%s: refused the model of round %d from %s: certificate %s", node_id, msg.round, sender, reason
    )
    return True
