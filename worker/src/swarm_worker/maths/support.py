"""Common support for sparse updates, so that robust rules compare like with like.

With each worker sending its own top-k, supports differ, and a coordinate-wise rule (median,
trimmed mean) over zero-filled vectors sees mostly zeros: it is biased towards zero and can stall
training. With `compression.support: common`, every worker of round r sends its values on the same
index set S_r, announced by the root with the model:

    round r   worker:  a = Δ + e;  send a[S_r];  e = a - sent          (error feedback as usual)
                       vote for the k coordinates of largest |e|       (where it wants to send next)
              aggregator: robust rule on updates that share S_r (others dropped: "support");
                       sums its children's votes and forwards the k most voted
              root:    S_{r+1} = the k most voted coordinates (ties broken by a seeded random
                       priority; if fewer than k got votes, seeded random coordinates fill the rest)
    round 0   S_0 = k seeded random coordinates: every node computes it, nothing is sent.

This is global top-k with a one-round delay: the coordinates a majority of workers want. A Byzantine
voter can only move which coordinates are compared, never their values, and honest votes outnumber
it. Costs: the votes add 4 bytes per entry to each upload (int32 indices; their fp16 count is 2 more),
the support adds 4·k bytes to each model message. Pure functions; indices are int64, ascending.

Devices: each function computes on the `device` it is given (CPU by default; `merge_votes` defaults to
the votes' device), so a node on a GPU keeps S_r and the vote counts there. The seeded priority is
always drawn on the CPU and then copied, so S_0, which every node computes for itself, is the same
on every device. `merge_votes` and `next_support` break exact ties with torch.topk, whose order among
equal values may differ between CPU and CUDA; that is harmless, since their result is decided by one
node (an aggregator, the root) and sent down, never recomputed elsewhere.
"""

from __future__ import annotations

import torch

from swarm_worker.maths.compression import SparseVector


def _priority(numel: int, seed: int, round_index: int) -> torch.Tensor:
    """A seeded random priority in [0, 1) per coordinate, the same on every node."""
    gen = torch.Generator().manual_seed(seed * 1_000_003 + round_index * 7_919 + 1)
    return torch.rand(numel, generator=gen)


def initial_support(numel: int, k: int, seed: int, device: torch.device | None = None) -> torch.Tensor:
    """S_0: k seeded random coordinates (selected on the CPU, so identical everywhere, then moved)."""
    return torch.sort(torch.topk(_priority(numel, seed, 0), k).indices).values.to(device or "cpu")


def merge_votes(
    votes: list[SparseVector], numel: int, k: int, device: torch.device | None = None
) -> SparseVector | None:
    """Sum the votes of several nodes and keep the k most voted coordinates (with their counts), on
    `device` (default: where the first votes are)."""
    if not votes:
        return None
    on = device or votes[0].device
    counts = torch.zeros(numel, device=on)
    for v in votes:
        counts.index_add_(0, v.indices.to(on).long(), v.values.to(on, torch.float32))
    voted = int(torch.count_nonzero(counts))
    top = torch.topk(counts, min(k, voted)).indices if voted else torch.empty(0, dtype=torch.long, device=on)
    top = torch.sort(top).values
    return SparseVector(indices=top.to(torch.int32), values=counts[top], numel=numel)


def next_support(
    votes: SparseVector | None,
    numel: int,
    k: int,
    seed: int,
    round_index: int,
    device: torch.device | None = None,
) -> torch.Tensor:
    """S_{round_index}: the k most voted coordinates, ties and shortfall settled by seeded priority,
    computed on `device` (CPU by default)."""
    # In [0, 1): below one vote, so it breaks ties only. Drawn on the CPU, copied (a fresh tensor).
    score = _priority(numel, seed, round_index).to(device or "cpu", copy=True)
    if votes is not None and votes.indices.numel():
        score[votes.indices.to(score.device).long()] += votes.values.to(score.device, torch.float32)
    return torch.sort(torch.topk(score, k).indices).values


def valid_support(
    payload: object, numel: int, k: int, device: torch.device | None = None
) -> torch.Tensor | None:
    """The announced support as int64 indices on `device` (CPU by default) if it is well formed (k
    ascending indices inside [0, numel)), else None: a parent's message is validated like any peer
    input (on the CPU, where it arrived)."""
    if not isinstance(payload, torch.Tensor) or payload.dtype != torch.int32 or payload.shape != (k,):
        return None
    idx = payload.long()
    if k and (int(idx[0]) < 0 or int(idx[-1]) >= numel or not bool((idx[1:] > idx[:-1]).all())):
        return None
    return idx.to(device or "cpu", copy=True)


def on_support(update: SparseVector, support: torch.Tensor) -> bool:
    """Whether a sparse update's indices all lie on the announced support (on the support's device)."""
    return bool(torch.isin(update.indices.to(support.device).long(), support).all())
