"""The parent side of a worker or aggregator: its DEALERs up the tree, what it sends on them, and
which of the messages they bring the node acts on.

Three shapes, one object (`ParentLinks`, built by `open_parents` from the node's settings):

    one parent        one DEALER to `--parent`; everything goes to it and everything it sends is
                      delivered (a MODEL still passes the certificate check: node.certified)
    reshuffled worker a DEALER per bottom aggregator (`--peers`); an update or HELLO goes to the
                      round's parent (`send(encoded, to=...)`), models come from any of them
    root replicas     a child of the root when `consensus.replicas` R = 3f + 1 > 1: a DEALER per
                      replica (`--replicas root=host:port,root-1=host:port,...`, exactly the ids of
                      swarm_contract.consensus.replica_ids(R)); every update and HELLO goes to every
                      replica, and an update is signed with the node's ed25519 key
                      (protocol.signing: the leader relays it to the other replicas in its proposal)

What a node acts on, with root replicas (one replica is never trusted alone):
- MODEL of a round newer than the one held: from whichever replica sends it first, once it passed
  the certificate check; a copy that fails is dropped ("certificate") and the next replica's copy is
  taken instead.
- MODEL of the round held: each replica sends every round, so another replica's copy is a
  duplicate and is ignored. The same replica sending that round again means it lost this node's
  update (it restarted): delivered, and the role re-sends its update, as with one parent.
- MODEL of an older round (a rollback: the root resumed from a checkpoint, node.model_sync): only
  once f + 1 distinct replicas offered that round, so at least one honest replica is there (a lying
  replica replaying an old certified model cannot roll the tree back alone), and certified.
- STOP: once f + 1 distinct replicas sent one.
The bookkeeping is the last round each replica offered and the set of replicas that said STOP:
at most R entries each. With one parent (R = 1, f = 0) every rule above reduces to today's.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import zmq

from swarm_contract.consensus import replica_ids, tolerated_faults
from swarm_contract.spec import SpecError
from swarm_contract.topology import ROOT_ID
from swarm_worker.node.certified import DROP_REASON, refused_model
from swarm_worker.node.runtime import NodeRuntime, NodeSettings
from swarm_worker.node.telemetry import NodeMetrics
from swarm_worker.node.traffic import Traffic
from swarm_worker.protocol.codec import Message
from swarm_worker.protocol.curve import NodeKeys
from swarm_worker.protocol.signing import sign_update
from swarm_worker.protocol.transport import Encoded, connect_dealer, encode_message, receive, send


def parent_addresses(settings: NodeSettings, parent: str, replicas: int) -> dict[str, str]:
    """Parent id -> host:port of every parent this node talks to (see the module docstring);
    SpecError for `--replicas` missing where needed, wrong, or given where it means nothing."""
    if parent == ROOT_ID and replicas > 1:
        expected = replica_ids(replicas)
        if sorted(settings.replicas) != sorted(expected):
            raise SpecError(
                f"--replicas: a child of the root needs the address of each of {', '.join(expected)} "
                f"(consensus.replicas = {replicas}), got {', '.join(sorted(settings.replicas)) or 'none'}"
            )
        return dict(settings.replicas)
    if settings.replicas:
        raise SpecError("--replicas: only for a child of the root with consensus.replicas > 1")
    if settings.peers:
        return dict(settings.peers)
    assert settings.parent is not None
    return {parent: settings.parent}


@dataclass(frozen=True)
class Heard:
    """A decodable message from a parent: `message` is what the node acts on, None when it is
    not to act on it (a duplicate, a STOP short of f + 1, a refused model)."""

    message: Message | None
    #: The parent whose DEALER it came on (a replica id with root replicas).
    sender: str


class ParentLinks:
    """The DEALERs to a node's parents and the rules of the module docstring."""

    def __init__(
        self,
        ctx: zmq.Context[Any],
        node_id: str,
        job: str,
        addresses: Mapping[str, str],
        max_bytes: int,
        *,
        home: str,
        keys: NodeKeys | None,
        replicas: int,
        metrics: NodeMetrics,
        traffic: Traffic,
    ) -> None:
        self.node_id, self.job, self.home = node_id, job, home
        self.keys, self.replicas, self.metrics, self.traffic = keys, replicas, metrics, traffic
        #: Every update and HELLO goes to all parents, signed, and models are filtered by the rules.
        self.replicated = home == ROOT_ID and replicas > 1
        #: f + 1: the replicas that must agree on a STOP or a rollback (1 without replicas).
        self.agreeing = tolerated_faults(replicas) + 1 if self.replicated else 1
        self.sockets: dict[str, zmq.Socket[Any]] = {}
        try:
            for parent, address in addresses.items():
                curve = keys.client(parent) if keys is not None else None
                self.sockets[parent] = connect_dealer(ctx, node_id, address, max_bytes, curve=curve)
        except BaseException:
            self.close()
            raise
        self._id_of = {sock: parent for parent, sock in self.sockets.items()}
        #: Replica id -> the round of the last model it sent (at most one entry per parent).
        self._offered: dict[str, int] = {}
        #: Replicas that sent STOP.
        self._stops: set[str] = set()

    def register(self, poller: zmq.Poller) -> None:
        for sock in self.sockets.values():
            poller.register(sock, zmq.POLLIN)

    def ready(self, events: Mapping[Any, int]) -> list[zmq.Socket[Any]]:
        """The parent sockets among a poll's readable ones."""
        return [sock for sock in self.sockets.values() if sock in events]

    def close(self) -> None:
        for sock in self.sockets.values():
            sock.close(0)

    # -- sending ------------------------------------------------------------------------------------

    def seal(self, msg: Message) -> Encoded:
        """`msg` as it goes up: an update to root replicas signed with this node's key, then encoded."""
        if self.replicated and self.keys is not None and msg.type == "update":
            msg = sign_update(msg, self.keys.signer)
        return encode_message(msg)

    def send(self, encoded: Encoded, to: str | None = None) -> None:
        """To every replica with root replicas; else to `to` (a reshuffled worker's round parent),
        by default the tree parent."""
        targets = self.sockets.values() if self.replicated else [self.sockets[to or self.home]]
        for sock in targets:
            send(sock, encoded, self.metrics)

    # -- receiving ----------------------------------------------------------------------------------

    def receive(self, sock: zmq.Socket[Any], held_round: int) -> Heard | None:
        """Read one message from the readable parent socket `sock`, for a node holding the model of
        `held_round`; None when nothing decodable came (counted by the transport)."""
        got = receive(sock, self.metrics, routed=False, job=self.job)
        if got is None:
            return None
        self.traffic.count(got.nbytes, got.dense_nbytes)
        sender, msg = self._id_of[sock], got.message
        if msg.type == "stop":
            self._stops.add(sender)
            return Heard(msg if len(self._stops) >= self.agreeing else None, sender)
        if msg.type != "model":
            return Heard(msg, sender)  # the role counts it as unexpected
        if not self._take_model(sender, msg.round, held_round):
            return Heard(None, sender)
        if refused_model(msg, self.keys, self.replicas, self.node_id, sender):
            self.metrics.dropped(DROP_REASON)
            return Heard(None, sender)
        return Heard(msg, sender)

    def _take_model(self, sender: str, model_round: int, held_round: int) -> bool:
        """Whether a model of `model_round` from `sender` is one to act on (module docstring)."""
        if not self.replicated:
            return True
        before = self._offered.get(sender)
        self._offered[sender] = model_round
        if model_round == held_round:
            return before == held_round  # the same replica again: it lost this node's update
        if model_round < held_round:
            return sum(r == model_round for r in self._offered.values()) >= self.agreeing
        return True


def open_parents(ctx: zmq.Context[Any], rt: NodeRuntime, max_bytes: int) -> ParentLinks | None:
    """The parent links of `rt`'s node (None for the root); SpecError for bad address flags."""
    parent = rt.node.parent
    if parent is None:
        return None
    replicas = rt.settings.spec.consensus.replicas
    return ParentLinks(
        ctx,
        rt.node.id,
        rt.settings.job,
        parent_addresses(rt.settings, parent, replicas),
        max_bytes,
        home=parent,
        keys=rt.keys,
        replicas=replicas,
        metrics=rt.metrics,
        traffic=rt.traffic,
    )
