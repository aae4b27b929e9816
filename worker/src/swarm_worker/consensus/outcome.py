"""One round's outcome at the root: the outer step from a round's result to the next model, the
MODEL message's tensors and the commit point that names them (protocol.certificate).

Deterministic: the same θ, momentum, support and round result give the same bits, so every root
replica computes the same point from the same inputs, and a single root (R = 1) signs the same
thing its replicas would. The caller decides what to do with it: commit at once (roles.root with
one root: its own signature is the certificate, quorum 1), or vote on it (consensus.replica).

Device: θ, the momentum and the change live on the root's device; the change is computed there in
fp32, rounded to the wire dtype, and θ adds exactly those rounded values (one fp32 addition per
coordinate, correctly rounded on CPU and CUDA alike: node.model_sync); the same values are copied
to the host for the message.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, Final

import msgpack
import torch

from swarm_contract.spec import SwarmSpec
from swarm_worker.maths.compression import SparseVector, dense_to_sparse, wire_dtype
from swarm_worker.maths.support import next_support
from swarm_worker.node.round import RoundResult
from swarm_worker.protocol.certificate import Certificate, CommitPoint, sign_point, theta_digest
from swarm_worker.protocol.curve import NodeKeys
from swarm_worker.protocol.signing import tensors_digest
from swarm_worker.training.steps import OuterStep

_INPUTS_DOMAIN: Final = b"ncrsh-swarm inputs v1\0"


def apply_change(
    theta: torch.Tensor, change: torch.Tensor, dtype: torch.dtype, delta: bool
) -> tuple[torch.Tensor, SparseVector | None]:
    """θ after `change` (both on the root's device), and the delta to send on the host (None: send
    the dense θ). The root applies exactly the (rounded) values it sends, as every child does
    (node.model_sync), so every copy of θ stays bit-identical. Changes `theta` in place."""
    wire = dense_to_sparse(change, dtype) if delta else None
    if wire is None or 2 * wire.indices.numel() >= change.numel():
        return theta + change, None  # nearly dense (e.g. outer momentum): the dense model is smaller
    theta[wire.indices.long()] += wire.values.to(torch.float32)  # exactly what every child does
    return theta, wire.to("cpu")  # the same values, for the codec


def inputs_digest(inputs: list[tuple[str, bytes]]) -> bytes:
    """sha256 of a round's inputs: (child id, digest of its update) pairs, in child order."""
    return hashlib.sha256(_INPUTS_DOMAIN + msgpack.packb(sorted(inputs), use_bin_type=True)).digest()


@dataclass(frozen=True)
class Outcome:
    """The round `base_round`'s result turned into θ_{base_round + 1} and the message that sends it."""

    base_round: int
    result: RoundResult
    theta: torch.Tensor
    #: The next round's common support (None without one).
    support: torch.Tensor | None
    #: What the MODEL message carries: the delta (and support), or None to send the dense θ.
    delta_tensors: dict[str, Any] | None
    point: CommitPoint


def compute_outcome(
    spec: SwarmSpec,
    job: str,
    view: int,
    outer: OuterStep,
    theta: torch.Tensor,
    support: torch.Tensor | None,
    base_round: int,
    result: RoundResult,
    inputs: bytes,
    numel: int,
) -> Outcome:
    """The outer step (changes `outer`'s momentum and `theta` in place: pass copies to try one)."""
    change = outer.step(result.vector, result.agreement)
    theta, wire = apply_change(theta, change, wire_dtype(spec), spec.compression.broadcast == "delta")
    k = support.numel() if support is not None else 0
    next_round = base_round + 1
    if support is not None:
        support = next_support(result.votes, numel, k, spec.training.seed, next_round)
    tensors: dict[str, Any] | None = None
    if wire is not None:
        tensors = {"theta": wire}
        if support is not None:
            tensors["support"] = support.to(torch.int32)
    dense: dict[str, Any] = {"theta": theta}
    if support is not None:
        dense["support"] = support.to(torch.int32)
    point = CommitPoint(
        job=job,
        view=view,
        round=next_round,
        base_round=base_round,
        inputs=inputs,
        model=tensors_digest(tensors if tensors is not None else {k: v.cpu() for k, v in dense.items()}),
        theta=theta_digest(theta, support),
    )
    return Outcome(base_round, result, theta, support, tensors, point)


def own_certificate(point: CommitPoint, keys: NodeKeys) -> Certificate:
    """A single root's certificate: its own signature (quorum 1 with one replica)."""
    return Certificate(point=point, signatures=((keys.node_id, sign_point(point, keys.signer)),))


def held_certificate(
    job: str, round_index: int, theta: torch.Tensor, support: torch.Tensor | None, keys: NodeKeys
) -> Certificate:
    """A single root's certificate for the θ it holds at start (θ_0, or a checkpoint's): what its
    dense model carries to a child that says HELLO before the next round commits."""
    dense: dict[str, Any] = {"theta": theta.cpu()}
    if support is not None:
        dense["support"] = support.to(torch.int32)
    point = CommitPoint(
        job=job,
        view=0,
        round=round_index,
        base_round=round_index - 1,
        inputs=inputs_digest([]),
        model=tensors_digest(dense),
        theta=theta_digest(theta, support),
    )
    return own_certificate(point, keys)
