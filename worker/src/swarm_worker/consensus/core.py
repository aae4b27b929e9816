"""One root replica's agreement on each round, apart from any socket, clock, tensor or key.

R = 3f + 1 replicas (swarm_contract.consensus) commit one model per round. In view v the leader
(replica v mod R) proposes the round's inputs; every replica computes the outer step from exactly
those inputs (deterministic: same inputs, same bits) and the digest D of the resulting commit point
(swarm_worker.protocol.certificate). Then, PBFT's normal case with signatures:

    agree(view, round, D)        this replica computed D from the leader's proposal (the leader
                                 from its own): it votes PREPARE D
    2f + 1 PREPAREs for D        prepared: it is locked on D for this round and votes COMMIT D
    2f + 1 COMMITs for D         committed: their signatures are the certificate every node checks

Safety (no two values committed for one round): a commit needs 2f + 1 replicas prepared, so at
least f + 1 honest replicas are locked on D; a locked replica prepares no other value in a later
view unless it sees 2f + 1 PREPAREs for another value in a later view (which, by the same count,
cannot exist once D committed); so no other value reaches 2f + 1 PREPAREs. Liveness: a replica that
sees no commit of its round within the view timeout (doubled after every view change of the same
round) votes VIEW-CHANGE to the next view, carrying its lock; 2f + 1 votes for a view enter it, and
f + 1 votes for a later view pull a replica along (so a replica that timed out alone does not split
the others). The new leader re-proposes the highest-view lock among the votes it saw, if any, so the
value that may have committed somewhere is the one that goes on.

The core only counts distinct replicas: the shell (consensus.replica) checks every signature before
calling it, signs what the core asks it to send, and evaluates proposals. Every store is bounded by
R per phase, view and digest, and only the current round's votes are kept; votes for later rounds
only record how far each replica got, so f + 1 replicas ahead tell this one to catch up.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from swarm_contract.consensus import commit_quorum, leader_of, replica_ids, tolerated_faults
from swarm_worker.consensus.effects import (
    PHASES,
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

#: The view timeout doubles with each view change of a round, up to 2^this times: a replica whose
#: messages were lost must not wait for ever to try again.
MAX_BACKOFF_DOUBLINGS = 4
#: Views ahead of the current one whose votes are kept (each holds at most R): a bound, far above
#: the few view changes a round needs with doubling timeouts.
MAX_VIEWS_AHEAD = 64


@dataclass
class _RoundVotes:
    #: (phase, view, digest) -> replica -> signature
    votes: dict[tuple[str, int, bytes], dict[str, bytes]] = field(default_factory=dict)
    #: new view -> replica -> its VIEW-CHANGE vote
    view_changes: dict[int, dict[str, ViewVote]] = field(default_factory=dict)


class ReplicaCore:
    """The agreement state of replica `me` among `replicas`; see the module docstring."""

    def __init__(self, me: str, replicas: int, view_timeout: float, round_index: int, now: float) -> None:
        self.ids = replica_ids(replicas)
        if me not in self.ids:
            raise ValueError(f"{me!r} is not one of {replicas} replicas")
        self.me, self.replicas = me, replicas
        self.f, self.quorum = tolerated_faults(replicas), commit_quorum(replicas)
        self.view_timeout = view_timeout
        self.view = 0
        self.round = round_index
        #: The certificate of the round before this one, for replicas that lag (None at first).
        self.previous: Proof | None = None
        self._open(now)
        #: The highest round each replica voted on (bounded by R entries): who is ahead.
        self.seen_round: dict[str, int] = {}
        #: View changes entered, in all: a metric.
        self.view_changes = 0
        #: The 2f + 1 votes that began the current view (empty in view 0), for replicas left behind.
        self.view_votes: tuple[ViewVote, ...] = ()
        self.shared: set[tuple[str, int]] = set()  # (replica, view it asked for) already answered

    # -- state ----------------------------------------------------------------------------------

    def _open(self, now: float) -> None:
        self.round_votes = _RoundVotes()
        self.lock: Proof | None = None
        self.committed: Proof | None = None
        self.voted: dict[tuple[str, int], bytes] = {}  # (phase, view) -> the digest this replica voted
        #: When this round's view timer started (`heard`): when the round is ready here or a
        #: proposal came, not at its opening (the children may take long to train it, or to start).
        self.timer_start: float | None = None
        self.last_resend = now
        self.attempts = 0  # view changes within this round: the timeout doubles with each
        self.wanted_view = self.view  # the view this replica asked for (> view while changing)
        self.helped: set[str] = set()  # lagging replicas sent `previous` after one of their votes
        self.shared = set()

    @property
    def leader(self) -> str:
        return leader_of(self.view, self.replicas)

    @property
    def is_leader(self) -> bool:
        return self.leader == self.me

    @property
    def changing_view(self) -> bool:
        """True after voting to leave the view: no more PREPARE or COMMIT in it."""
        return self.wanted_view > self.view

    def advance(self, round_index: int, now: float, certificate: Proof) -> None:
        """The model `certificate` commits is applied (committed here, or fetched from the
        others): open `round_index`, the round after the certificate's."""
        if round_index <= self.round or certificate.round != round_index - 1:
            raise ValueError(f"round {round_index} does not follow {self.round} and its certificate")
        self.round = round_index
        self.previous = certificate
        self._open(now)

    def certified(self, certificate: Proof) -> list[Effect]:
        """A commit certificate from another replica (its 2f + 1 signatures checked by the shell)."""
        if certificate.phase != "commit" or len({r for r, _ in certificate.signatures}) < self.quorum:
            return []
        if certificate.round == self.round and self.committed is None:
            self.committed = certificate
            return [Committed(certificate)]
        if certificate.round > self.round:
            return [CatchUp(certificate.round + 1)]
        return []

    # -- this replica's own steps ---------------------------------------------------------------

    def agree(self, view: int, round_index: int, digest: bytes) -> list[Effect]:
        """The shell computed `digest` from the proposal of `view`'s leader (or, the leader, from
        its inputs). Votes PREPARE unless that breaks this replica's lock or an earlier vote."""
        if view != self.view or round_index != self.round or self.changing_view or self.committed:
            return []
        if self.lock is not None and self.lock.digest != digest:
            return []
        if ("prepare", view) in self.voted:
            return []
        self.voted[("prepare", view)] = digest
        return [SendVote("prepare", view, round_index, digest)]

    def heard(self, now: float) -> None:
        """The round is ready at this replica, or a proposal for it came: its view timer starts."""
        if self.timer_start is None:
            self.timer_start = self.last_resend = now

    def tick(self, now: float) -> list[Effect]:
        """Vote for the next view when this round has waited past its timeout without a commit;
        before that, every half timeout, send this view's votes again (a replica that restarted
        or reconnected lost what was sent to it meanwhile; the others count a vote once)."""
        if self.committed is not None or self.timer_start is None:
            return []
        if now - self.timer_start < self.view_timeout * 2 ** min(self.attempts, MAX_BACKOFF_DOUBLINGS):
            if now - self.last_resend < self.view_timeout / 2 or self.changing_view:
                return []
            self.last_resend = now
            return [
                SendVote(phase, view, self.round, digest)
                for (phase, view), digest in self.voted.items()
                if view == self.view
            ]
        self.attempts += 1
        self.timer_start = now
        self.wanted_view = max(self.wanted_view, self.view) + 1
        return [SendViewChange(self.wanted_view, self.round, self.lock)]

    # -- the others' votes (signatures already checked by the shell) ----------------------------

    def vote(
        self, phase: str, replica: str, view: int, round_index: int, digest: bytes, sig: bytes
    ) -> list[Effect]:
        """A replica's signed PREPARE or COMMIT (this replica's own votes come back through here)."""
        if phase not in PHASES or replica not in self.ids:
            return []
        ahead = self._note_round(replica, round_index)
        if round_index < self.round and self.previous is not None and replica not in self.helped:
            self.helped.add(replica)
            return [Help(replica, self.previous)]
        if round_index != self.round or self.committed is not None:
            return ahead
        if view < self.view or view > self.view + self.replicas:  # bounded window of future views
            return []
        key = (phase, view, digest)
        voters = self.round_votes.votes.get(key)
        if voters is None:
            if sum(1 for (p, v, _) in self.round_votes.votes if p == phase and v == view) >= self.replicas:
                return []  # a liar's digests: at most R kept per phase and view
            voters = self.round_votes.votes[key] = {}
        if replica in voters:
            return []
        voters[replica] = sig
        if len(voters) < self.quorum:
            return []
        proof = Proof(phase, view, round_index, digest, tuple(sorted(voters.items())))
        if phase == "prepare":
            return self._prepared(proof)
        self.committed = proof
        return [Committed(proof)]

    def _prepared(self, proof: Proof) -> list[Effect]:
        if self.lock is None or proof.view >= self.lock.view:
            self.lock = proof
        if proof.view != self.view or self.changing_view or ("commit", proof.view) in self.voted:
            return []
        self.voted[("commit", proof.view)] = proof.digest
        return [SendVote("commit", proof.view, proof.round, proof.digest)]

    def view_change(self, vote: ViewVote, now: float) -> list[Effect]:
        """A replica's VIEW-CHANGE, this replica's own included (its signature and its lock's
        checked by the shell)."""
        replica, new_view, round_index = vote.replica, vote.view, vote.round
        if replica not in self.ids:
            return []
        ahead = self._note_round(replica, round_index)
        if round_index < self.round and self.previous is not None:
            return [Help(replica, self.previous)]  # a view change is rare: answer every one
        if round_index != self.round or self.committed is not None:
            return ahead
        if new_view <= self.view:
            if self.view_votes and (replica, new_view) not in self.shared:
                self.shared.add((replica, new_view))
                return [ShareView(replica, self.view_votes)]
            return []
        if new_view > self.view + MAX_VIEWS_AHEAD:
            return []
        self.round_votes.view_changes.setdefault(new_view, {})[replica] = vote
        self._adopt(vote.lock)
        effects: list[Effect] = []
        later = {r for v, votes in self.round_votes.view_changes.items() if v > self.view for r in votes}
        target = min(v for v in self.round_votes.view_changes if v > self.view)
        if len(later) >= self.f + 1 and target > self.wanted_view:
            # f + 1 replicas want to leave: at least one honest one timed out; join them.
            self.wanted_view = target
            effects.append(SendViewChange(target, self.round, self.lock))
        votes = self.round_votes.view_changes.get(new_view, {})
        if len(votes) >= self.quorum:
            effects.append(self._enter(new_view, tuple(votes.values()), now))
            # NEW-VIEW: the votes to every other replica, which may have missed some of them.
            effects += [ShareView(r, self.view_votes) for r in self.ids if r != self.me]
        return effects

    def join_view(self, votes: tuple[ViewVote, ...], now: float) -> list[Effect]:
        """2f + 1 VIEW-CHANGE votes for one view from another replica (ShareView; every signature
        checked by the shell): enter that view if it is later than this one's."""
        views = {v.view for v in votes}
        if len(views) != 1 or len({v.replica for v in votes if v.replica in self.ids}) < self.quorum:
            return []
        view = views.pop()
        if view <= self.view or self.committed is not None:
            return []
        for v in votes:
            self._adopt(v.lock)
        return [self._enter(view, votes, now)]

    def _adopt(self, lock: Proof | None) -> None:
        """A later prepared value of this round releases an earlier lock (it cannot have committed)."""
        if lock is None or lock.round != self.round or lock.phase != "prepare":
            return
        if self.lock is None or lock.view > self.lock.view:
            self.lock = lock

    def _enter(self, view: int, votes: tuple[ViewVote, ...], now: float) -> EnterView:
        self.view = view
        self.view_votes = votes
        self.timer_start = now  # the new leader gets a whole (doubled) timeout
        self.wanted_view = max(self.wanted_view, view)
        self.view_changes += 1
        self.round_votes.view_changes = {v: r for v, r in self.round_votes.view_changes.items() if v > view}
        locks = [v.lock for v in votes if v.lock is not None and v.lock.round == self.round]
        if self.lock is not None:
            locks.append(self.lock)
        repropose = max(locks, key=lambda p: p.view) if locks else None
        return EnterView(view, self.leader, repropose)

    def _note_round(self, replica: str, round_index: int) -> list[Effect]:
        """Remember how far `replica` got; f + 1 replicas past this round: catch up."""
        if round_index > self.seen_round.get(replica, -1):
            self.seen_round[replica] = round_index
        ahead = sorted((r for r in self.seen_round.values() if r > self.round), reverse=True)
        if len(ahead) >= self.f + 1:
            return [CatchUp(ahead[self.f])]  # a round at least one honest replica reached
        return []
