"""The sockets between root replicas: each binds a ROUTER on its consensus port, behind a gate that
admits only the other replicas' CURVE keys, and dials every other replica with a DEALER.

The sockets live in a ZeroMQ context of their own: a context has one ZAP handler (protocol.gate),
and the data port's admits the children. A message is sent on the DEALER to its replica (or to all
of them); one is read from the ROUTER with the replica id its connection proved (ZeroMQ's User-Id),
never an id the message states. Sends never block the loop: a replica that is down costs a drop.
Queues and frames are bounded as on the data port (protocol.transport).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import zmq

from swarm_worker.consensus.wire import Mesh, decode_mesh
from swarm_worker.protocol.curve import NodeKeys
from swarm_worker.protocol.gate import ChildGate
from swarm_worker.protocol.header import CodecError
from swarm_worker.protocol.transport import authenticated_user, bind_router, connect_dealer

log = logging.getLogger("swarm.consensus")


class ReplicaMesh:
    """This replica's consensus sockets (see the module docstring)."""

    def __init__(
        self,
        keys: NodeKeys,
        host: str,
        port: int,
        peers: dict[str, str],
        max_message_bytes: int,
        on_dropped: Callable[[str], None],
    ) -> None:
        self.me, self.on_dropped = keys.node_id, on_dropped
        self.ctx: zmq.Context[Any] = zmq.Context()
        self.gate = ChildGate(self.ctx, keys, on_refused=on_dropped, admitted=keys.replica_peers)
        self.router = bind_router(self.ctx, host, port, max_message_bytes, gate=self.gate)
        self.dealers = {
            replica: connect_dealer(
                self.ctx, self.me, address, max_message_bytes, curve=keys.peer_client(replica)
            )
            for replica, address in sorted(peers.items())
        }

    def send(self, replica: str, frames: list[Any]) -> None:
        dealer = self.dealers.get(replica)
        if dealer is None:
            return
        try:
            dealer.send_multipart(frames, copy=False, flags=zmq.NOBLOCK)
        except (zmq.Again, zmq.ZMQError):
            self.on_dropped("mesh-send-failed")

    def broadcast(self, frames: list[Any]) -> None:
        for replica in self.dealers:
            self.send(replica, frames)

    def receive(self, job: str, replicas: int) -> tuple[str, Mesh] | None:
        """One readable message as (proved sender, decoded), None when nothing is waiting or it
        was dropped (counted by reason)."""
        try:
            frames = self.router.recv_multipart(copy=False, flags=zmq.NOBLOCK)
        except zmq.Again:
            return None
        body = frames[1:]  # after the ROUTER's routing id
        sender = authenticated_user(body[0]) if body else None
        if sender is None or sender not in self.dealers:
            self.on_dropped("identity")
            return None
        try:
            return sender, decode_mesh(body, job, replicas)
        except CodecError as e:
            self.on_dropped(e.reason)
            log.warning("%s: dropped a mesh message from %s: %s", self.me, sender, e)
            return None

    def close(self) -> None:
        self.gate.close()  # its threads hold sockets of ctx: before ctx.term()
        self.router.close(0)
        for dealer in self.dealers.values():
            dealer.close(0)
        self.ctx.term()
