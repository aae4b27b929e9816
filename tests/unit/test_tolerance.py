"""Liveness under attack (swarm_contract.tolerance, node.round_plan): up to f misbehaving children
per aggregator never stall a round, and a spec that asks for more than that guarantees is refused."""

from __future__ import annotations

from typing import Any

import pytest

from swarm_contract.manifest import load_manifest, parse_spec
from swarm_contract.spec import SpecError
from swarm_contract.tolerance import guaranteed_workers, tolerated
from swarm_contract.topology import plan_tree
from swarm_worker.node.round_plan import interior_quorum, root_quorum
from tests.integration.swarm_helpers import ROOT


@pytest.mark.parametrize(
    ("replicas", "branching", "rule", "f", "expected"),
    [
        (8, 4, "mean", 2, 8),  # the mean tolerates nothing: every worker is waited for
        (8, 8, "centered-clipping", 2, 6),  # flat: two of eight may be missing
        (8, 4, "trimmed-mean", 1, 6),  # groups of 4 close on 3; the root's 2 children tolerate 0
        (6, 3, "trimmed-mean", 1, 4),  # groups of 3 close on 2
        (12, 3, "trimmed-mean", 1, 8),  # 3 levels: 4 groups of 3 close on 2; 2 x 2 above tolerate 0
        (12, 3, "krum", 1, 12),  # Krum on 3 inputs tolerates no f: nothing may be missing
    ],
    ids=["mean", "flat-cclip", "byzantine-example", "training-example", "three-levels", "krum-small-groups"],
)
def test_guaranteed_workers(replicas: int, branching: int, rule: str, f: int, expected: int) -> None:
    assert guaranteed_workers(plan_tree(replicas, branching), rule, f) == expected


def _spec(**overrides: Any) -> Any:
    return parse_spec(
        {
            "workers": {"replicas": 12},
            "topology": {"branchingFactor": 3},
            "robustness": {"rule": "trimmed-mean", "f": 1},
            **overrides,
        }
    )


def test_a_group_closes_without_its_tolerated_children() -> None:
    spec = _spec()  # default quorum 9 of 12: a fraction of 3/4
    assert tolerated("trimmed-mean", 3, 1) == 1
    # Three children, one of them silent or always dropped: two updates close the round at its
    # deadline (before, ceil(3/4 x 3) = 3 updates were needed, and the group stalled forever).
    assert interior_quorum(spec, 3) == 2
    # The root: at most the 8 workers a round is sure to hear from, not the default 9.
    assert spec.guaranteed_workers == 8
    assert root_quorum(spec, 12) == 8


def test_without_f_every_child_is_waited_for() -> None:
    spec = _spec(robustness={"rule": "mean"}, training={"minPeers": 12})
    assert interior_quorum(spec, 3) == 3
    assert root_quorum(spec, 12) == 12


def test_a_quorum_beyond_what_f_allows_is_refused_in_one_line() -> None:
    with pytest.raises(SpecError, match=r"training.minPeers \(9\) exceeds the 8 workers") as e:
        _spec(training={"minPeers": 9})
    assert "\n" not in str(e.value)
    assert _spec(training={"minPeers": 8}).quorum == 8


@pytest.mark.parametrize("example", sorted(p.name for p in (ROOT / "examples").glob("*.yaml")))
def test_every_example_can_progress_with_its_f(example: str) -> None:
    spec = load_manifest(ROOT / "examples" / example).spec
    assert root_quorum(spec, spec.workers.replicas) <= spec.guaranteed_workers
