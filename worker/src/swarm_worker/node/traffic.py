"""Byte counters of a swarm, merged up the tree: each process counts what it received, each
aggregator keeps the largest counter it has seen per (node, incarnation), and the root sums them.
Pure data: no sockets, no clock beyond the incarnation stamp taken at creation."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

#: Process incarnations kept per node: restarts beyond these add nothing the totals would miss.
MAX_INCARNATIONS = 8


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

    def merge(self, entries: list[list[object]], allowed: frozenset[str] | None = None) -> int:
        """Take a child's counters: only about nodes in `allowed` (None: any), and at most
        MAX_INCARNATIONS per node (the newest), so made-up entries cannot grow the store. Returns
        how many entries were refused."""
        refused = 0
        touched: set[str] = set()
        for node_id, inc, got, dense in entries:
            if allowed is not None and node_id not in allowed:
                refused += 1
                continue
            key = (str(node_id), int(inc))  # type: ignore[call-overload]
            old = self.known.get(key, (0, 0))
            self.known[key] = (max(old[0], int(got)), max(old[1], int(dense)))  # type: ignore[call-overload]
            touched.add(key[0])
        # Pruned once per message, not per entry: a message of n entries costs O(n + store), not O(n x store).
        for node_id in touched:
            for stale in sorted(k for k in self.known if k[0] == node_id)[:-MAX_INCARNATIONS]:
                del self.known[stale]
        return refused

    def entries(self) -> list[list[object]]:
        own = {(self.node_id, self.incarnation): (self.received, self.dense_received)}
        merged = {**self.known, **own}
        return [[k[0], k[1], v[0], v[1]] for k, v in sorted(merged.items())]

    def totals(self) -> tuple[int, int]:
        entries = self.entries()
        return sum(int(e[2]) for e in entries), sum(int(e[3]) for e in entries)  # type: ignore[call-overload]
