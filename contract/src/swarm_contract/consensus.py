"""The root's replicas (`spec.consensus`): who they are, how many faults they tolerate, who leads.

With `consensus.replicas` R = 1 (the default) the root is one process, as before. With R = 3f + 1
(4, 7, ...) the root is R replicas that compute every outer step from the same inputs and agree on
its result (swarm_worker.consensus): a model is applied anywhere only with a commit certificate of
2f + 1 replica signatures, so up to f replicas may crash or lie. Replica 0 keeps the root's id
(`root`): its pod name, DNS name and status endpoint stay what they are with one replica; the
others are `root-1` ... `root-<R-1>`. Every replica is the tree's root for its children (the
top-level aggregators or workers report to all of them); the tree itself (swarm_contract.topology)
keeps one logical root.

The leader of view v is replica v mod R (PBFT's rotating primary): a view change moves leadership
to the next replica, by votes of 2f + 1 replicas (terms = views). Pure: the spec's validation, the
operator and the nodes use it.
"""

from __future__ import annotations

from swarm_contract.topology import ROOT_ID


def replica_id(index: int) -> str:
    """Replica `index`'s node id: the root's own id for replica 0."""
    if index < 0:
        raise ValueError(f"replica index {index} < 0")
    return ROOT_ID if index == 0 else f"{ROOT_ID}-{index}"


def replica_ids(replicas: int) -> tuple[str, ...]:
    return tuple(replica_id(i) for i in range(replicas))


def replica_index(node_id: str, replicas: int) -> int | None:
    """The index of a replica id among `replicas`, None for any other id."""
    ids = replica_ids(replicas)
    return ids.index(node_id) if node_id in ids else None


def tolerated_faults(replicas: int) -> int:
    """f: the replicas that may fail or lie (R = 3f + 1; one replica tolerates none)."""
    return (replicas - 1) // 3


def commit_quorum(replicas: int) -> int:
    """Signatures a certificate needs: 2f + 1 (one, the root's own, with a single replica)."""
    return 2 * tolerated_faults(replicas) + 1


def valid_replica_count(replicas: int) -> bool:
    """1, or 3f + 1 with f >= 1: a count between two of those tolerates no more faults than the
    smaller one and only adds replicas that must agree."""
    return replicas == 1 or (replicas >= 4 and (replicas - 1) % 3 == 0)


def leader_of(view: int, replicas: int) -> str:
    """The replica that proposes in `view`."""
    return replica_id(view % replicas)
