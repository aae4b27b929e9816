"""The aggregating shell of a root replica (consensus.replica): the children's updates must carry
their sender's signature (the leader relays them), updates for the next round are kept until this
replica gets there, and only the leader closes a round, by proposing it.
"""

from __future__ import annotations

from typing import Protocol

import torch

from swarm_worker.node.aggregating import AggregatorShell, RoundSink
from swarm_worker.node.runtime import NodeRuntime
from swarm_worker.protocol.codec import Message
from swarm_worker.protocol.signing import verify_update


class Agreement(Protocol):
    """What the shell tells the replica's agreement (consensus.replica.Replica)."""

    inputs: dict[str, Message]

    def leader_ready(self) -> None: ...


class ReplicaShell(AggregatorShell):
    """The aggregating shell of a replica: children's updates must be signed; only the leader
    closes a round, by proposing it."""

    def __init__(self, rt: NodeRuntime, theta: torch.Tensor | None, round_index: int) -> None:
        super().__init__(rt, theta, round_index)
        self.replica: Agreement | None = None
        #: Signed updates for the next round, by child: a child applies the first replica's model,
        #: so its next update may reach a replica that has not committed yet. Taken when it does.
        self.ahead: dict[str, Message] = {}

    def on_child(self, msg: Message) -> None:
        keys = self.rt.keys
        if msg.type == "update":
            key = keys.child_verify.get(msg.node) if keys is not None else None
            if key is None or not verify_update(msg, key):
                self.rt.metrics.dropped("signature")
                return
            if msg.round == self.state.round + 1 and self.state.knows(msg.node):
                self.ahead.setdefault(msg.node, msg)  # at most one per child of the tree
                return
        self._take(msg)

    def _take(self, msg: Message) -> None:
        """A message whose signature (an update's) was checked."""
        super().on_child(msg)
        if msg.type == "update" and self.replica is not None and msg.node in self.state.pending:
            self.replica.inputs.setdefault(msg.node, msg)

    def take_ahead(self, round_index: int) -> None:
        """The kept updates of the round this replica now holds (their signatures checked already)."""
        ahead, self.ahead = self.ahead, {}
        for msg in ahead.values():
            if msg.round == round_index:
                self._take(msg)

    def _close_round(self, sink: RoundSink) -> None:
        if self.replica is not None:
            self.replica.leader_ready()
