"""Combinations of spec fields that cannot run are refused when the spec is read (`swarm run`, the
operator, and the CRD's CEL rules: tests/cluster/test_operator_crd.py), with one line naming the
field, rather than by every node once its pod started."""

from __future__ import annotations

from typing import Any

import pytest

from swarm_contract.manifest import parse_spec
from swarm_contract.spec import SpecError


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (
            {"training": {"pipeline": True, "alpha": 0.5}},
            "spec: training.pipeline cannot be combined with training.alpha > 0",
        ),
        (
            {"task": {"name": "lm", "partition": "dirichlet"}},
            "spec: task.partition 'dirichlet' needs class labels; task 'lm' has none",
        ),
        (
            {"network": {"metricsPort": 5555}},
            "spec: network: dataPort, metricsPort and consensusPort must differ",
        ),
        (
            {"network": {"consensusPort": 9090}},
            "spec: network: dataPort, metricsPort and consensusPort must differ",
        ),
    ],
    ids=["pipeline-alpha", "lm-dirichlet", "data-metrics-ports", "metrics-consensus-ports"],
)
def test_a_combination_that_cannot_run_is_one_line(spec: dict[str, Any], message: str) -> None:
    with pytest.raises(SpecError) as refused:
        parse_spec(spec)
    assert str(refused.value) == message


def test_each_half_of_those_combinations_is_fine() -> None:
    parse_spec({"training": {"pipeline": True}})
    parse_spec({"training": {"alpha": 0.5}})
    parse_spec({"task": {"name": "lm"}})
    parse_spec({"task": {"name": "digits", "partition": "dirichlet"}})
