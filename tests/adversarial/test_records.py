"""Forged and flooded records against a live root (docs/threat-model.md, "forged records" and "record
and counter floods"): a child is believed only about its own subtree and only up to the current
round, every other record is refused and counted (reason `record`), and however many records its
children send, the root's store and its /status stay bounded by the planned tree."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from swarm_contract.topology import Tree, plan_tree, reportable
from tests.adversarial.nodes import NUMEL, Node, manifest_doc, node_process
from tests.adversarial.rogue import Rogue, random_sparse, record

pytestmark = [pytest.mark.integration]
JOB = "rogue"


def root_spec(replicas: int, rounds: int) -> dict[str, Any]:
    """A root whose rounds close only when every child reported (the deadline is far away)."""
    return {
        "workers": {"replicas": replicas},
        "topology": {"branchingFactor": 4},
        "training": {"rounds": rounds, "roundDeadlineSeconds": 600, "evalEvery": rounds},
        "checkpoint": {"everyRounds": rounds},
    }


# What the rogue agg-0 (children worker-0..3) claims each round r of the root's tree of 8 workers
# (root <- agg-0 <- worker-0..3, root <- agg-1 <- worker-4..7): (case, the record). Each is refused.
def forged(r: int) -> list[tuple[str, dict[str, Any]]]:
    return [
        ("an honest node of the sibling subtree quarantined", record("worker-4", r, quarantined=True)),
        ("another node of the sibling subtree", record("worker-5", r, quarantined=True, parent="agg-1")),
        ("the sibling itself", record("agg-1", r, role="aggregator", parent="root", quarantined=True)),
        ("the root", record("root", r, role="root", parent="", quarantined=True)),
        ("itself, which its parent measures", record("agg-0", r, role="aggregator", parent="root")),
        ("its own worker as measured by another", record("worker-2", r, parent="agg-1", quarantined=True)),
        ("its own worker in another role", record("worker-3", r, role="aggregator", quarantined=True)),
        ("lastRound far in the future", record("worker-1", 10**12, quarantined=True)),
        ("a node outside the tree", record("worker-99", r, quarantined=True)),
    ]


def test_forged_records_are_refused_counted_and_never_shown(tmp_path: Path) -> None:
    rounds = 3
    doc = manifest_doc(JOB, root_spec(8, rounds))
    with (
        node_process(tmp_path, doc, "root") as root,
        Rogue(root.address, "agg-0", JOB) as rogue,
        Rogue(root.address, "agg-1", JOB) as honest,
    ):
        for r in range(rounds):
            cases = forged(r)
            # Beside the forgeries, one record the rogue may give: about worker-0, in its subtree.
            nodes = [rec for _, rec in cases] + [record("worker-0", r)]
            rogue.update(r, random_sparse(NUMEL, seed=10 + r), workers=4, nodes=nodes)
            mine = [record(f"worker-{i}", r, parent="agg-1") for i in range(4, 8)]
            honest.update(r, random_sparse(NUMEL, seed=20 + r), workers=4, nodes=mine)
            replies = (rogue.expect("model", "stop"), honest.expect("model", "stop"))
            assert [m.round for m in replies] == [r + 1] * 2  # the round committed with both
            if r + 1 < rounds:  # after the last one the root stops: its final status is below
                assert root.dropped() == {"record": len(cases) * (r + 1)}, "forged records not counted"
                shown = root.status()
                assert shown["dropped"] == {"record": len(cases) * (r + 1)}
                assert [n["id"] for n in shown["nodes"] if n["quarantined"]] == []
        status = json.loads((root.workdir / "result.json").read_text())  # the final status
    assert status["phase"] == "Succeeded"
    assert status["dropped"] == {"record": len(forged(0)) * rounds}
    nodes = {n["id"]: n for n in status["nodes"]}
    # The root's own measures of its children, and what each child may say about its own subtree.
    assert set(nodes) == {"agg-0", "agg-1", "worker-0", "worker-4", "worker-5", "worker-6", "worker-7"}
    assert [n for n in nodes.values() if n["quarantined"]] == [], "a forged record shows a quarantine"
    assert nodes["agg-1"]["parent"] == "root"
    assert nodes["worker-4"]["parent"] == "agg-1"
    assert max(n["lastRound"] for n in nodes.values()) == rounds - 1


# The flood: 10 rounds of a root of 64 workers, every message from one of its 4 children (the rogue
# in every slot) carrying FLOOD_RECORDS made-up records. Per round each child sends one update the
# round takes and 3 of them 32 copies more (counted as duplicates): 10 x (4 + 96) = 1,000 messages.
FLOOD_ROUNDS = 10
COPIES = 32
FLOOD_RECORDS = 2_000
MIB = 1 << 20


def flood(child: str, r: int, allowed: frozenset[str], tree: Tree) -> list[dict[str, Any]]:
    """FLOOD_RECORDS records of which exactly `allowed` (the child's subtree) are taken: the rest are
    about other subtrees or the root, outside the tree, from the future, out of bounds, or name a role
    or a measuring parent the planned tree does not give the node."""
    nodes = [
        record(n.id, r, role=n.role, parent=n.parent or "", quarantined=n.id not in allowed)
        for n in sorted(tree.nodes.values(), key=lambda n: n.id)
    ]
    below = [tree.node(i) for i in sorted(allowed)]
    nodes += [record(n.id, 10**12, role=n.role, parent=n.parent or "", quarantined=True) for n in below]
    nodes += [record(n.id, r, role=n.role, parent=n.parent or "", reputation=7.0) for n in below]
    nodes += [record(n.id, r, role="root", parent=n.parent or "", quarantined=True) for n in below]
    nodes += [
        record(n.id, r, role=n.role, parent=child, quarantined=True) for n in below if n.parent != child
    ]
    ghosts = FLOOD_RECORDS - len(nodes)
    nodes += [record(f"ghost-{child}-{r}-{g:05d}", r, quarantined=True) for g in range(ghosts)]
    return nodes


def test_a_record_flood_leaves_memory_and_the_status_bounded(tmp_path: Path) -> None:
    tree = plan_tree(64, 4)
    children = list(tree.node("root").children)  # the 4 aggregators under the root
    allowed = {c: reportable(tree, c, reshuffle=False) for c in children}
    kept = len(allowed[children[0]])  # records the root takes from each update: the child's subtree
    assert all(len(nodes) == kept == 20 for nodes in allowed.values())  # 4 aggregators + 16 workers
    doc = manifest_doc(JOB, root_spec(64, 1000))
    with node_process(tmp_path, doc, "root") as root:
        rogues = [Rogue(root.address, c, JOB) for c in children]
        try:
            # Round 0 without records: the root's one-time costs (torch's first aggregation paging
            # its code in, allocator arenas) fall before the baseline, which is measured after it.
            for i, rogue in enumerate(rogues):
                rogue.update(0, random_sparse(NUMEL, seed=i), workers=16)
            assert [rogue.expect("model").round for rogue in rogues] == [1] * len(rogues)
            baseline_kib = root.memory_kib("VmRSS")
            rss_kib = [flood_round(root, rogues, allowed, tree, r) for r in range(1, FLOOD_ROUNDS + 1)]
            peak_kib = root.memory_kib("VmHWM")
            body = root.get("/status")
        finally:
            for rogue in rogues:
                rogue.close()
        root.alive()
    flooded = sum(rogue.sent for rogue in rogues) - len(rogues)
    growth_mib = (max(rss_kib) - baseline_kib) / 1024
    print(  # the figures the report quotes (pytest -s shows them)
        f"\nflood: {flooded} messages x {FLOOD_RECORDS} records; root VmRSS {baseline_kib / 1024:.1f} "
        f"MiB before, {rss_kib[0] / 1024:.1f} after the first flood round, {rss_kib[-1] / 1024:.1f} "
        f"after the last (largest growth {growth_mib:.1f} MiB, VmHWM {peak_kib / 1024:.1f} MiB); "
        f"/status {len(body)} bytes"
    )
    assert flooded == 1000
    assert growth_mib < 50, f"the root's RSS grew by {growth_mib:.1f} MiB: {rss_kib} KiB"
    assert len(body) < MIB, f"/status is {len(body)} bytes"
    status = json.loads(body)
    assert status["round"] == FLOOD_ROUNDS + 1
    # One record per node of the planned tree below the root: the most a 64-worker tree can hold.
    assert sorted(n["id"] for n in status["nodes"]) == sorted(set(tree.nodes) - {"root"})
    assert [n["id"] for n in status["nodes"] if n["quarantined"]] == []
    assert status["dropped"] == {
        "record": (FLOOD_RECORDS - kept) * len(children) * FLOOD_ROUNDS,
        "duplicate": COPIES * (len(children) - 1) * FLOOD_ROUNDS,
    }


def flood_round(
    root: Node, rogues: list[Rogue], allowed: dict[str, frozenset[str]], tree: Tree, r: int
) -> int:
    """Flood round r (the r-th): 100 messages; returns the root's VmRSS (KiB) once it committed.

    Each child's messages are counted before the next child sends, so at most one child's copies
    (33 x 0.3 MB) wait in the root's receive queue: the figure is the root's own memory, not the
    ZeroMQ queue, which holds up to RCVHWM (64) messages per connected peer."""
    *first, last = rogues
    for i, rogue in enumerate(rogues):
        nodes = flood(rogue.node_id, r, allowed[rogue.node_id], tree)
        message = rogue.message(r, random_sparse(NUMEL, seed=100 * r + i), workers=16, nodes=nodes)
        if rogue is last:
            rogue.send(message)  # the round's last update: it closes the round
            continue
        frames = rogue.send(message)
        for _ in range(COPIES):
            rogue.send_frames(frames)
        refused = FLOOD_RECORDS - len(allowed[rogue.node_id])
        taken = len(rogues) * (r - 1) + i + 1  # updates taken so far, each with `refused` records
        root.wait_dropped({"record": refused * taken, "duplicate": COPIES * (len(first) * (r - 1) + i + 1)})
    assert [rogue.expect("model").round for rogue in rogues] == [r + 1] * len(rogues)
    return root.memory_kib("VmRSS")
