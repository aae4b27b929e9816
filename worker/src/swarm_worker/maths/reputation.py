"""Per-node reputation from measured signals (never from what a node says about itself).

Every aggregator scores each of its children once per round (`round_signals` measures the round):

    uptime        EMA of "delivered a valid update before the deadline" (1) or not (0)
    agreement     how much the robust rule kept of the update (`selected`, in [0, 1]),
                  times 1 if its MAD outlier score is below MAD_CUTOFF, decaying to 0 above it
    contribution  max(0, min(cos(update, aggregate), typical cos)), in [0, 1]: does it pull the same
                  way as the round? (an update orthogonal to the round, like noise, contributes
                  nothing). Capped at the round's median cosine: pulling *more* exactly the way the
                  rule's output goes than a typical child is no merit, see `closeness`
    closeness     a worker's distance to the coordinate-wise median, relative to the round's
                  typical (median) distance: `distance_ratio`. Honest workers' updates are
                  independent draws of similar noise, so in high dimension their distances
                  concentrate around the typical one; an update far closer than that is not such a
                  draw but crafted near the centre, which is what ALIE does (mean - z std, z < 1:
                  it is never trimmed, scores a tiny MAD and the highest cosine, so the other
                  signals would rank it first). Below CENTRAL_RATIO, agreement and contribution are
                  scaled by (ratio / CENTRAL_RATIO)^2. Only for workers: an aggregator's update is
                  an average, closer to the centre the more workers it holds
    duplicate     cos with another child's update above DUPLICATE_COSINE: workers with their own
                  data never send near-identical updates, colluders crafting one vector (ALIE, IPM)
                  do; such an update contributes nothing and agrees with nothing that round
    score         0.5 * contribution + 0.3 * uptime + 0.2 * agreement   (this round's contribution
                  and agreement, so a node that turns hostile is seen at once; 0.3 * uptime if it
                  delivered nothing)
    reputation    decay * reputation + (1 - decay) * score, clamped to [0.1, 1.0]
The record keeps EMAs (same decay) of contribution and agreement for display.

Reputation can only down-weight: it multiplies a child's weight (sample count), and is at most 1.
A node whose reputation stays below `threshold` for `quarantine_rounds` consecutive rounds is
quarantined: its updates are excluded and the operator replaces its pod. A replacement (a fresh
process, recognised by its HELLO from round 0) starts on probation (`ReputationBook.reinstate`).
Missing a round is data, not an error: it lowers uptime and the score of that round.

First contact. A book belongs to one aggregator process: a replaced aggregator (a new pod, a
restarted process) starts an empty one, and so does every aggregator at the start of a job. Until
a child delivers its first update to this book it may still be finding the process: a replaced pod
has a new address (on a cluster a child can take tens of seconds, a few rounds, to connect to it),
and under CURVE the aggregator cannot even send the round's model to a child that has not spoken.
Its first FIRST_CONTACT_ROUNDS misses are therefore not scored (`NodeReputation.unscored_misses`
counts them); every later miss is. So a child that reaches its replaced parent within
FIRST_CONTACT_ROUNDS rounds loses nothing (and with the defaults survives 5 misses more), while a
node that withholds its updates still loses uptime: one that delivered once at once, one that never
delivers (`silent`) FIRST_CONTACT_ROUNDS rounds later, still quarantined within 10 rounds. The
count is kept in the book, so root replicas (consensus) score alike, and a quarantined node put on
probation (`reinstate`) gets no new grace.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from swarm_contract.records import NodeRecord
from swarm_worker.maths import robust

MIN_REPUTATION = 0.1
MAX_REPUTATION = 1.0
MAD_CUTOFF = 3.0
DUPLICATE_COSINE = 0.99
#: A worker closer to the coordinate-wise median than this fraction of the round's typical distance
#: loses agreement and contribution (see `closeness`). Honest workers measured 0.6 to 1.5 in
#: simulations with non-iid shards, ALIE 0.3 (4 children, f = 1) to 0.5 (8 children, f = 2).
CENTRAL_RATIO = 0.75


#: Misses before a node's first delivery to a book that are not scored ("First contact" above). Each
#: of them waits out the round's deadline for the node, which is still expected; with the default
#: decay and threshold a fresh record then takes 7 more misses to be quarantined.
FIRST_CONTACT_ROUNDS = 3


#: NodeRecord fields whose NodeReputation attribute has another name.
_ATTRIBUTES = {"id": "node_id"}


@dataclass
class NodeReputation:
    node_id: str
    role: str
    parent: str
    reputation: float = MAX_REPUTATION
    uptime: float = 1.0
    agreement: float = 1.0
    contribution: float = 1.0
    rounds_below: int = 0
    quarantined: bool = False
    last_round: int = -1
    #: Misses not scored because no update of this node reached this book yet (module docstring).
    unscored_misses: int = 0

    def record(self) -> dict[str, object]:
        """The wire and status form: a `swarm_contract.records.NodeRecord` as its camelCase mapping,
        each record field taken from the attribute of the same name (`id` from `node_id`). Scores are
        rounded to 4 decimals, which also absorbs a cosine a rounding error above 1."""
        values = {name: getattr(self, _ATTRIBUTES.get(name, name)) for name in NodeRecord.model_fields}
        rounded = {k: round(v, 4) if isinstance(v, float) else v for k, v in values.items()}
        return NodeRecord.model_validate(rounded).model_dump(by_alias=True)


@dataclass(frozen=True)
class RoundObservation:
    """What an aggregator measured about one child in one round."""

    delivered: bool
    selected: float = 0.0
    mad_score: float = 0.0
    cosine: float = 0.0
    duplicate: bool = False
    #: The round's median cosine: the most contribution an update is credited with.
    typical_cosine: float = 1.0
    #: Distance to the coordinate-wise median over the round's typical distance (1: not measured).
    distance_ratio: float = 1.0


def agreement_score(selected: float, mad_score: float) -> float:
    penalty = 1.0 if mad_score <= MAD_CUTOFF else MAD_CUTOFF / mad_score
    return max(0.0, min(1.0, selected)) * penalty


def closeness(distance_ratio: float) -> float:
    """1 for a typical distance to the median, (ratio / CENTRAL_RATIO)^2 below CENTRAL_RATIO: the
    square, so that an update at a third of the typical distance keeps a fifth of its credit."""
    return min(1.0, max(0.0, distance_ratio) / CENTRAL_RATIO) ** 2


def update_reputation(
    rep: NodeReputation,
    obs: RoundObservation,
    round_index: int,
    *,
    decay: float,
    threshold: float,
    quarantine_rounds: int,
) -> NodeReputation:
    """Fold one round's observation into `rep` (mutated and returned); a miss before the node's
    first delivery to this book is only counted, up to FIRST_CONTACT_ROUNDS (module docstring)."""
    if not obs.delivered and rep.last_round < 0 and rep.unscored_misses < FIRST_CONTACT_ROUNDS:
        rep.unscored_misses += 1
        return rep
    rep.uptime = decay * rep.uptime + (1 - decay) * (1.0 if obs.delivered else 0.0)
    score = 0.3 * rep.uptime
    if obs.delivered:
        credit = 0.0 if obs.duplicate else closeness(obs.distance_ratio)
        agreement = credit * agreement_score(obs.selected, obs.mad_score)
        contribution = credit * max(0.0, min(obs.cosine, obs.typical_cosine))
        rep.agreement = decay * rep.agreement + (1 - decay) * agreement
        rep.contribution = decay * rep.contribution + (1 - decay) * contribution
        rep.last_round = round_index
        score += 0.5 * contribution + 0.2 * agreement
    rep.reputation = min(MAX_REPUTATION, max(MIN_REPUTATION, decay * rep.reputation + (1 - decay) * score))
    rep.rounds_below = rep.rounds_below + 1 if rep.reputation < threshold else 0
    if rep.rounds_below >= quarantine_rounds:
        rep.quarantined = True
    return rep


def cosines(updates: torch.Tensor, aggregate: torch.Tensor) -> torch.Tensor:
    """(n,) cosine similarity of each row of `updates` (n, d) with `aggregate` (d,); 0 for zero rows."""
    norms = updates.norm(dim=1) * aggregate.norm()
    dots = updates @ aggregate
    return torch.where(norms > 0, dots / norms.clamp_min(1e-30), torch.zeros_like(dots))


def duplicates(updates: torch.Tensor, threshold: float = DUPLICATE_COSINE) -> torch.Tensor:
    """(n,) bool: rows of `updates` (n, d) whose cosine with some other row exceeds `threshold`."""
    n = updates.shape[0]
    if n < 2:
        return torch.zeros(n, dtype=torch.bool)
    norms = updates.norm(dim=1, keepdim=True).clamp_min(1e-30)
    unit = updates / norms
    sim = unit @ unit.T
    sim.fill_diagonal_(-1.0)
    nonzero = updates.norm(dim=1) > 0
    flagged: torch.Tensor = (sim.max(dim=1).values > threshold) & nonzero
    return flagged


def _middle(x: torch.Tensor) -> torch.Tensor:
    """Coordinate-wise median of x (n, ...) over dim 0, the mean of the two middle values for even n."""
    ranked = x.sort(dim=0).values
    n = x.shape[0]
    return (ranked[(n - 1) // 2] + ranked[n // 2]) / 2


def distance_ratios(updates: torch.Tensor) -> torch.Tensor:
    """(n,) float64 r_i / median_j r_j with r_i = ||x_i - coordinate-wise median|| of `updates` (n, d).

    1 for every row when there are fewer than 3 (two rows are equidistant from their median) or the
    typical distance is 0 (all rows equal: `duplicates` is the signal there). Distances in float64,
    so bounded float32 inputs cannot overflow them."""
    n = updates.shape[0]
    ones = torch.ones(n, dtype=torch.float64, device=updates.device)
    if n < 3:
        return ones
    r = torch.linalg.vector_norm(updates - _middle(updates), dim=1, dtype=torch.float64)
    typical = _middle(r)
    return r / typical if bool(typical > 0) else ones


def round_signals(
    updates: torch.Tensor, selected: torch.Tensor, cos: torch.Tensor, workers: Sequence[bool]
) -> list[RoundObservation]:
    """One round's observation of each delivered update, in row order.

    updates (n, d) as the rule saw them (on the common support's columns, or the union of the
    supports: every signal here is the same as on the dense vectors); selected and cos (n,) from the
    rule (`robust.AggregationResult.selected`, `cosines` with its output); workers[i]: row i comes
    from a worker, whose `distance_ratio` is measured (module docstring, `closeness`)."""
    n = updates.shape[0]
    mad = robust.mad_scores(updates) if n >= 3 else torch.zeros(n)
    # One transfer each from the rule's device, not one per child.
    typical_cosine = float(_middle(cos.float())) if n else 1.0
    columns = zip(
        selected.tolist(),
        mad.tolist(),
        cos.tolist(),
        duplicates(updates).tolist(),
        distance_ratios(updates).tolist(),
        workers,
        strict=True,
    )
    return [
        RoundObservation(True, sel, score, c, dup, typical_cosine, ratio if worker else 1.0)
        for sel, score, c, dup, ratio, worker in columns
    ]


@dataclass
class ReputationBook:
    """The reputations an aggregator keeps for its direct children."""

    decay: float
    threshold: float
    quarantine_rounds: int
    nodes: dict[str, NodeReputation] = field(default_factory=dict)

    def get(self, node_id: str, role: str, parent: str) -> NodeReputation:
        if node_id not in self.nodes:
            self.nodes[node_id] = NodeReputation(node_id=node_id, role=role, parent=parent)
        return self.nodes[node_id]

    def observe(self, node_id: str, role: str, parent: str, obs: RoundObservation, round_index: int) -> None:
        update_reputation(
            self.get(node_id, role, parent),
            obs,
            round_index,
            decay=self.decay,
            threshold=self.threshold,
            quarantine_rounds=self.quarantine_rounds,
        )

    def weight(self, node_id: str) -> float:
        rep = self.nodes.get(node_id)
        return 1.0 if rep is None else rep.reputation

    def reinstate(self, node_id: str) -> bool:
        """A replaced process (its pod was replaced, or it restarted) starts on probation: reputation
        at least at the threshold, full uptime, quarantine (or the count towards it) lifted. Its history
        of agreement and contribution stays, so a node that keeps attacking is quarantined again after
        `quarantine_rounds`. Returns whether there was anything to lift."""
        rep = self.nodes.get(node_id)
        if rep is None or not (rep.quarantined or rep.rounds_below or rep.reputation < self.threshold):
            return False
        rep.quarantined = False
        rep.rounds_below = 0
        rep.uptime = 1.0
        rep.reputation = max(rep.reputation, self.threshold)
        return True

    def is_quarantined(self, node_id: str) -> bool:
        rep = self.nodes.get(node_id)
        return rep is not None and rep.quarantined
