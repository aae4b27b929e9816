"""The interior aggregator: an aggregating node whose closed rounds go up to its parent.

Everything but the last step is shared with the root (`node.aggregating`, `node.round`): a closed
round's robust aggregate goes up as one UPDATE carrying the subtree's sample and worker counts, its
reputation records and traffic counters; on the common support it stays sparse on that support (so
the parent's support check holds: the k values the rule produced, never densified), else it is
sparse when fewer than half its entries are nonzero. Computed on the node's device, it is copied to
the host for the wire.
"""

from __future__ import annotations

from typing import Any

import torch

from swarm_worker.maths.compression import SparseVector, to_wire, wire_dtype
from swarm_worker.node.aggregating import AggregatorShell, Links
from swarm_worker.node.round import RoundResult
from swarm_worker.node.runtime import NodeRuntime


class ForwardUp:
    """Round sink of an interior aggregator: send the round's aggregate to the parent."""

    def round_closed(self, links: Links, result: RoundResult) -> None:
        state = links.state
        meta = {
            "samples": result.samples,
            "workers": result.workers,
            "loss": result.loss,
            "nodes": state.records(),
            "traffic": state.traffic.entries(),
        }
        dtype = wire_dtype(state.spec)
        support = state.support
        tensors: dict[str, Any] = {
            "delta": SparseVector(
                support.to(torch.int32), result.aggregate.on(support).to(dtype).cpu(), state.numel
            )
            if support is not None
            else to_wire(result.vector.cpu(), dtype)
        }
        if result.votes is not None:
            tensors["votes"] = result.votes
        links.send_up(links.message("update", state.round, meta, tensors))  # sealed by the shell

    def tick(self, links: Links, now: float) -> None:
        """Nothing to do between messages: the parent's STOP ends an interior aggregator."""

    def stopping(self, links: Links) -> None:
        """Nothing to save: a replaced interior aggregator resyncs from its parent."""


def run_aggregator(rt: NodeRuntime) -> int:
    return AggregatorShell(rt, rt.initial_theta(), 0).run(ForwardUp())
