"""ZeroMQ sockets and message I/O for the tree, with bounded queues and sizes.

An aggregator binds a ROUTER; each child connects a DEALER whose identity is its node id, to the
parent's stable address (`<pod>.<service>.<ns>.svc:port` in Kubernetes, 127.0.0.1:port locally).
ZeroMQ reconnects by itself, so a restarted parent is found again; ROUTER_HANDOVER lets a restarted
child take over its identity from the dead connection. Every received message goes through
`codec.decode`; anything that fails is dropped and counted by reason, never raised.

With CURVE (protocol.curve, protocol.gate; the keyword arguments below, off by default) the link is
encrypted and authenticated, and a node's identity is the key it proved, never a routing id it
chose: the ROUTER admits only its possible children's keys, ZeroMQ stamps each message with the
User-Id of its connection's key, and `receive` on such a ROUTER drops (`identity`) any message
whose header names another node. Routing ids are then no names: a child's DEALER draws an
unguessable one (`curve_routing_id`), and the parent sends to a child on the connection where that
child last proved its key (`Routes`). Were routing ids node ids, ROUTER_HANDOVER would let any
member of the tree, with its own key, take a sibling's route by dialling with the sibling's id and
silence it (tried: the sibling's messages stopped arriving). A random id is known only to the
child and, over the encrypted link, its parent, so nobody else can collide with it, and
ROUTER_HANDOVER stays on for a child that reconnects with its own id.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from typing import Any, Protocol

import zmq

from swarm_contract.spec import SwarmSpec
from swarm_worker.protocol.codec import MAX_HEADER_BYTES, CodecError, Message, decode, dense_numel, encode
from swarm_worker.protocol.curve import ClientKeys
from swarm_worker.protocol.gate import ChildGate


class _Counter(Protocol):
    def inc(self, amount: float = 1) -> None: ...


class WireCounters(Protocol):
    """What the transport counts (node.telemetry.NodeMetrics is one): bytes each way and drops by
    reason. A protocol, so the wire layer does not depend on the node layer above it."""

    @property
    def bytes_sent(self) -> _Counter: ...

    @property
    def bytes_received(self) -> _Counter: ...

    def dropped(self, reason: str) -> None: ...


# Queues are bounded in messages; a full queue drops (ROUTER) or blocks briefly (DEALER, see send).
HIGH_WATER_MARK = 64
SEND_TIMEOUT_MS = 2_000
#: Longest wait for one TCP connect to a parent before ZeroMQ tries again (connect_dealer).
CONNECT_TIMEOUT_MS = 2_000

#: Headroom over the largest tensor frame an honest node sends (the dense fp32 model), in multiples.
MODEL_FRAME_MARGIN = 4


def effective_max_message_bytes(spec: SwarmSpec, numel: int) -> int:
    """The per-frame limit (ZMQ_MAXMSGSIZE) of a node's sockets: `network.maxMessageBytes` as given,
    else what a model of `numel` parameters needs, with room to spare. The largest honest frames
    are the dense fp32 model (4 x numel bytes; sparse frames are no bigger) and the header, which the
    codec caps at MAX_HEADER_BYTES: so MODEL_FRAME_MARGIN x 4 x numel + MAX_HEADER_BYTES. A peer
    cannot make a node buffer a 1 GiB frame for a model of a few MB."""
    explicit = spec.network.max_message_bytes
    return explicit if explicit is not None else MODEL_FRAME_MARGIN * 4 * numel + MAX_HEADER_BYTES


def _common(sock: zmq.Socket[Any], max_message_bytes: int) -> None:
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.SNDHWM, HIGH_WATER_MARK)
    sock.setsockopt(zmq.RCVHWM, HIGH_WATER_MARK)
    sock.setsockopt(zmq.MAXMSGSIZE, max_message_bytes)  # per frame: ZeroMQ drops the peer above it
    sock.setsockopt(zmq.SNDTIMEO, SEND_TIMEOUT_MS)


def bind_router(
    ctx: zmq.Context[Any], host: str, port: int, max_message_bytes: int, *, gate: ChildGate | None = None
) -> zmq.Socket[Any]:
    """The children's ROUTER; with `gate` (made on `ctx`) a CURVE server that admits only the
    gate's keys, whose messages `receive` checks against the key each connection proved."""
    sock = ctx.socket(zmq.ROUTER)
    _common(sock, max_message_bytes)
    sock.setsockopt(zmq.ROUTER_HANDOVER, 1)
    if gate is not None:
        gate.secure(sock)
    sock.bind(f"tcp://{host}:{port}")
    return sock  # type: ignore[no-any-return]  # pyzmq types ctx.socket() as Any


def curve_routing_id(node_id: str) -> bytes:
    """A CURVE child's routing id: its node id (for logs and captures) and 64 random bits that
    no other peer can learn, drawn once per socket (its reconnections keep it)."""
    return f"{node_id}#{secrets.token_hex(8)}".encode()


def connect_dealer(
    ctx: zmq.Context[Any],
    identity: str,
    address: str,
    max_message_bytes: int,
    *,
    curve: ClientKeys | None = None,
) -> zmq.Socket[Any]:
    """A DEALER to a parent; with `curve` (NodeKeys.client(parent)) a CURVE client that completes
    its handshake only with the holder of that parent's secret key."""
    sock = ctx.socket(zmq.DEALER)
    _common(sock, max_message_bytes)
    if curve is not None:
        curve.apply(sock)
    sock.setsockopt(zmq.IDENTITY, identity.encode() if curve is None else curve_routing_id(identity))
    sock.setsockopt(zmq.RECONNECT_IVL, 100)
    sock.setsockopt(zmq.RECONNECT_IVL_MAX, 2_000)
    # A replaced parent pod has a new IP under the same DNS name: a connect still aimed at the old
    # one gets no answer and would hang for the kernel's SYN retries (about two minutes). Cut it
    # short, so the next attempt resolves the name again and finds the new pod within seconds.
    sock.setsockopt(zmq.CONNECT_TIMEOUT, CONNECT_TIMEOUT_MS)
    sock.connect(f"tcp://{address}")
    return sock  # type: ignore[no-any-return]  # pyzmq types ctx.socket() as Any


@dataclass(frozen=True)
class Encoded:
    """A message's frames plus its size on the wire and its dense fp32 equivalent."""

    frames: list[bytes | memoryview]
    nbytes: int
    dense_nbytes: int


def encode_message(msg: Message) -> Encoded:
    frames = encode(msg)
    nbytes = sum(len(f) if isinstance(f, bytes) else f.nbytes for f in frames)
    dense_tensors = sum(4 * dense_numel(p) for p in msg.tensors.values())
    return Encoded(frames=frames, nbytes=nbytes, dense_nbytes=len(frames[0]) + dense_tensors)


def send(
    sock: zmq.Socket[Any], encoded: Encoded, metrics: WireCounters, identity: bytes | None = None
) -> bool:
    """Send without blocking the loop for long; a peer that is gone costs a drop, not a hang."""
    frames: list[Any] = [identity, *encoded.frames] if identity is not None else list(encoded.frames)
    try:
        sock.send_multipart(frames, copy=False, flags=zmq.NOBLOCK if identity is not None else 0)
    except (zmq.Again, zmq.ZMQError):
        metrics.dropped("send-failed")
        return False
    metrics.bytes_sent.inc(encoded.nbytes)
    return True


@dataclass(frozen=True)
class Received:
    message: Message
    identity: bytes | None
    nbytes: int
    dense_nbytes: int


def authenticated_user(frame: zmq.Frame) -> str | None:
    """The User-Id ZeroMQ stamped on a received frame (the node id whose key its connection
    proved, protocol.gate), or None for a connection without one (no ZAP handler: not CURVE)."""
    try:
        user = frame.get("User-Id")
    except zmq.ZMQError:
        return None
    return str(user) if user else None


def receive(sock: zmq.Socket[Any], metrics: WireCounters, *, routed: bool, job: str) -> Received | None:
    """One message from `sock` (which must be readable), or None if it was dropped and counted.
    On a CURVE server (a ROUTER behind a ChildGate) the message's sender must be the node whose key
    its connection proved, else it is dropped as `identity`."""
    frames = sock.recv_multipart(copy=False)
    identity: bytes | None = None
    user: str | None = None
    # Read from the socket, not passed in: a secured ROUTER can never be read without the check.
    authenticated = routed and bool(sock.getsockopt(zmq.CURVE_SERVER))
    if routed:
        identity = bytes(frames[0].bytes)
        frames = frames[1:]
        if authenticated:
            user = authenticated_user(frames[0]) if frames else None
            if user is None:  # a CURVE server without a ZAP handler: refuse, never trust
                metrics.dropped("identity")
                return None
    nbytes = sum(len(f.buffer) for f in frames)
    metrics.bytes_received.inc(nbytes)
    try:
        msg = decode(frames)
    except CodecError as e:
        metrics.dropped(e.reason)
        return None
    if msg.job != job:
        metrics.dropped("job")
        return None
    # Plain links: the routing id is the node id. CURVE: the proved key is, the routing id is random.
    if (authenticated and user != msg.node) or (
        not authenticated and identity is not None and identity != msg.node.encode()
    ):
        metrics.dropped("identity")
        return None
    dense = len(frames[0].buffer) + sum(4 * dense_numel(p) for p in msg.tensors.values())
    return Received(message=msg, identity=identity, nbytes=nbytes, dense_nbytes=dense)


@dataclass
class Routes:
    """Where a parent sends to each child: node id -> routing id. Plain links: the node id itself
    (the child's DEALER identity). CURVE (`authenticated`): the routing id of the connection on
    which that child last proved its key, learned from every message `receive` admits; None until
    the child has spoken (a child says HELLO when it hears nothing). At most one entry per child
    of the tree: only admitted keys get one."""

    authenticated: bool
    _by_node: dict[str, bytes] = field(default_factory=dict)

    def learn(self, got: Received) -> None:
        if self.authenticated and got.identity is not None:
            self._by_node[got.message.node] = got.identity

    def of(self, node_id: str) -> bytes | None:
        return self._by_node.get(node_id) if self.authenticated else node_id.encode()
