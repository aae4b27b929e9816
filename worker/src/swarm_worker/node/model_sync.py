"""Applying a MODEL message to the θ a node holds: the one place every role (worker, aggregator)
changes its copy of the model, so every copy stays bit-identical with the root's.

A dense MODEL (`base_round` < 0) replaces θ; a delta (`base_round` = the round it was made from)
adds its values at its indices, exactly as the root applied them. A delta on another base round, or
for another model size, is refused (None): the node asks for the dense model instead.

Bit-identity across devices. θ_0 is the same bits everywhere (built on the CPU from the seed, then
copied to each node's device: `node.runtime`). Afterwards θ changes only here and at the root, which
applies exactly the message it sends (`roles.root`): a dense model is a copy of the root's fp32 θ;
a delta adds values v (fp16, bf16 or fp32) at unique indices S. On any device that is: copy S and v
(exact), widen v to fp32 (exact: fp16 and bf16 are subsets of fp32), then θ[i] = θ[i] + v[i], one
IEEE-754 binary32 addition per coordinate, correctly rounded to nearest-even on the CPU and on CUDA
alike (no fused multiply-add, no reduction, no order to differ; PyTorch builds its kernels without
fast-math, so subnormals are kept on both). Same inputs, same correctly rounded result: by induction
over rounds every copy of θ equals the root's bit for bit, whatever device each node computes on.
`model_digest` checks it across processes.

Going back a round. A dense MODEL may be for an older round than the one held: the parent's root
resumed from its last checkpoint (a replaced root pod), or, with reshuffled parents, a parent that is
behind. It comes from the authenticated parent and is applied (the explicit resync: the node trains
that round again), but never silently: `accepted_round` logs one WARNING naming both rounds and counts
it in `swarm_model_rollbacks_total`.
"""

from __future__ import annotations

import hashlib
import logging

import torch

from swarm_worker.maths.compression import SparseVector
from swarm_worker.node.telemetry import NodeMetrics
from swarm_worker.protocol.codec import Message

log = logging.getLogger("swarm")


def apply_model(
    theta: torch.Tensor | None, round_held: int, msg: Message, device: torch.device | None = None
) -> torch.Tensor | None:
    """θ after a MODEL message, or None when a delta does not fit the model held (resync needed).

    Computed on θ's device (a delta is changed in place there); a dense model lands on `device`,
    else on θ's, else on the CPU. Always a tensor of its own, never a view of the received frame.
    """
    payload = msg.tensors.get("theta")
    if payload is None:
        return None
    if msg.meta["base_round"] < 0:
        if not isinstance(payload, torch.Tensor) or (theta is not None and payload.numel() != theta.numel()):
            return None
        target = device or (theta.device if theta is not None else torch.device("cpu"))
        return payload.to(target, torch.float32, copy=True)
    if theta is None or msg.meta["base_round"] != round_held or not isinstance(payload, SparseVector):
        return None
    if payload.numel != theta.numel():
        return None
    delta = payload.to(theta.device)
    theta[delta.indices.long()] += delta.values.to(torch.float32)
    return theta


def accepted_round(metrics: NodeMetrics, node_id: str, round_held: int, msg: Message) -> int:
    """The round of `msg`, a MODEL just applied over θ of `round_held`; when it is an older round,
    one WARNING line names both rounds and the parent, and `swarm_model_rollbacks_total` counts it."""
    if msg.round < round_held:
        metrics.model_rollbacks.inc()
        log.warning(
            "%s: round %d -> %d: the parent %s sent an older model (the root resumed from a checkpoint, "
            "or the parent is behind); resyncing to it",
            node_id,
            round_held,
            msg.round,
            msg.node,
        )
    return int(msg.round)


#: 16-bit halves of θ per block of the digest's fingerprint, and halves reduced per pass (a
#: multiple of the block; bounds the float64 temporaries to 32 MiB whatever d is).
_BLOCK = 4096
_PASS = 1 << 22


def _digest_weights(device: torch.device) -> torch.Tensor:
    """(_BLOCK, 3) float64 integer weights: ones, then two columns of fixed pseudo-random values in
    [1, 2^16), drawn on the CPU (the same numbers on every node and device)."""
    gen = torch.Generator().manual_seed(0x5EED_D16E)
    weights = torch.randint(1, 1 << 16, (_BLOCK, 3), generator=gen, dtype=torch.int64)
    weights[:, 0] = 1
    return weights.to(device, torch.float64)


@torch.no_grad()
def model_digest(theta: torch.Tensor) -> str:
    """16 hex digits that are equal on two nodes when their copies of θ are bit-identical (logged by
    every node each round, so a test can compare them across processes).

    Computed on θ's device, so a GPU worker reads back kilobytes instead of 4·d bytes each round.
    θ's fp32 bytes are read as 16-bit integers h (2·d of them, in memory order, |h| <= 2^15), cut
    into blocks of 4096 (the last one zero-padded), and each block is reduced to Σ h, Σ w1·h and
    Σ w2·h with fixed pseudo-random integer weights 0 < w < 2^16, as one float64 matrix product.
    Every term and every partial sum is an integer of magnitude below 2^43 < 2^53, so float64 holds
    each exactly: any summation order, with or without
    fused multiply-add, on any IEEE-754 device, gives the same numbers. The digest is the SHA-256 of
    d and of these sums. A change of one half in a block always changes Σ h; two changes that cancel
    in Σ h still change Σ w·h unless their weights agree in both columns (chance 2^-32); any other
    change escapes with a probability of about 2^-32 per block.
    """
    flat = theta.detach().to(torch.float32).contiguous().reshape(-1)
    halves = flat.view(torch.int16)  # little-endian on every supported host and GPU
    weights = _digest_weights(flat.device)
    n = halves.numel()
    full = n - n % _BLOCK
    sums = [
        halves[start : min(start + _PASS, full)].to(torch.float64).view(-1, _BLOCK) @ weights
        for start in range(0, full, _PASS)
    ]  # (blocks, 3) exact integers per pass
    if full < n:
        tail = torch.zeros(_BLOCK, dtype=torch.float64, device=flat.device)
        tail[: n - full] = halves[full:]
        sums.append(tail.view(1, _BLOCK) @ weights)
    digest = hashlib.sha256(str(flat.numel()).encode())
    if sums:
        digest.update(torch.cat(sums).cpu().numpy().tobytes())
    return digest.hexdigest()[:16]
