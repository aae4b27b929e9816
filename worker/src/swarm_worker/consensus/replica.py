"""A root replica (`spec.consensus.replicas` R = 3f + 1 > 1): the root's rounds under agreement.

Each replica is a whole root (consensus.root_commit: outer step, evaluation, checkpoints, status)
whose children, the top-level nodes, send every signed update to all R replicas
(consensus.replica_shell). A round commits
only through consensus.core: the leader of the view, once its round is ready (quorum or deadline),
proposes the updates it took; every replica checks each child's signature and evaluates exactly
those updates (consensus.speculation, leaving its state untouched); it votes PREPARE on the digest
of the commit point it computed, COMMIT once 2f + 1 agree, and applies the outcome it evaluated once
2f + 1 COMMITs are in. Every replica then sends θ_{r+1} to the children with the certificate those
votes make, and the children apply the first copy whose certificate checks (node.certified).

A replica records the faults it can prove (`consensus.faults` in the status): a leader whose
claimed digest is not what its inputs give (`wrong-model`), that proposed one value and voted
another (`equivocated`); a replica that sent COMMIT for another value than the one committed in
that view (`wrong-commit`), or a bad signature. A silent or lying leader is replaced by a view change.
A replica that lags (restarted, or its messages lost) gets the last certificate from the others
and, if it cannot evaluate that value, fetches their state (consensus.transfer).
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections import Counter
from dataclasses import replace
from typing import Any

from swarm_contract.consensus import commit_quorum, leader_of, replica_index
from swarm_worker.consensus.core import ReplicaCore
from swarm_worker.consensus.effects import Proof
from swarm_worker.consensus.mesh import ReplicaMesh
from swarm_worker.consensus.replica_io import ReplicaMessages
from swarm_worker.consensus.replica_shell import ReplicaShell
from swarm_worker.consensus.root_commit import RootCommit
from swarm_worker.consensus.speculation import Speculation, evaluate, install
from swarm_worker.consensus.wire import MAX_MESH_HEADER, Mesh
from swarm_worker.maths.compression import SparseVector
from swarm_worker.node.runtime import NodeRuntime
from swarm_worker.protocol.certificate import Certificate, CommitPoint
from swarm_worker.protocol.codec import Message
from swarm_worker.protocol.signing import verify_update
from swarm_worker.protocol.transport import effective_max_message_bytes

log = logging.getLogger("swarm.replica")
#: Proposals kept for rounds or views this replica has not reached yet (a leader ahead of it).
MAX_EARLY = 16
#: Seconds between two state requests of a replica that lags.
FETCH_INTERVAL_S = 2.0


class Replica(ReplicaMessages):
    """The sink of a replica's shell: agreement, then RootCommit's commit (see the module)."""

    def __init__(self, rt: NodeRuntime, shell: ReplicaShell, commit: RootCommit) -> None:
        spec = rt.settings.spec
        if rt.keys is None or rt.settings.consensus_port is None:
            raise ValueError(f"{rt.settings.node_id}: a root replica needs --keys and --consensus-port")
        self.rt, self.shell, self.commit, self.spec = rt, shell, commit, spec
        self.job, self.me, self.replicas = rt.settings.job, rt.settings.node_id, spec.consensus.replicas
        now = time.monotonic()
        timeout = spec.consensus.view_timeout_seconds
        self.core = ReplicaCore(self.me, self.replicas, timeout, shell.state.round, now)
        self.mesh = ReplicaMesh(
            rt.keys,
            rt.settings.bind_host,
            rt.settings.consensus_port,
            dict(rt.settings.peers),
            max(effective_max_message_bytes(spec, rt.numel), MAX_MESH_HEADER),
            rt.metrics.dropped,
        )
        #: This round's signed updates the shell took, by child: what this replica proposes as leader.
        self.inputs: dict[str, Message] = {}
        #: This round's proposals and their evaluations, by digest (at most one per view seen).
        self.proposals: dict[bytes, list[Message]] = {}
        self.speculations: dict[bytes, Speculation] = {}
        self.points: dict[bytes, CommitPoint] = {}
        self.early: list[tuple[str, Mesh]] = []
        self.proposed_in: int | None = None
        #: The certificate of the model this replica holds (None before its first commit).
        self.certificate: Certificate | None = None
        self.faults: dict[str, Counter[str]] = {}
        #: Seconds from each round's proposal (sent or first received here) to its commit.
        self.commit_seconds: list[float] = []
        self.proposal_at: float | None = None
        self.last_fetch = 0.0
        #: The digest each view's leader claimed in the proposal this replica got from it.
        self.claimed: dict[int, bytes] = {}
        self.commit_votes: dict[tuple[int, str], bytes] = {}
        index = replica_index(self.me, self.replicas)
        #: spec.simulation.byzantineReplicas: how this replica lies, if it is told to.
        self.attack = next((b.attack for b in spec.simulation.byzantine_replicas if b.replica == index), None)
        self.keys = rt.keys
        self.quorum = commit_quorum(self.replicas)

    # -- the leader -----------------------------------------------------------------------------

    def leader_ready(self) -> None:
        """The shell's round is ready (every child reported, or the deadline passed with a quorum):
        the leader proposes what it took. An honest leader's round is ready about now too, so every
        replica's view timer starts here (a leader waiting out a slow child is no failed leader)."""
        core = self.core
        core.heard(time.monotonic())
        if not core.is_leader or core.changing_view or self.proposed_in == core.view or core.committed:
            return
        inputs = [self.inputs[c] for c in sorted(self.shell.state.pending) if c in self.inputs]
        self.propose(inputs)

    def propose(self, inputs: list[Message]) -> None:
        core = self.core
        speculation = self.evaluate(inputs)
        if isinstance(speculation, str):
            log.warning("%s: cannot propose round %d: %s", self.me, core.round, speculation)
            return
        digest = speculation.outcome.point.digest()
        claimed = self.lie(digest)
        self.proposed_in = core.view
        self.proposal_at = self.proposal_at or time.monotonic()
        if self.attack == "equivocate" and len(inputs) > 1:  # half the replicas get one input less
            peers = sorted(self.mesh.dealers)
            other = self.evaluate(inputs[:-1])
            other_digest = other.outcome.point.digest() if not isinstance(other, str) else digest
            self.send_proposal(core.view, core.round, other_digest, inputs[:-1], peers[::2])
            self.send_proposal(core.view, core.round, digest, inputs, peers[1::2])
        else:
            self.send_proposal(core.view, core.round, claimed, inputs)
        self.run(core.agree(core.view, core.round, digest))

    def evaluate(self, inputs: list[Message]) -> Speculation | str:
        state = self.shell.state
        spec = evaluate(self.spec, self.job, self.core.view, state, self.commit.outer, inputs, self.rt.numel)
        if not isinstance(spec, str):
            digest = spec.outcome.point.digest()
            self.speculations[digest] = spec
            self.proposals[digest] = inputs
            self.points[digest] = spec.outcome.point
        return spec

    # -- a proposal from the leader -------------------------------------------------------------

    def on_proposal(self, sender: str, mesh: Mesh) -> None:
        core, view, rnd = self.core, mesh.fields["view"], mesh.fields["round"]
        if (rnd, view) > (core.round, core.view):
            # Kept only from the leader of its view, for the next round at most, one per sender:
            # a liar cannot fill the buffer with proposals of views it will never lead.
            if sender == leader_of(view, self.replicas) and rnd <= core.round + 1:
                self.early = [(s, m) for s, m in self.early if s != sender][: MAX_EARLY - 1]
                self.early.append((sender, mesh))
            return
        if (rnd, view) != (core.round, core.view):
            return
        core.heard(time.monotonic())
        self.proposal_at = self.proposal_at or time.monotonic()
        if sender != leader_of(view, self.replicas):
            self.fault(sender, "not-leader")
            return
        keys = self.rt.keys
        assert keys is not None
        for msg in mesh.messages:
            key = keys.child_verify.get(msg.node)
            if msg.type != "update" or msg.round != rnd or key is None or not verify_update(msg, key):
                self.fault(sender, "forged-input")
                return
        speculation = self.evaluate(mesh.messages)
        if isinstance(speculation, str):
            self.fault(sender, "bad-proposal")
            log.warning("%s: refused %s's proposal for round %d: %s", self.me, sender, rnd, speculation)
            return
        digest = speculation.outcome.point.digest()
        self.claimed[view] = mesh.fields["claimed"]
        if digest != mesh.fields["claimed"]:
            self.fault(sender, "wrong-model")
        self.run(core.agree(view, rnd, digest))

    def lie(self, digest: bytes) -> bytes:
        """What a replica told to lie (`wrong-model`, `wrong-hash`) claims and signs instead of
        `digest`: the digest of a point with another θ, registered so that it can sign it. Its
        own agreement state (consensus.core) keeps the true digest: only what it says is false."""
        if self.attack not in ("wrong-model", "wrong-hash") or digest not in self.points:
            return digest
        point = self.points[digest]
        wrong = replace(point, theta=hashlib.sha256(b"a lie" + point.theta).digest())
        self.points[wrong.digest()] = wrong
        return wrong.digest()

    # -- effects, commits, catching up ----------------------------------------------------------

    def committed(self, proof: Proof) -> None:
        """2f + 1 COMMITs (or a certificate) for `proof.digest`: apply what it names."""
        point = self.points.get(proof.digest)
        speculation = self.speculations.get(proof.digest)
        if point is None or speculation is None:
            self.fetch(proof.round + 1)
            return
        certificate = Certificate(point, proof.signatures)
        for (view, replica), digest in self.commit_votes.items():
            # One value per view can gather 2f + 1 PREPAREs; a COMMIT for another one in the view
            # that committed had none behind it: its sender lied.
            if view == proof.view and digest != proof.digest:
                self.fault(replica, "wrong-commit")
        install(self.shell.state, self.commit.outer, speculation.books)
        if self.proposal_at is not None:
            seconds = time.monotonic() - self.proposal_at
            self.commit_seconds.append(seconds)
            self.rt.metrics.consensus_seconds.observe(seconds)
        self.certificate = certificate
        outcome = speculation.outcome
        if self.attack == "wrong-model" and outcome.delta_tensors is not None:
            # Its children get a delta of its own under the round's valid certificate (they must
            # refuse it: the certificate names another model); it keeps the committed θ itself.
            wire = outcome.delta_tensors["theta"]
            negated = SparseVector(wire.indices, -wire.values, wire.numel)
            outcome = replace(outcome, delta_tensors={**outcome.delta_tensors, "theta": negated})
        self.commit.commit(self.shell, outcome, certificate)
        self.next_round(proof.round + 1, proof)

    def next_round(self, round_index: int, proof: Proof) -> None:
        now = time.monotonic()
        self.core.advance(round_index, now, proof)
        self.inputs, self.proposals, self.speculations = {}, {}, {}
        self.points = {proof.digest: self.points[proof.digest]} if proof.digest in self.points else {}
        self.proposed_in, self.proposal_at = None, None
        if isinstance(self.shell, ReplicaShell):
            self.shell.take_ahead(round_index)
        self.claimed, self.commit_votes = {}, {}
        early, self.early = self.early, []
        for sender, mesh in early:
            self.on_proposal(sender, mesh)

    def entered_view(self) -> None:
        self.rt.metrics.view_changes.inc()
        early, self.early = self.early, []
        for sender, mesh in early:
            self.on_proposal(sender, mesh)

    def fetch(self, round_index: int) -> None:
        now = time.monotonic()
        if now - self.last_fetch >= FETCH_INTERVAL_S:
            self.last_fetch = now
            self.request_state(round_index)

    def fault(self, replica: str, reason: str) -> None:
        self.faults.setdefault(replica, Counter())[reason] += 1
        self.rt.metrics.dropped(f"replica-{reason}")

    # -- RoundSink --------------------------------------------------------------------------------

    def round_closed(self, links: Any, result: Any) -> None:  # the shell never closes on its own
        raise AssertionError("a replica's round closes through agreement")

    def tick(self, links: Any, now: float) -> None:
        self.drain()
        self.run(self.core.tick(now))
        if self.core.committed is not None:  # certified, but not evaluated here: still fetching
            self.fetch(self.core.committed.round + 1)
        self.commit.tick(links, now)

    def stopping(self, links: Any) -> None:
        self.commit.stopping(links)

    def status(self) -> dict[str, Any]:
        mean = sum(self.commit_seconds) / len(self.commit_seconds) if self.commit_seconds else 0.0
        return {
            "replicas": self.replicas,
            "tolerated": self.core.f,
            "view": self.core.view,
            "leader": self.core.leader,
            "viewChanges": self.core.view_changes,
            "lastCommitSeconds": round(self.commit_seconds[-1], 4) if self.commit_seconds else 0.0,
            "meanCommitSeconds": round(mean, 4),
            "faults": {r: dict(c) for r, c in sorted(self.faults.items())},
        }
