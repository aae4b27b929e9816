"""What the replicas' agreement (consensus.core) says and asks: proofs, votes and effects.

A `Proof` is 2f + 1 signed votes of one phase for one digest: a lock (PREPARE) or a commit
certificate (COMMIT). A `ViewVote` is one signed VIEW-CHANGE. The effects are what `ReplicaCore`
returns to its shell (consensus.replica): votes to sign and send, a commit to apply, a view entered,
a state to fetch, a lagging replica to help. Plain frozen data; no behaviour.
"""

from __future__ import annotations

from dataclasses import dataclass

#: The two voting phases of a round.
PHASES = ("prepare", "commit")


@dataclass(frozen=True)
class Proof:
    """2f + 1 signed votes of one phase for one digest: a lock (prepare) or a certificate (commit)."""

    phase: str
    view: int
    round: int
    digest: bytes
    signatures: tuple[tuple[str, bytes], ...]


# What the core asks the shell to do; the shell signs and sends, or applies.
@dataclass(frozen=True)
class SendVote:
    phase: str
    view: int
    round: int
    digest: bytes


@dataclass(frozen=True)
class SendViewChange:
    view: int
    round: int
    lock: Proof | None


@dataclass(frozen=True)
class Committed:
    certificate: Proof


@dataclass(frozen=True)
class EnterView:
    """A new view began; `repropose` is the lock its leader must propose again (None: free)."""

    view: int
    leader: str
    repropose: Proof | None


@dataclass(frozen=True)
class CatchUp:
    """Rounds before `round` are committed without this replica (f + 1 replicas voted on `round`,
    or a certificate showed it): its state must be fetched from the others."""

    round: int


@dataclass(frozen=True)
class Help:
    """`replica` still votes on an older round: send it the last certificate, which lets it
    commit that round or tells it to catch up (its own messages to it may have been lost)."""

    replica: str
    certificate: Proof


@dataclass(frozen=True)
class ViewVote:
    """A signed VIEW-CHANGE: `replica` asks to leave for `view` while on `round`, carrying its lock."""

    replica: str
    view: int
    round: int
    lock: Proof | None
    sig: bytes


@dataclass(frozen=True)
class ShareView:
    """`replica` asks for a view this one already entered (its messages were lost): send it the
    2f + 1 VIEW-CHANGE votes that began this view, so it can enter too."""

    replica: str
    votes: tuple[ViewVote, ...]


Effect = SendVote | SendViewChange | Committed | EnterView | CatchUp | Help | ShareView
