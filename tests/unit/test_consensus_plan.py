"""swarm_contract.consensus: replica ids, fault tolerance, quorum, leaders; and the spec's check."""

from __future__ import annotations

import pytest

from swarm_contract.consensus import (
    commit_quorum,
    leader_of,
    replica_id,
    replica_ids,
    replica_index,
    tolerated_faults,
    valid_replica_count,
)
from swarm_contract.manifest import parse_spec
from swarm_contract.spec import SpecError


def test_replica_zero_keeps_the_roots_id() -> None:
    assert replica_ids(4) == ("root", "root-1", "root-2", "root-3")
    assert replica_ids(1) == ("root",)
    with pytest.raises(ValueError, match="replica index -1"):
        replica_id(-1)


@pytest.mark.parametrize(("replicas", "f", "quorum"), [(1, 0, 1), (4, 1, 3), (7, 2, 5), (10, 3, 7)])
def test_faults_and_quorum(replicas: int, f: int, quorum: int) -> None:
    assert tolerated_faults(replicas) == f
    assert commit_quorum(replicas) == quorum
    # Any two quorums share an honest replica: 2 * quorum - replicas >= f + 1.
    assert 2 * quorum - replicas >= f + 1


def test_only_one_or_three_f_plus_one() -> None:
    assert [r for r in range(1, 11) if valid_replica_count(r)] == [1, 4, 7, 10]


def test_leader_rotates_with_the_view() -> None:
    assert [leader_of(v, 4) for v in range(6)] == ["root", "root-1", "root-2", "root-3", "root", "root-1"]
    assert replica_index("root-2", 4) == 2
    assert replica_index("root-4", 4) is None
    assert replica_index("agg-0", 4) is None


def test_the_spec_refuses_a_replica_count_between_two_valid_ones() -> None:
    assert parse_spec({"consensus": {"replicas": 4}}).consensus.replicas == 4
    with pytest.raises(SpecError, match=r"consensus\.replicas \(3\) must be 1 or 3f \+ 1"):
        parse_spec({"consensus": {"replicas": 3}})
