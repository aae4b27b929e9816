"""Reputation records of the nodes below an aggregator's children, as those children forwarded
them: kept per node id, the latest view (highest `lastRound`) wins, because with reshuffling
several aggregators score the same worker."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from swarm_contract.records import valid_records


class SubtreeRecords:
    def __init__(self) -> None:
        self.by_id: dict[str, dict[str, Any]] = {}

    def merge(self, entries: Iterable[Any]) -> int:
        """Take the valid records of `entries` (swarm_contract.records.NodeRecord); returns how many
        were invalid (out of bounds, wrong types): those are dropped one by one, never stored."""
        kept, invalid = valid_records(entries)
        for model in kept:
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
