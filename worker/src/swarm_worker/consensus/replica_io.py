"""A root replica's messages: what consensus.core asks for, signed and sent; what the other replicas
send, checked and handed to the core. The other half of consensus.replica.

Every vote is checked before the core counts it: a PREPARE's signature over `prepare_bytes`, a
COMMIT's over its point (the point must have the digest voted), a VIEW-CHANGE's over
`view_change_bytes` and the lock it carries (2f + 1 valid PREPARE signatures of distinct replicas),
a certificate with `verify_certificate`. A message that fails is dropped and counted as the
sender's `signature` fault. This replica's own votes go to the core directly, as if received.
"""

from __future__ import annotations

import logging
import time
from abc import ABC, abstractmethod
from typing import Any

from cryptography.exceptions import InvalidSignature

from swarm_worker.consensus.core import ReplicaCore
from swarm_worker.consensus.effects import (
    CatchUp,
    Committed,
    Effect,
    EnterView,
    Help,
    Proof,
    SendViewChange,
    SendVote,
    ShareView,
    ViewVote,
)
from swarm_worker.consensus.mesh import ReplicaMesh
from swarm_worker.consensus.root_commit import RootCommit
from swarm_worker.consensus.transfer import read_state, state_frames
from swarm_worker.consensus.wire import (
    Mesh,
    certificate_fields,
    commit_fields,
    encode_mesh,
    prepare_bytes,
    view_change_bytes,
    view_vote,
    view_vote_wire,
)
from swarm_worker.node.aggregating import AggregatorShell
from swarm_worker.node.runtime import NodeRuntime
from swarm_worker.protocol.certificate import (
    Certificate,
    CommitPoint,
    certificate_to_wire,
    quorum_refusal,
    sign_point,
    verify_certificate,
)
from swarm_worker.protocol.codec import Message, encode
from swarm_worker.protocol.curve import NodeKeys

log = logging.getLogger("swarm.replica")
#: Mesh messages read per loop turn at most: the loop must still serve the children.
MAX_DRAIN = 256


class ReplicaMessages(ABC):
    """The messages half of a replica (consensus.replica.Replica): it declares what it uses of the
    other half."""

    rt: NodeRuntime
    shell: AggregatorShell
    commit: RootCommit
    core: ReplicaCore
    mesh: ReplicaMesh
    keys: NodeKeys
    job: str
    me: str
    replicas: int
    quorum: int
    points: dict[bytes, CommitPoint]
    proposals: dict[bytes, list[Message]]
    claimed: dict[int, bytes]
    #: (view, replica) -> the digest it sent COMMIT for, this round.
    commit_votes: dict[tuple[int, str], bytes]
    certificate: Certificate | None

    @abstractmethod
    def lie(self, digest: bytes) -> bytes: ...

    @abstractmethod
    def propose(self, inputs: list[Message]) -> None: ...

    @abstractmethod
    def leader_ready(self) -> None: ...

    @abstractmethod
    def entered_view(self) -> None: ...

    @abstractmethod
    def fetch(self, round_index: int) -> None: ...

    @abstractmethod
    def committed(self, proof: Proof) -> None: ...

    @abstractmethod
    def fault(self, replica: str, reason: str) -> None: ...

    @abstractmethod
    def on_proposal(self, sender: str, mesh: Mesh) -> None: ...

    @abstractmethod
    def next_round(self, round_index: int, proof: Proof) -> None: ...

    # -- sending ----------------------------------------------------------------------------------

    def send_proposal(
        self, view: int, rnd: int, digest: bytes, inputs: list[Message], to: list[str] | None = None
    ) -> None:
        nested = [list(encode(m)) for m in inputs]
        frames = encode_mesh(self.job, "propose", {"view": view, "round": rnd, "claimed": digest}, nested)
        for replica in self.mesh.dealers if to is None else to:
            self.mesh.send(replica, frames)

    def request_state(self, round_index: int) -> None:
        self.mesh.broadcast(encode_mesh(self.job, "fetch", {"round": round_index}))

    def run(self, effects: list[Effect]) -> None:
        """Carry out what the core asked for (its answers to this replica's own votes included)."""
        todo = list(effects)
        while todo:
            effect = todo.pop(0)
            r, core, job = self, self.core, self.job
            if isinstance(effect, SendVote):
                todo += self._vote(effect)
            elif isinstance(effect, SendViewChange):
                sig = self.keys.signer.sign(view_change_bytes(job, effect.view, effect.round, effect.lock))
                vote = ViewVote(r.me, effect.view, effect.round, effect.lock, sig)
                r.mesh.broadcast(encode_mesh(job, "viewchange", view_vote_wire(vote)))
                log.info("%s: round %d: asking for view %d", r.me, effect.round, effect.view)
                todo += core.view_change(vote, time.monotonic())
            elif isinstance(effect, Committed):
                r.committed(effect.certificate)
            elif isinstance(effect, EnterView):
                log.info("%s: view %d, leader %s", r.me, effect.view, effect.leader)
                if effect.leader == r.me and effect.repropose is not None:
                    inputs = r.proposals.get(effect.repropose.digest)
                    if inputs is not None:
                        r.propose(inputs)
                elif effect.leader == r.me:
                    r.leader_ready()
                r.entered_view()
            elif isinstance(effect, CatchUp):
                r.fetch(effect.round)
            elif isinstance(effect, Help) and r.certificate is not None:
                r.mesh.send(effect.replica, encode_mesh(job, "cert", certificate_fields(r.certificate)))
            elif isinstance(effect, ShareView):
                votes = [view_vote_wire(v) for v in effect.votes]
                r.mesh.send(effect.replica, encode_mesh(job, "newview", {"votes": votes}))

    def _vote(self, effect: SendVote) -> list[Effect]:
        r, job = self, self.job
        digest = r.lie(effect.digest)
        if effect.phase == "prepare":
            sig = self.keys.signer.sign(prepare_bytes(job, effect.view, effect.round, digest))
            fields = {"view": effect.view, "round": effect.round, "digest": digest, "sig": sig}
            r.mesh.broadcast(encode_mesh(job, "prepare", fields))
            return r.core.vote("prepare", r.me, effect.view, effect.round, effect.digest, sig)
        point = r.points[digest]
        sig = sign_point(point, self.keys.signer)
        r.mesh.broadcast(encode_mesh(job, "commit", commit_fields(effect.view, effect.round, point, sig)))
        return r.core.vote("commit", r.me, effect.view, effect.round, effect.digest, sig)

    # -- receiving --------------------------------------------------------------------------------

    def drain(self) -> None:
        for _ in range(MAX_DRAIN):
            got = self.mesh.receive(self.job, self.replicas)
            if got is None:
                return
            self.handle(*got)

    def handle(self, sender: str, mesh: Mesh) -> None:
        r, f, now = self, mesh.fields, time.monotonic()
        key = self.keys.replica_verify[sender]
        try:
            if mesh.type == "propose":
                r.on_proposal(sender, mesh)
            elif mesh.type == "prepare":
                key.verify(f["sig"], prepare_bytes(r.job, f["view"], f["round"], f["digest"]))
                claimed = r.claimed.get(f["view"])
                leading = f["round"] == r.core.round and sender == r.core.leader
                if leading and claimed not in (None, f["digest"]):
                    r.fault(sender, "equivocated")  # it proposed one value to this replica, voted another
                self.run(r.core.vote("prepare", sender, f["view"], f["round"], f["digest"], f["sig"]))
            elif mesh.type == "commit":
                point = f["point"]
                key.verify(f["sig"], point.signed_bytes())
                if f["round"] == r.core.round and len(r.points) <= 2 * r.replicas:
                    r.points.setdefault(f["digest"], point)
                if f["round"] == r.core.round and len(r.commit_votes) <= 4 * r.replicas:
                    r.commit_votes.setdefault((f["view"], sender), f["digest"])
                self.run(r.core.vote("commit", sender, f["view"], f["round"], f["digest"], f["sig"]))
            elif mesh.type == "viewchange":
                vote = view_vote(mesh, sender, r.replicas)
                if self._valid_view_vote(vote):
                    self.run(r.core.view_change(vote, now))
            elif mesh.type == "newview":
                votes = f["votes"]
                if all(self._valid_view_vote(v) for v in votes):
                    self.run(r.core.join_view(votes, now))
            elif mesh.type == "cert":
                self._certificate(sender, f["cert"])
            elif mesh.type == "fetch":
                self._send_state(sender, f["round"])
            elif mesh.type == "state":
                self._install_state(sender, f, mesh.messages[0])
        except InvalidSignature:
            log.warning("%s: a %s from %s with a bad signature", r.me, mesh.type, sender)
            r.fault(sender, "signature")

    def _valid_view_vote(self, vote: ViewVote) -> bool:
        key = self.keys.replica_verify.get(vote.replica)
        if key is None:
            return False
        try:
            key.verify(vote.sig, view_change_bytes(self.job, vote.view, vote.round, vote.lock))
        except InvalidSignature:
            self.fault(vote.replica, "signature")
            return False
        return vote.lock is None or self._valid_lock(vote.lock)

    def _valid_lock(self, lock: Proof) -> bool:
        message = prepare_bytes(self.job, lock.view, lock.round, lock.digest)
        return quorum_refusal(lock.signatures, message, self.keys.replica_verify, self.quorum) is None

    def _certificate(self, sender: str, cert: Certificate) -> None:
        r = self
        if verify_certificate(cert, self.keys.replica_verify, self.quorum) is not None:
            r.fault(sender, "signature")
            return
        digest = cert.point.digest()
        if cert.point.base_round == r.core.round:
            r.points.setdefault(digest, cert.point)
        proof = Proof("commit", cert.point.view, cert.point.base_round, digest, cert.signatures)
        self.run(r.core.certified(proof))

    # -- state transfer ---------------------------------------------------------------------------

    def _send_state(self, sender: str, round_index: int) -> None:
        r = self
        state = r.shell.state
        if r.certificate is None or state.theta is None or state.round < round_index:
            return  # nothing committed here that the asker lacks
        books = {"reputations": state.book.nodes, "subtree": state.subtree.by_id}
        frames = state_frames(
            r.job, r.me, r.certificate, state.theta, r.commit.outer.momentum, state.support,
            state.previous_aggregate, r.commit.history, books, r.commit.elapsed(),
        )  # fmt: skip
        r.mesh.send(sender, frames)

    def _install_state(self, sender: str, fields: dict[str, Any], tensors: Message) -> None:
        r = self
        cert: Certificate = fields["cert"]
        if cert.point.round <= r.core.round:
            return  # not ahead of this replica: nothing to take
        if verify_certificate(cert, self.keys.replica_verify, self.quorum) is not None:
            r.fault(sender, "signature")
            return
        momentum = r.commit.outer.momentum is not None
        fetched = read_state(fields, tensors, r.rt.numel, momentum, len(r.rt.tree.nodes))
        if isinstance(fetched, str):
            r.fault(sender, f"bad-state-{fetched}")
            return
        state, commit = r.shell.state, r.commit
        state.book.nodes = fetched.reputations
        state.subtree.by_id = fetched.subtree
        state.previous_aggregate = fetched.previous
        if fetched.support is not None:
            state.support = fetched.support.to(state.support.device if state.support is not None else "cpu")
        if fetched.momentum is not None:
            commit.outer.momentum = fetched.momentum.to(r.rt.device)
        commit.adopt_history(fetched.history, fetched.elapsed)
        r.certificate = cert
        r.shell.certificate = certificate_to_wire(cert)
        r.shell.advance(fetched.round, fetched.theta.to(r.rt.device))
        log.info("%s: caught up at round %d from %s", r.me, fetched.round, sender)
        digest = cert.point.digest()
        r.next_round(
            fetched.round, Proof("commit", cert.point.view, fetched.round - 1, digest, cert.signatures)
        )
