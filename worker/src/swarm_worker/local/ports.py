"""Loopback ports for a local swarm's nodes, chosen before the processes start."""

from __future__ import annotations

import socket
from collections.abc import Sequence


def free_port(host: str) -> int:
    return free_ports(host, 1)[0]


def free_ports(host: str, count: int) -> list[int]:
    """`count` distinct free ports: all bound at once before any is released, so no two nodes of
    one run get the same port (one at a time, the kernel may hand a released port out again)."""
    sockets = [socket.socket(socket.AF_INET, socket.SOCK_STREAM) for _ in range(count)]
    try:
        for s in sockets:
            s.bind((host, 0))
        return [int(s.getsockname()[1]) for s in sockets]
    finally:
        for s in sockets:
            s.close()


def named_ports(host: str, *groups: Sequence[str]) -> list[dict[str, int]]:
    """One free port per name of each group, all distinct: e.g. (data, metrics, consensus) ports
    of a swarm's processes."""
    ports = iter(free_ports(host, sum(len(g) for g in groups)))
    return [{name: next(ports) for name in group} for group in groups]
