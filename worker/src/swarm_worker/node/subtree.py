"""Reputation records of the nodes below an aggregator's children, as those children forwarded
them: kept per node id, the latest view (highest `lastRound`) wins, because with reshuffling
several aggregators score the same worker.

A child is believed only about its own subtree (`swarm_contract.topology.reportable`: never about
itself, a sibling's subtree or the root) and only up to the current round; any other record, or one
that is not a valid `NodeRecord`, is dropped on its own. So the store holds at most one record per
node of the planned tree, whatever the children send."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from swarm_contract.records import valid_records


class SubtreeRecords:
    def __init__(self, measurers: Mapping[str, frozenset[str]], roles: Mapping[str, str]) -> None:
        #: Node id -> who may have measured it (swarm_contract.topology.measurers) and its role.
        self.measurers, self.roles = measurers, roles
        self.by_id: dict[str, dict[str, Any]] = {}

    def merge(self, entries: Iterable[Any], *, allowed: frozenset[str], current_round: int) -> int:
        """Take the records of `entries` that are valid NodeRecords about a node in `allowed`, with
        `lastRound` <= `current_round`, the node's role, and a `parent` that may measure it; returns
        how many were refused (dropped one by one)."""
        # Ids first (the codec checked every record's field types): records about nodes outside
        # `allowed` are refused without paying for a model validation each (a flood is all such).
        entries = list(entries)
        about_allowed = [e for e in entries if e["id"] in allowed]
        kept, invalid = valid_records(about_allowed)
        invalid += len(entries) - len(about_allowed)
        for model in kept:
            measured_by = self.measurers.get(model.id, frozenset())
            if (
                model.last_round > current_round
                or model.parent not in measured_by
                or model.role != self.roles.get(model.id)
            ):
                invalid += 1
                continue
            record = model.model_dump(by_alias=True)
            known = self.by_id.get(record["id"])
            if known is None or record["lastRound"] >= known["lastRound"]:
                self.by_id[record["id"]] = record
        return invalid

    def restore(self, records: Iterable[dict[str, Any]]) -> None:
        self.by_id = {r["id"]: r for r in records}

    def with_own(self, own: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
        """These records overridden by `own` (what the aggregator measured itself), sorted by id."""
        merged = {**self.by_id, **own}
        return [merged[k] for k in sorted(merged)]
