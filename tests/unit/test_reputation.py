"""Reputation: honest nodes stay trusted, hostile or absent ones sink and are quarantined."""

from __future__ import annotations

import pytest
import torch

from swarm_worker.maths.reputation import (
    MIN_REPUTATION,
    NodeReputation,
    ReputationBook,
    RoundObservation,
    cosines,
    duplicates,
    update_reputation,
)

HONEST = RoundObservation(delivered=True, selected=0.9, mad_score=0.5, cosine=0.5)
SIGN_FLIP = RoundObservation(delivered=True, selected=0.1, mad_score=20.0, cosine=-0.9)
NOISE = RoundObservation(delivered=True, selected=0.2, mad_score=50.0, cosine=0.01)
ABSENT = RoundObservation(delivered=False)


def rounds_to_quarantine(obs: RoundObservation, limit: int = 50) -> int | None:
    rep = NodeReputation("w", "worker", "agg-0")
    for r in range(limit):
        update_reputation(rep, obs, r, decay=0.8, threshold=0.5, quarantine_rounds=3)
        if rep.quarantined:
            return r + 1
    return None


@pytest.mark.parametrize("obs", [SIGN_FLIP, NOISE, ABSENT], ids=["sign-flip", "noise", "absent"])
def test_crude_behaviour_is_quarantined_within_10_rounds(obs: RoundObservation) -> None:
    rounds = rounds_to_quarantine(obs)
    assert rounds is not None
    assert rounds <= 10


def test_honest_node_is_never_quarantined_and_stays_above_threshold() -> None:
    rep = NodeReputation("w", "worker", "agg-0")
    for r in range(100):
        update_reputation(rep, HONEST, r, decay=0.8, threshold=0.5, quarantine_rounds=3)
    assert not rep.quarantined
    assert rep.reputation > 0.6


def test_reputation_is_clamped_and_can_only_down_weight() -> None:
    rep = NodeReputation("w", "worker", "agg-0")
    perfect = RoundObservation(delivered=True, selected=1.0, mad_score=0.0, cosine=1.0)
    for r in range(20):
        update_reputation(rep, perfect, r, decay=0.5, threshold=0.5, quarantine_rounds=3)
    assert rep.reputation == pytest.approx(1.0)
    for r in range(50):
        update_reputation(rep, ABSENT, r, decay=0.5, threshold=0.5, quarantine_rounds=3)
    assert rep.reputation == pytest.approx(MIN_REPUTATION)


def test_cosines_handle_zero_rows() -> None:
    updates = torch.tensor([[1.0, 0.0], [0.0, 0.0], [-2.0, 0.0]])
    torch.testing.assert_close(cosines(updates, torch.tensor([3.0, 0.0])), torch.tensor([1.0, 0.0, -1.0]))


def test_near_identical_updates_are_flagged_and_distinct_ones_are_not() -> None:
    gen = torch.Generator().manual_seed(0)
    honest = torch.randn(5, 200, generator=gen)
    crafted = torch.randn(200, generator=gen)
    updates = torch.cat([honest, crafted.expand(2, 200) + 1e-4 * torch.randn(2, 200, generator=gen)])
    assert duplicates(updates).tolist() == [False] * 5 + [True, True]
    assert not duplicates(torch.zeros(3, 10)).any(), "silent (zero) updates are not duplicates"


def test_a_colluder_sinks_below_an_honest_node_even_when_it_agrees_with_the_round() -> None:
    honest, colluder = NodeReputation("h", "worker", "root"), NodeReputation("c", "worker", "root")
    alie = RoundObservation(delivered=True, selected=1.0, mad_score=0.1, cosine=0.9, duplicate=True)
    for r in range(15):
        update_reputation(honest, HONEST, r, decay=0.8, threshold=0.5, quarantine_rounds=3)
        update_reputation(colluder, alie, r, decay=0.8, threshold=0.5, quarantine_rounds=3)
    assert colluder.reputation < honest.reputation


def test_a_replaced_node_is_reinstated_on_probation_and_requarantined_if_it_keeps_attacking() -> None:
    book = ReputationBook(decay=0.8, threshold=0.5, quarantine_rounds=3)
    for r in range(12):
        book.observe("w", "worker", "root", ABSENT, r)
    assert book.is_quarantined("w")
    assert book.reinstate("w")
    assert not book.is_quarantined("w")
    assert book.weight("w") == pytest.approx(0.5)
    assert not book.reinstate("w"), "a node in good standing has nothing to lift"
    for r in range(12, 22):
        book.observe("w", "worker", "root", SIGN_FLIP, r)
    assert book.is_quarantined("w")
