"""The round state machine of an aggregator (interior or root), apart from any socket or clock.

Every call that needs the time takes `now` (seconds on a monotonic clock), so each path is
unit-tested without processes (tests/unit/test_round.py); `node.aggregating` is the I/O shell.

Round r at one aggregator:
    open(r, theta, now)      θ_r is held, nothing pending; with `topology.reshuffle` a bottom
                             aggregator's children are drawn afresh for r (topology.round_assignment)
    accept(msg, now)         an UPDATE from a child: None when it is taken, else why it is dropped
                             (a DropReason: counted by the shell, never an exception)
    ready(now)               every live (non-quarantined) child reported, or the deadline passed
                             since the round's first update and a quorum reported (round_plan)
    close()                  the robust aggregate of the pending updates (weights: samples x
                             reputation, reputation <= 1 so it only down-weights) and this round's
                             reputation observations: a RoundResult. The updates are combined in
                             their sparse form (node.combine): (n, k) rows on a common support, a
                             (d,) accumulator for the means on own supports, never an (n, d)
                             matrix unless an update is dense; reputation is scored on those rows,
                             a miss of each expected child too (not its first few before its first
                             update here: maths.reputation "First contact")
    hello(child, round, answered)
                             whether a child needs the dense model: it is on another round, or it
                             answered this one and its update is not here (this node restarted)
The deadline runs from the first update, not from the opening: slow starts (processes importing
torch, a long first round) must not close a round on one update.

Device: accepted updates are moved once to `device` (an aggregator's GPU with
`topology.aggregatorResources.gpus`, else the CPU), and the rule, the reputation signals and the
previous aggregate live there; θ stays where the caller keeps it (it only bounds the values).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from swarm_contract.spec import SwarmSpec
from swarm_contract.topology import (
    Tree,
    TreeNode,
    bottom_aggregators,
    measurers,
    reportable,
    round_assignment,
)
from swarm_worker.maths.compression import SparseVector, k_for
from swarm_worker.maths.reputation import (
    NodeReputation,
    ReputationBook,
    RoundObservation,
    round_signals,
)
from swarm_worker.maths.support import initial_support, merge_votes
from swarm_worker.node.admission import ChildUpdate, DropReason, check_update, value_rules
from swarm_worker.node.combine import Aggregate, combine
from swarm_worker.node.round_plan import deadline_for, feasible_rule, interior_quorum, root_quorum
from swarm_worker.node.subtree import SubtreeRecords
from swarm_worker.node.traffic import Traffic
from swarm_worker.protocol.codec import Message


@dataclass(frozen=True)
class RoundResult:
    #: The robust aggregate, on the common support's k columns or dense (node.combine).
    aggregate: Aggregate
    samples: int
    workers: int
    loss: float
    contributors: tuple[str, ...]
    #: Mean over contributors of max(0, cos(update, aggregate)), in [0, 1]: how much the round agreed.
    agreement: float = 1.0
    #: Common support: the subtree's merged votes for the next round's support.
    votes: SparseVector | None = None

    @property
    def vector(self) -> torch.Tensor:
        """(d,) the robust aggregate, dense, on the round's device."""
        return self.aggregate.dense()


@dataclass(frozen=True)
class HelloReply:
    dense_model: bool  # answer with the dense model of the current round
    reinstated: bool  # a replaced, quarantined child came back on probation


class RoundState:
    """What one aggregator knows about its current round; see the module docstring."""

    def __init__(
        self,
        spec: SwarmSpec,
        tree: Tree,
        node: TreeNode,
        numel: int,
        traffic: Traffic,
        theta: torch.Tensor | None,
        round_index: int,
        now: float,
        device: torch.device | None = None,
    ) -> None:
        self.spec, self.tree, self.node, self.numel, self.traffic = spec, tree, node, numel, traffic
        self.device = torch.device("cpu") if device is None else device
        self.is_root = node.role == "root"
        # Bottom aggregators draw their children afresh every round (topology.round_assignment).
        self.reshuffle = (
            spec.topology.reshuffle and node.role == "aggregator" and node in bottom_aggregators(tree)
        )
        self.worker_count: dict[str, int] = (
            {w.id: 1 for w in tree.workers}
            if self.reshuffle
            else {c: len(tree.node(c).ranks) for c in node.children}
        )
        self.children: tuple[str, ...] = tuple(node.children)
        self.reportable = {
            c: reportable(tree, c, reshuffle=spec.topology.reshuffle) for c in self.worker_count
        }
        #: Whose counters a child may forward: its own and those of the nodes it may report on.
        self.traffic_sources = {c: nodes | {c} for c, nodes in self.reportable.items()}
        rep = spec.robustness.reputation
        self.book = ReputationBook(rep.decay, rep.threshold, rep.quarantine_rounds)
        roles = {n.id: n.role for n in tree.nodes.values()}
        self.subtree = SubtreeRecords(measurers(tree, reshuffle=spec.topology.reshuffle), roles)
        #: Records from children that were not valid NodeRecords (dropped one by one), in all.
        self.invalid_records = 0
        self.deadline = deadline_for(node.level, tree.height, spec.training.round_deadline_seconds)
        self.k = k_for(numel, spec.compression.ratio)
        #: Common support (maths.support): the index set every update of this round must use.
        self.support: torch.Tensor | None = (
            initial_support(numel, self.k, spec.training.seed) if spec.common_support else None
        )
        self.previous_aggregate: Aggregate | None = None
        self.theta = theta
        self.round = round_index
        self.pending: dict[str, ChildUpdate] = {}
        self.closed = False
        self.opened_at = now
        self.first_update_at: float | None = None
        self.open(round_index, theta, now)

    # -- opening ----------------------------------------------------------------------------------

    def open(self, round_index: int, theta: torch.Tensor | None, now: float) -> None:
        """Start round `round_index` on θ = `theta`; pending updates of the last round are gone."""
        self.round, self.theta = round_index, theta
        if self.reshuffle:
            self.children = round_assignment(self.tree, round_index, self.spec.training.seed)[self.node.id]
        # What children may send this round: their value bound scales with θ_r, computed once here.
        self.value_rules = (
            {role: value_rules(self.spec, role, theta) for role in ("worker", "aggregator")}
            if theta is not None
            else {}
        )
        self.pending = {}
        self.closed = False
        self.opened_at = now
        self.first_update_at = None

    def knows(self, child: str) -> bool:
        return child in self.worker_count

    # -- messages ---------------------------------------------------------------------------------

    def hello(self, child: str, child_round: int, answered: bool) -> HelloReply:
        if self.theta is None:
            return HelloReply(dense_model=False, reinstated=False)
        # Every process starts on round 0: a HELLO from round 0 later is a replacement process.
        reinstated = child_round == 0 and self.round > 0 and self.book.reinstate(child)
        lost = answered and child not in self.pending and not self.closed
        return HelloReply(dense_model=child_round != self.round or lost, reinstated=reinstated)

    def accept(self, msg: Message, now: float) -> DropReason | None:
        child = msg.node
        if child not in self.worker_count:
            return DropReason.UNKNOWN_NODE
        if msg.type != "update":
            return DropReason.UNEXPECTED_TYPE
        if child not in self.children:
            return DropReason.NOT_ASSIGNED
        if self.theta is None or msg.round != self.round or self.closed:
            return DropReason.LATE if msg.round <= self.round else DropReason.FUTURE_ROUND
        if child in self.pending:
            return DropReason.DUPLICATE
        if self.book.is_quarantined(child):
            return DropReason.QUARANTINED
        rules = self.value_rules[self.tree.node(child).role]
        update = check_update(msg, self.numel, self.support, self.worker_count[child], rules)
        if isinstance(update, DropReason):
            return update
        # Records and counters only from an update the round takes, and only about the child's subtree.
        allowed = self.reportable[child]
        self.invalid_records += self.subtree.merge(
            msg.meta["nodes"], allowed=allowed, current_round=self.round
        )
        self.invalid_records += self.traffic.merge(msg.meta["traffic"], self.traffic_sources[child])
        if not self.pending:
            self.first_update_at = now
        self.pending[child] = update.to(self.device)  # the one copy to the device
        return None

    # -- closing ----------------------------------------------------------------------------------

    def expected(self) -> list[str]:
        """This round's children that are not quarantined."""
        return [c for c in self.children if not self.book.is_quarantined(c)]

    def quorum_reached(self) -> bool:
        """Root: `spec.quorum` workers in all. Interior: round_plan.interior_quorum of its children."""
        if not self.is_root:
            return len(self.pending) >= interior_quorum(self.spec, len(self.expected()))
        live_workers = sum(self.worker_count[c] for c in self.expected())
        return sum(u.workers for u in self.pending.values()) >= root_quorum(self.spec, live_workers)

    def ready(self, now: float) -> bool:
        if self.theta is None or self.closed or not self.pending:
            return False
        if all(c in self.pending for c in self.expected()):
            return True
        first = self.first_update_at if self.first_update_at is not None else now
        return now - first >= self.deadline and self.quorum_reached()

    def close(self) -> RoundResult:
        """Combine the pending updates with the robust rule and score every expected child."""
        self.closed = True
        names = sorted(self.pending)
        updates = [self.pending[c] for c in names]
        samples = torch.tensor([float(u.samples) for u in updates])
        reputations = torch.tensor([self.book.weight(c) for c in names])
        rules = self.spec.robustness
        # `mean` is FedAvg: weighted by samples, so a tree of means equals the flat mean.
        use_reputation = rules.reputation.enabled and rules.rule != "mean"
        weights = samples * reputations if use_reputation else samples
        bucket = self.spec.bucket_size
        rule, f = feasible_rule(
            "weighted-mean" if rules.rule == "mean" else rules.rule, len(names), rules.f, bucket
        )
        combined = combine(
            updates,
            rule,
            f=f,
            weights=weights,
            previous=self.previous_aggregate,
            pre_aggregation=[(p.name, p.param) for p in rules.pre_aggregation],
            want_rows=rules.reputation.enabled,
        )
        cos = combined.cosines
        if rules.reputation.enabled and combined.rows is not None:
            # Scored on the rows (n, columns): equal to the dense (n, d) scores (node.combine).
            self._score(names, combined.rows.values, combined.selected, cos)
        self.previous_aggregate = combined.aggregate
        total = sum(u.samples for u in updates)
        loss = sum(u.loss * u.samples for u in updates) / max(total, 1)
        return RoundResult(
            aggregate=combined.aggregate,
            samples=total,
            workers=sum(u.workers for u in updates),
            loss=loss,
            contributors=tuple(names),
            agreement=float(cos.clamp_min(0).mean()),
            votes=merge_votes([v for u in updates if (v := u.votes) is not None], self.numel, self.k),
        )

    def _score(
        self, names: list[str], updates: torch.Tensor, selected: torch.Tensor, cos: torch.Tensor
    ) -> None:
        roles = [self.tree.node(child).role for child in names]
        signals = round_signals(updates, selected, cos, [role == "worker" for role in roles])
        for child, role, obs in zip(names, roles, signals, strict=True):
            self.book.observe(child, role, self.node.id, obs, self.round)
        for child in self.expected():
            if child not in self.pending:
                missed = RoundObservation(False)
                self.book.observe(child, self.tree.node(child).role, self.node.id, missed, self.round)

    def restore(
        self,
        reputations: list[dict[str, Any]],
        subtree_records: list[dict[str, Any]],
        support: torch.Tensor | None,
    ) -> None:
        """Back to a checkpoint's books (the root after a restart)."""
        self.book.nodes = {r["node_id"]: NodeReputation(**r) for r in reputations}
        self.subtree.restore(subtree_records)
        if self.support is not None and support is not None:
            self.support = support

    def books(self) -> dict[str, Any]:
        """What `restore` takes back, for a checkpoint."""
        return {
            "reputations": [vars(rep).copy() for rep in self.book.nodes.values()],
            "subtree_records": list(self.subtree.by_id.values()),
            "support": self.support,
        }

    def records(self) -> list[dict[str, Any]]:
        """Reputation records of this subtree: measured here for children, passed on from below."""
        return self.subtree.with_own({node_id: rep.record() for node_id, rep in self.book.nodes.items()})
