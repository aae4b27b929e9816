"""benchmarks/netdelay.py: a TCP round trip inside the delayed namespace takes at least twice the
one-way delay, the namespace is gone afterwards (also when the body raises), and the host's own
loopback is left as it was."""

from __future__ import annotations

import subprocess
import sys

import pytest

from benchmarks.netdelay import NetDelayError, delayed_namespace, unavailable

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(unavailable() is not None, reason=f"netdelay: {unavailable()}"),
]
DELAY_MS = 40.0
#: One echo server and client over 127.0.0.1 in one process: prints the fastest of 5 round trips.
ROUND_TRIP = """
import socket, threading, time
srv = socket.create_server(("127.0.0.1", 0))
def echo():
    conn, _ = srv.accept()
    while data := conn.recv(100):
        conn.sendall(data)
threading.Thread(target=echo, daemon=True).start()
c = socket.create_connection(srv.getsockname())
c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
trips = []
for _ in range(5):
    t = time.perf_counter(); c.sendall(b"x"); c.recv(10); trips.append(time.perf_counter() - t)
print(min(trips))
"""


def namespaces() -> str:
    return subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout


def host_loopback_qdisc() -> str:
    done = subprocess.run(["tc", "qdisc", "show", "dev", "lo"], capture_output=True, text=True, check=False)
    return done.stdout


def test_every_round_trip_in_the_namespace_is_delayed_both_ways() -> None:
    before = host_loopback_qdisc()
    with delayed_namespace(DELAY_MS) as ns:
        assert ns.name in namespaces()
        done = subprocess.run(ns.command([sys.executable, "-c", ROUND_TRIP]), capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        seconds = float(done.stdout)
    assert seconds >= 2 * DELAY_MS / 1000, f"{ns.mechanism}: round trip {seconds:.4f} s"
    assert seconds < 2 * DELAY_MS / 1000 + 1.0, f"{ns.mechanism}: round trip {seconds:.4f} s"
    assert ns.name not in namespaces()
    assert host_loopback_qdisc() == before


def test_the_namespace_is_deleted_when_the_body_raises() -> None:
    with pytest.raises(ZeroDivisionError), delayed_namespace(DELAY_MS) as ns:
        _ = 1 / 0
    assert ns.name not in namespaces()


def test_a_negative_delay_is_refused() -> None:
    with pytest.raises(NetDelayError, match="negative"), delayed_namespace(-1.0):
        pass
