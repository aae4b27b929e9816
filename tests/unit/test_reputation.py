"""Reputation: honest nodes stay trusted, hostile or absent ones sink and are quarantined."""

from __future__ import annotations

import pytest
import torch

from swarm_worker.maths import robust
from swarm_worker.maths.reputation import (
    CENTRAL_RATIO,
    MIN_REPUTATION,
    NodeReputation,
    ReputationBook,
    RoundObservation,
    closeness,
    cosines,
    distance_ratios,
    duplicates,
    round_signals,
    update_reputation,
)
from swarm_worker.simulation.attacks import craft_update

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


# ---------------------------------------------------------------------------------------------
# ALIE: crafted next to the centre, where every rule-relative signal would reward it


def alie_round(gen: torch.Generator, honest: int, attackers: int, d: int = 2000) -> torch.Tensor:
    """(honest + attackers, d) fp16-rounded rows: honest = shared signal + own noise, then the
    attackers' μ - zσ of the honest rows (the attack's formula for 8 workers and f = 2)."""
    signal = 0.5 * torch.randn(d, generator=gen)
    rows = signal + torch.randn(honest, d, generator=gen)
    alie = craft_update("alie", rows[0], rows, n=8, f=2, scale=None, generator=gen)
    return torch.cat([rows, alie.expand(attackers, d)]).half().float()


@pytest.mark.parametrize(
    ("honest", "attackers", "rule", "f"),
    [(3, 1, "trimmed-mean", 1), (7, 1, "trimmed-mean", 2), (6, 2, "centered-clipping", 2)],
    ids=["group-of-4-trimmed-mean", "flat-8-trimmed-mean", "flat-8-two-colluders-cc"],
)
def test_alie_ends_below_every_honest_worker_and_honest_workers_stay_trusted(
    honest: int, attackers: int, rule: str, f: int
) -> None:
    gen = torch.Generator().manual_seed(3)
    book = ReputationBook(decay=0.8, threshold=0.5, quarantine_rounds=3)
    names = [f"h{i}" for i in range(honest)] + [f"a{i}" for i in range(attackers)]
    for r in range(30):
        updates = alie_round(gen, honest, attackers)
        result = robust.aggregate(rule, updates, f=f)
        cos = cosines(updates, result.vector)
        # What the old formula rewarded: the attacker is the most aligned and the least trimmed.
        assert float(cos[honest:].min()) > float(cos[:honest].max())
        for name, obs in zip(
            names, round_signals(updates, result.selected, cos, [True] * len(names)), strict=True
        ):
            book.observe(name, "worker", "agg", obs, r)
    worst_honest = min(book.nodes[h].reputation for h in names[:honest])
    assert all(book.nodes[a].reputation < worst_honest for a in names[honest:]), book.nodes
    assert not any(book.nodes[h].quarantined for h in names[:honest]), book.nodes
    assert all(book.nodes[a].quarantined for a in names[honest:]), book.nodes


def test_distance_ratios_single_out_the_crafted_centre_and_not_honest_draws() -> None:
    gen = torch.Generator().manual_seed(0)
    ratios = distance_ratios(alie_round(gen, honest=3, attackers=1))
    assert float(ratios[:3].min()) > CENTRAL_RATIO
    assert float(ratios[3]) < CENTRAL_RATIO / 2
    assert distance_ratios(torch.randn(2, 50, generator=gen)).tolist() == [1.0, 1.0], "n < 3: not measured"
    assert distance_ratios(torch.ones(4, 50)).tolist() == [1.0] * 4, "all equal: duplicates' case"


def test_closeness_only_scales_down_updates_nearer_than_typical() -> None:
    assert closeness(1.3) == closeness(1.0) == closeness(CENTRAL_RATIO) == 1.0
    assert closeness(CENTRAL_RATIO / 2) == pytest.approx(0.25)
    assert closeness(0.0) == 0.0


def test_contribution_is_capped_at_the_typical_cosine_and_aggregators_are_not_measured() -> None:
    def reputation_after(obs: RoundObservation) -> float:
        rep = NodeReputation("w", "worker", "agg-0")
        for r in range(30):
            update_reputation(rep, obs, r, decay=0.8, threshold=0.5, quarantine_rounds=3)
        return rep.reputation

    typical = RoundObservation(True, 0.9, 0.5, cosine=0.6, typical_cosine=0.6)
    more_aligned = RoundObservation(True, 0.9, 0.5, cosine=0.95, typical_cosine=0.6)
    assert reputation_after(more_aligned) == pytest.approx(reputation_after(typical))
    gen = torch.Generator().manual_seed(1)
    updates = alie_round(gen, honest=3, attackers=1)
    cos = cosines(updates, updates.mean(0))
    signals = round_signals(updates, torch.ones(4), cos, [False] * 4)  # rows of aggregators
    assert [s.distance_ratio for s in signals] == [1.0] * 4
    middle = cos.sort().values[1:3].mean()  # the median of 4: the mean of the two middle values
    assert [s.typical_cosine for s in signals] == pytest.approx([float(middle)] * 4)
