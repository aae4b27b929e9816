"""The aggregation memory estimate and the start-up refusal (swarm_worker.node.aggregation_memory):
the form each spec gets, bytes that follow n x columns x 4, the one-line error naming the fields to
change, the cgroup and /proc readings, and an aggregating node refused before it binds a socket."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch

from swarm_contract.manifest import parse_spec
from swarm_contract.spec import SpecError, SwarmSpec
from swarm_contract.topology import plan_tree
from swarm_worker.node import aggregating, aggregation_memory
from swarm_worker.node.aggregation_memory import (
    DENSE_VECTORS,
    AggregationNeed,
    aggregation_need,
    cgroup_available,
    check_fits,
    mem_available,
)

D = 100_000_000  # a 100 M-parameter model
GIB = 1 << 30


def _spec(rule: str, **compression: Any) -> SwarmSpec:
    return parse_spec(
        {
            "workers": {"replicas": 16},
            "robustness": {"rule": rule, "f": 1, "reputation": {"enabled": False}},
            "compression": compression,
        }
    )


# (id, rule, compression, children are aggregators, form, columns)
FORMS = [
    ("common-support", "median", {}, False, "common support", 1_000_000),
    ("mean-own-supports", "mean", {}, False, "accumulator", 0),
    ("robust-own-supports", "median", {"support": "own"}, False, "own supports", 8_000_000),
    ("robust-own-from-aggregators", "median", {"support": "own"}, True, "dense", D),
    ("no-compression", "median", {"method": "none"}, False, "dense", D),
]


@pytest.mark.parametrize(
    ("rule", "compression", "children_aggregate", "form", "columns"),
    [c[1:] for c in FORMS],
    ids=[c[0] for c in FORMS],
)
def test_each_spec_gets_its_form(
    rule: str, compression: dict[str, Any], children_aggregate: bool, form: str, columns: int
) -> None:
    need = aggregation_need(_spec(rule, **compression), D, 8, children_aggregate)
    assert form in need.form
    if columns:
        assert need.columns == columns


def test_a_dense_rule_needs_n_times_d_times_4_bytes_and_more() -> None:
    need = aggregation_need(_spec("median", method="none"), D, 8, False)
    assert need.bytes >= 2 * 8 * D * 4  # the pending updates and their stacked rows
    krum = aggregation_need(_spec("krum", method="none"), D, 8, False)
    assert krum.bytes > need.bytes  # Krum's centred copy comes on top


def test_the_common_support_needs_a_hundredth_of_the_dense_rule() -> None:
    common = aggregation_need(_spec("median"), D, 32, False)
    dense = aggregation_need(_spec("median", method="none"), D, 32, False)
    assert common.bytes < dense.bytes / 20
    # The pending k values (the support is shared), their rows, the median's block, the (d,) vectors.
    assert common.bytes == 32 * 1_000_000 * 4 * (1 + 1 + 0.5) + DENSE_VECTORS * D * 4


def test_the_mean_of_own_supports_needs_no_rows_without_reputation() -> None:
    need = aggregation_need(_spec("mean"), D, 32, False)
    assert "for reputation" not in need.form
    assert need.bytes == 32 * 1_000_000 * 12 + DENSE_VECTORS * D * 4


def test_a_need_that_fits_passes_and_one_that_does_not_is_one_line_naming_the_fields() -> None:
    need = AggregationNeed(8, D, "dense: rows (8, d=100000000)", 7 * GIB)
    check_fits(need, 8 * GIB, "MemAvailable", "root")
    check_fits(need, None, "unknown", "root")  # nothing known: not refused
    with pytest.raises(SpecError) as caught:
        check_fits(need, 2 * GIB, "MemAvailable", "agg-1")
    message = str(caught.value)
    assert "\n" not in message
    assert "agg-1 needs about 7.00 GiB" in message
    assert "2.00 GiB is available (MemAvailable)" in message
    for field in ("compression.support", "topology.branchingFactor", "topology.aggregatorResources.memory"):
        assert field in message


# (id, files under the cgroup root, expected bytes left)
CGROUPS = [
    ("v2-limited", {"memory.max": "4294967296\n", "memory.current": "1073741824\n"}, 3 * GIB),
    ("v2-unlimited", {"memory.max": "max\n", "memory.current": "1073741824\n"}, None),
    (
        "v1-limited",
        {"memory/memory.limit_in_bytes": "2147483648", "memory/memory.usage_in_bytes": "0"},
        2 * GIB,
    ),
    ("v1-unlimited", {"memory/memory.limit_in_bytes": "9223372036854771712"}, None),
    ("over-the-limit", {"memory.max": "100", "memory.current": "200"}, 0),
    ("none", {}, None),
]


@pytest.mark.parametrize(("files", "expected"), [c[1:] for c in CGROUPS], ids=[c[0] for c in CGROUPS])
def test_cgroup_limits(tmp_path: Path, files: dict[str, str], expected: int | None) -> None:
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    assert cgroup_available(tmp_path) == expected


def test_mem_available_reads_proc_meminfo(tmp_path: Path) -> None:
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal:       16000000 kB\nMemFree:  100 kB\nMemAvailable:    8000000 kB\n")
    assert mem_available(meminfo) == 8_000_000 * 1024
    assert mem_available(tmp_path / "missing") is None


def test_an_aggregating_node_that_cannot_fit_is_refused_before_its_sockets(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    spec = parse_spec(
        {"workers": {"replicas": 8}, "robustness": {"rule": "median"}, "compression": {"method": "none"}}
    )
    tree = plan_tree(8, spec.topology.branching_factor)
    settings = SimpleNamespace(spec=spec)
    rt = SimpleNamespace(
        settings=settings, tree=tree, node=tree.node("root"), numel=D, device=torch.device("cpu")
    )
    monkeypatch.setattr(aggregating, "available_bytes", lambda device: (GIB, "MemAvailable"))
    monkeypatch.setattr(aggregating, "bind_router", lambda *a: pytest.fail("bound a socket"))
    with pytest.raises(SpecError, match="aggregation at root needs about"):
        aggregating.AggregatorShell(rt, None, 0)  # type: ignore[arg-type]


def test_available_bytes_on_the_cpu_is_a_number_here() -> None:
    available, source = aggregation_memory.available_bytes(torch.device("cpu"))
    assert available is None or available > 0
    assert source in ("left under the cgroup memory limit", "MemAvailable")
