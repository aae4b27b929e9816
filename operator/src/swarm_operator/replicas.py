"""What the operator believes of a root that is R replicas (`consensus.replicas`), up to f of which
may lie in their /status or exit 0 whenever they like.

    agreed_status(statuses, replicas)   the one status the job's status is written from
    finished_replicas(pods, replicas)   whether enough replica pods exited 0 to call the run done

The rule is PBFT's reply rule: a claim counts once f + 1 replicas make it, since then at least one
honest replica does. Progress is the (f + 1)-th highest round reported (a round at least one honest
replica reached), and a terminal phase needs f + 1 replicas reporting it; with fewer readable
statuses than f + 1 there is nothing to believe, and the last written progress stays. A node is
quarantined (and its pod replaced) only when f + 1 replicas report it so. With one root (f = 0)
every rule reduces to "the root says so". Pure.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence

from swarm_contract.consensus import replica_ids, tolerated_faults
from swarm_contract.records import RootStatus
from swarm_operator.observe import PodObservation

TERMINAL = ("Succeeded", "Failed")


def believed(replicas: int) -> int:
    """How many replicas must make a claim before it is believed: f + 1."""
    return tolerated_faults(replicas) + 1


def _by_round(statuses: Sequence[RootStatus]) -> list[RootStatus]:
    return sorted(statuses, key=lambda s: s.round, reverse=True)


def agreed_status(statuses: Sequence[RootStatus], replicas: int) -> RootStatus | None:
    """The status to report of the replicas' `statuses` (one per replica that answered or left
    one), or None when fewer than f + 1 did."""
    quorum = believed(replicas)
    if len(statuses) < quorum:
        return None
    for phase in TERMINAL:
        ended = [s for s in statuses if s.phase == phase]
        if len(ended) >= quorum:
            return _by_round(ended)[quorum - 1]
    chosen = _by_round(statuses)[quorum - 1]
    if chosen.phase in TERMINAL:  # claimed by fewer than f + 1: not the job's end yet
        chosen = chosen.model_copy(update={"phase": "Running"})
    return _agreed_quarantine(chosen, statuses, quorum)


def _agreed_quarantine(chosen: RootStatus, statuses: Sequence[RootStatus], quorum: int) -> RootStatus:
    """`chosen` with a node marked quarantined only where f + 1 replicas say so: the operator
    replaces a quarantined node's pod, and one lying replica must not get honest pods replaced."""
    if quorum == 1:
        return chosen
    votes = Counter(n.id for s in statuses for n in s.nodes if n.quarantined)
    nodes = [n.model_copy(update={"quarantined": votes[n.id] >= quorum}) for n in chosen.nodes]
    return chosen.model_copy(update={"nodes": nodes})


def replica_pods(pods: Mapping[str, PodObservation], replicas: int) -> list[PodObservation]:
    """The root replicas' pods that exist, `root` first."""
    return [pods[r] for r in replica_ids(replicas) if r in pods]


def finished_replicas(pods: Sequence[PodObservation], replicas: int) -> bool:
    """Whether f + 1 of the replicas' pods exited 0 (the root's word that training is done)."""
    return sum(1 for p in pods if p.phase == "Succeeded") >= believed(replicas)
