"""A DEALER to a parent gives up one connect attempt quickly, so a replaced parent pod (same DNS
name, new IP) is found again in seconds rather than after the kernel's SYN retries."""

from __future__ import annotations

import zmq

from swarm_worker.protocol.transport import CONNECT_TIMEOUT_MS, connect_dealer


def test_a_parent_link_bounds_each_connect_and_its_retries() -> None:
    ctx = zmq.Context()
    try:
        sock = connect_dealer(ctx, "worker-0", "127.0.0.1:9", 1 << 20)  # nothing listens: never connects
        assert sock.getsockopt(zmq.CONNECT_TIMEOUT) == CONNECT_TIMEOUT_MS <= 5_000
        assert sock.getsockopt(zmq.RECONNECT_IVL_MAX) <= 5_000
        sock.close(linger=0)
    finally:
        ctx.term()
