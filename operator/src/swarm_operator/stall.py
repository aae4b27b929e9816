"""Is the job's training still moving? A round that cannot close must show in status and events.

The operator sees the root's round number on every tick. It records when that number last changed
(`status.roundChangedAt`) and calls the job stalled when it has not changed for longer than

    stall_after = max(STALL_FLOOR_S, DEADLINES x roundDeadlineSeconds, ROUNDS x mean round time so far)

The mean round time is (roundChangedAt - startTime) / round: rounds with many local steps take
long without being stuck, and the first rounds' history covers that. Before the first round closed
there is no history, and the floor and the deadline term alone apply (the first round also pays pod
scheduling and imports, so the floor is generous). A stall is reported once, as the condition
`Progressing` turning False (reason `RoundStalled`) and a Warning event; it clears by itself when the
round moves again. Pure: the times are passed in.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from swarm_contract.spec import SwarmSpec
from swarm_operator.restarts import iso, parse_iso

#: Never call a job stalled sooner than this (seconds): pod starts and torch imports take a while.
STALL_FLOOR_S = 120.0
#: Round deadlines without progress before a round counts as stalled.
DEADLINES = 6
#: Mean round times without progress before a round counts as stalled.
ROUNDS = 5


@dataclass(frozen=True)
class Progress:
    #: Status fields to write (`roundChangedAt`).
    status: dict[str, Any]
    #: None while running normally; else the message of the stall.
    stalled: str | None


def stall_after(spec: SwarmSpec, started: datetime | None, changed: datetime, round_: int) -> float:
    """Seconds without a new round after which the job counts as stalled."""
    limit = max(STALL_FLOOR_S, DEADLINES * spec.training.round_deadline_seconds)
    if started is not None and round_ > 0:
        mean_round = max(0.0, (changed - started).total_seconds()) / round_
        limit = max(limit, ROUNDS * mean_round)
    return limit


def check_progress(
    spec: SwarmSpec, previous: Mapping[str, Any], round_now: int | None, *, running: bool, now: datetime
) -> Progress:
    """Where the round stands: when it last moved, and whether it has been still for too long."""
    round_before = previous.get("round")
    changed = parse_iso(previous.get("roundChangedAt"))
    if changed is None or (round_now is not None and round_now != round_before):
        return Progress({"roundChangedAt": iso(now)}, None)
    if not running or round_now is None:
        return Progress({}, None)
    limit = stall_after(spec, parse_iso(previous.get("startTime")), changed, round_now)
    still = (now - changed).total_seconds()
    if still <= limit:
        return Progress({}, None)
    return Progress(
        {},
        f"round {round_now} has not closed for {still:.0f} s (limit {limit:.0f} s; round deadline "
        f"{spec.training.round_deadline_seconds:g} s): too few children report; see the nodes' "
        "reputation and restarts, and the root's /status",
    )
