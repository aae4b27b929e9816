"""Trying a proposal at a root replica without committing it: the round's result and outcome from
exactly the proposal's inputs, with the replica's state left as it was.

Every replica evaluates the leader's proposal (the leader its own): the round state is emptied, the
proposal's updates are accepted in child order (`RoundState.accept`, every check of a child's update
applies), the quorum is checked, the round is closed with the robust rule and the outer step is
taken on copies (consensus.outcome). What that changed (reputation books, subtree records, the
previous aggregate, the outer momentum) is captured as the state to install if this value commits,
and the state from before is put back: a proposal that does not commit leaves no trace, and one
that commits later, in another view, is installed exactly as evaluated.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass
from typing import Any

import torch

from swarm_contract.spec import SwarmSpec
from swarm_worker.consensus.outcome import Outcome, compute_outcome, inputs_digest
from swarm_worker.node.combine import Aggregate
from swarm_worker.node.round import RoundState
from swarm_worker.protocol.codec import Message
from swarm_worker.protocol.signing import update_digest
from swarm_worker.training.steps import OuterStep


@dataclass(frozen=True)
class Books:
    """What closing a round and taking the outer step change, besides θ."""

    reputations: dict[str, Any]
    subtree: dict[str, Any]
    previous: Aggregate | None
    momentum: torch.Tensor | None
    support: torch.Tensor | None
    invalid_records: int


def capture(state: RoundState, outer: OuterStep) -> Books:
    return Books(
        reputations=copy.deepcopy(state.book.nodes),
        subtree=copy.deepcopy(state.subtree.by_id),
        previous=state.previous_aggregate,  # replaced, never changed in place
        momentum=None if outer.momentum is None else outer.momentum.clone(),
        support=state.support,
        invalid_records=state.invalid_records,
    )


def install(state: RoundState, outer: OuterStep, books: Books) -> None:
    state.book.nodes = copy.deepcopy(books.reputations)
    state.subtree.by_id = copy.deepcopy(books.subtree)
    state.previous_aggregate = books.previous
    if books.momentum is not None:
        outer.momentum = books.momentum.clone()
    state.support = books.support
    state.invalid_records = books.invalid_records


@dataclass(frozen=True)
class Speculation:
    """A proposal's evaluation: its outcome (θ_{r+1}, the message, the point) and the books to
    install when it commits."""

    outcome: Outcome
    books: Books


def evaluate(
    spec: SwarmSpec,
    job: str,
    view: int,
    state: RoundState,
    outer: OuterStep,
    inputs: list[Message],
    numel: int,
) -> Speculation | str:
    """The outcome of closing `state`'s round on exactly `inputs`, or why the proposal is refused
    (an input the round would drop, a child twice, too few inputs for the quorum). `state` and
    `outer` are as they were afterwards."""
    if state.theta is None:
        return "no model"
    before = capture(state, outer)
    pending, closed, first = state.pending, state.closed, state.first_update_at
    try:
        state.pending, state.closed, state.first_update_at = {}, False, None
        now = time.monotonic()
        for msg in sorted(inputs, key=lambda m: m.node):
            if msg.node in state.pending:
                return f"{msg.node} twice"
            reason = state.accept(msg, now)
            if reason is not None:
                return f"{msg.node}: {reason.value}"
        if not state.quorum_reached():
            return "quorum"
        result = state.close()
        digest = inputs_digest([(m.node, update_digest(m)) for m in inputs])
        outcome = compute_outcome(
            spec, job, view, outer, state.theta.clone(), state.support, state.round, result, digest, numel
        )
        return Speculation(outcome, capture(state, outer))
    finally:
        install(state, outer, before)
        state.pending, state.closed, state.first_update_at = pending, closed, first
