"""Byte counters of a swarm, merged up the tree: each process counts what it received, each
aggregator keeps the largest counter it has seen per (node, incarnation), and the root sums them.
Pure data: no sockets, no clock beyond the incarnation stamp taken at creation."""

from __future__ import annotations

import time
from dataclasses import dataclass, field


@dataclass
class Traffic:
    """Bytes received per process incarnation, merged up the tree (max of cumulative counters)."""

    node_id: str
    incarnation: int = field(default_factory=lambda: time.time_ns() // 1_000_000)
    received: int = 0
    dense_received: int = 0
    known: dict[tuple[str, int], tuple[int, int]] = field(default_factory=dict)

    def count(self, nbytes: int, dense_nbytes: int) -> None:
        self.received += nbytes
        self.dense_received += dense_nbytes

    def merge(self, entries: list[list[object]]) -> None:
        for node_id, inc, got, dense in entries:
            key = (str(node_id), int(inc))  # type: ignore[call-overload]
            old = self.known.get(key, (0, 0))
            self.known[key] = (max(old[0], int(got)), max(old[1], int(dense)))  # type: ignore[call-overload]

    def entries(self) -> list[list[object]]:
        own = {(self.node_id, self.incarnation): (self.received, self.dense_received)}
        merged = {**self.known, **own}
        return [[k[0], k[1], v[0], v[1]] for k, v in sorted(merged.items())]

    def totals(self) -> tuple[int, int]:
        entries = self.entries()
        return sum(int(e[2]) for e in entries), sum(int(e[3]) for e in entries)  # type: ignore[call-overload]
