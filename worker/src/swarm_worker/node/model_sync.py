"""Applying a MODEL message to the θ a node holds: the one place every role (worker, aggregator)
changes its copy of the model, so every copy stays bit-identical with the root's.

A dense MODEL (`base_round` < 0) replaces θ; a delta (`base_round` = the round it was made from)
adds its values at its indices, exactly as the root applied them. A delta on another base round, or
for another model size, is refused (None): the node asks for the dense model instead.
"""

from __future__ import annotations

import hashlib

import torch

from swarm_worker.maths.compression import SparseVector
from swarm_worker.protocol.codec import Message


def apply_model(theta: torch.Tensor | None, round_held: int, msg: Message) -> torch.Tensor | None:
    """θ after a MODEL message, or None when a delta does not fit the model held (resync needed)."""
    payload = msg.tensors.get("theta")
    if payload is None:
        return None
    if msg.meta["base_round"] < 0:
        if not isinstance(payload, torch.Tensor) or (theta is not None and payload.numel() != theta.numel()):
            return None
        return payload.to(torch.float32).clone()
    if theta is None or msg.meta["base_round"] != round_held or not isinstance(payload, SparseVector):
        return None
    if payload.numel != theta.numel():
        return None
    theta[payload.indices.long()] += payload.values.to(torch.float32)
    return theta


def model_digest(theta: torch.Tensor) -> str:
    """16 hex digits of the SHA-256 of θ's fp32 bytes: equal on two nodes iff their copies are
    bit-identical (logged by every node each round, so a test can compare them across processes)."""
    data = theta.detach().to(torch.float32).contiguous().cpu().numpy().tobytes()
    return hashlib.sha256(data).hexdigest()[:16]
