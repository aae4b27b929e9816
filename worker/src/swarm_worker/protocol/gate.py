"""Who may talk to a node's data port: a ZAP handler that admits only its possible children's
CURVE keys, and a handshake watch that counts the peers that never get that far.

ZeroMQ asks the ZAP handler (RFC 27) of the socket's context about every CURVE handshake on a
socket with a ZAP domain (protocol.curve). `ChildGate` runs pyzmq's ThreadAuthenticator with a
callback that answers from this node's key set: a key of a possible child is admitted, and the
User-Id ZeroMQ then stamps on every message of that connection is that child's node id (the
identity the peer proved, which `transport.receive` compares with the id the message states).
Refusals are counted through `on_refused(reason)` (NodeMetrics.dropped), from the gate's threads:

    unknown-key      a CURVE client whose key is not one of this node's possible children's: a
                     peer outside the tree, or a node of the tree dialling a node not its parent
    unauthenticated  a handshake that failed before any key was proved: a peer without CURVE
                     (plain ZMTP), a client that does not hold the server key it dials with, a
                     malformed or replayed handshake

The last is seen through a socket monitor on the ROUTER (EVENT_HANDSHAKE_FAILED_PROTOCOL and
_NO_DETAIL), read by the gate's own thread. One reason for all of them because the server cannot
tell them apart reliably: a plain peer shows up as a mechanism mismatch when the server reads its
greeting first, and as a peer that hung up mid-handshake (NO_DETAIL) when the peer noticed the
mismatch first (tried: both happen on loopback). No message of a refused peer reaches the node,
so no reply reaches it.

The gate must exist before the ROUTER binds (`bind_router(..., gate=gate)` takes it): a socket
with a ZAP domain and no ZAP handler in its context lets every CURVE client in (libzmq without
ZAP_ENFORCE_DOMAIN). Close it (`close()`) before the context is terminated.

A root replica's consensus port is a second ROUTER behind a second gate that admits the other
replicas instead of the children: `ChildGate(mesh_ctx, keys, on_refused, admitted=keys.replica_peers)`.
A context has one ZAP handler (ZeroMQ binds it at a fixed inproc address), so each gate needs its
own context: the consensus port's sockets live in a context of their own.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from typing import Any

import zmq
from zmq.auth.thread import ThreadAuthenticator
from zmq.utils import z85
from zmq.utils.monitor import recv_monitor_message

from swarm_worker.protocol.curve import ZAP_DOMAIN, NodeKeys

#: Monitor events that mean a handshake failed before the ZAP handler could see a key.
WATCHED_EVENTS = zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL
WATCH_POLL_MS = 100


class _Children:
    """The ZAP callback: admits the keys of `children` (Z85 bytes -> node id), counts the rest."""

    def __init__(self, children: dict[bytes, str], on_refused: Callable[[str], None]) -> None:
        self.children, self.on_refused = children, on_refused

    def callback(self, domain: str, key: bytes) -> bool:
        if domain == ZAP_DOMAIN and key in self.children:
            return True
        self.on_refused("unknown-key")
        return False


class _TreeAuthenticator(ThreadAuthenticator):
    """ThreadAuthenticator whose User-Id for an admitted key is the node id of that key."""

    def __init__(self, ctx: zmq.Context[Any], user_of: dict[bytes, str]) -> None:
        super().__init__(ctx)
        self.user_of = user_of

    def curve_user_id(self, client_public_key: bytes) -> str:
        # Called only after the callback admitted the key, so it is one of user_of's.
        return self.user_of[z85.encode(client_public_key)]


class _HandshakeWatch(threading.Thread):
    """Reads the ROUTER's monitor socket and counts failed handshakes until stopped."""

    def __init__(self, ctx: zmq.Context[Any], endpoint: str, on_refused: Callable[[str], None]) -> None:
        super().__init__(name="swarm-handshake-watch", daemon=True)
        self.ctx, self.endpoint, self.on_refused = ctx, endpoint, on_refused
        self.stopping = threading.Event()

    def run(self) -> None:
        monitor: zmq.Socket[Any] = self.ctx.socket(zmq.PAIR)
        monitor.setsockopt(zmq.LINGER, 0)
        monitor.connect(self.endpoint)
        try:
            while not self.stopping.is_set():
                if not monitor.poll(WATCH_POLL_MS):
                    continue
                event = recv_monitor_message(monitor)
                if event["event"] & WATCHED_EVENTS:
                    self.on_refused("unauthenticated")
        finally:
            monitor.close(0)


class ChildGate:
    """The ZAP handler and the handshake watch of one node's ROUTER (see the module docstring):
    it admits the clients `admitted` names (node id -> CURVE public key, Z85 bytes), by default
    this node's possible children."""

    def __init__(
        self,
        ctx: zmq.Context[Any],
        keys: NodeKeys,
        on_refused: Callable[[str], None],
        *,
        admitted: Mapping[str, bytes] | None = None,
    ) -> None:
        self.ctx, self.keys, self.on_refused = ctx, keys, on_refused
        clients = keys.children if admitted is None else admitted
        user_of = {key: node for node, key in clients.items()}
        self._auth = _TreeAuthenticator(ctx, user_of)
        self._auth.start()
        self._auth.configure_curve_callback(ZAP_DOMAIN, credentials_provider=_Children(user_of, on_refused))
        self._watched: zmq.Socket[Any] | None = None
        self._watch: _HandshakeWatch | None = None

    def secure(self, sock: zmq.Socket[Any]) -> None:
        """Make `sock` (a ROUTER, before `bind`) a CURVE server behind this gate, and watch it."""
        if self._watched is not None:
            raise RuntimeError("a ChildGate guards one socket")
        self.keys.apply_server(sock)
        endpoint = f"inproc://swarm.handshakes.{id(self)}"
        sock.monitor(endpoint, WATCHED_EVENTS)
        self._watched = sock
        self._watch = _HandshakeWatch(self.ctx, endpoint, self.on_refused)
        self._watch.start()

    def close(self) -> None:
        """Stop both threads; before `ctx.term()` (their sockets would keep it waiting)."""
        if self._watched is not None and not self._watched.closed:
            self._watched.disable_monitor()
        if self._watch is not None:
            self._watch.stopping.set()
            self._watch.join()
            self._watch = None
        self._auth.stop()

    def __enter__(self) -> ChildGate:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
