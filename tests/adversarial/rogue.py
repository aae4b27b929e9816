"""A rogue peer of our own making: a ZeroMQ DEALER with a routing id of our choice, connected to a
node's data port on loopback, that sends hand-crafted messages through the real codec
(`swarm_worker.protocol.codec.encode`). Every message it builds passes the codec's checks (finite
values, valid frames, record fields of the right types), so it reaches the checks behind the codec:
forged and made-up records, huge finite values, wrong dtypes, replays of old rounds.

    with Rogue("127.0.0.1:5555", "agg-0", job="digits") as rogue:
        rogue.update(0, huge_sparse(NUMEL), nodes=[record("root", 0, quarantined=True)])
        reply = rogue.expect("model")          # MODEL r+1 (or STOP) from the node, with a timeout

Without `curve` the rogue speaks plain ZMTP, so it reaches only a node that runs without CURVE (the
tests then give it a slot of the tree no other process uses). With `curve` (protocol.curve.ClientKeys:
a stolen node's pair, or a pair of its own outside the tree) it shows what CURVE refuses.
"""

from __future__ import annotations

import ipaddress
import random
from collections.abc import Iterable, Sequence
from typing import Any

import torch
import zmq

from swarm_worker.maths.compression import SparseVector
from swarm_worker.protocol.codec import Message, Payload, decode, encode
from swarm_worker.protocol.curve import ClientKeys
from swarm_worker.protocol.transport import curve_routing_id

#: Finite in float32 (whose largest value is 3.4028e38): the codec's NaN/Inf check lets it through.
HUGE = 3e38
#: The largest finite float16.
HUGE_FP16 = 65504.0


def record(
    node_id: str,
    last_round: int,
    *,
    role: str = "worker",
    parent: str = "agg-0",
    quarantined: bool = False,
    **fields: Any,
) -> dict[str, Any]:
    """A NodeRecord mapping in its wire form (swarm_contract.records): well typed, so the codec takes
    it; `fields` override the scores (e.g. reputation=7.0 for one out of bounds)."""
    base: dict[str, Any] = {
        "id": node_id,
        "role": role,
        "parent": parent,
        "reputation": 0.2 if quarantined else 1.0,
        "uptime": 1.0,
        "agreement": 1.0,
        "contribution": 1.0,
        "quarantined": quarantined,
        "lastRound": last_round,
    }
    return {**base, **fields}


def random_sparse(numel: int, seed: int, nnz: int = 16, dtype: torch.dtype = torch.float16) -> SparseVector:
    """An honest-looking update: `nnz` positive values in [0.25, 1) at random indices. Two of them
    (other seeds) are far from parallel, so reputation's duplicate check never flags them."""
    gen = random.Random(seed)
    indices = sorted(gen.sample(range(numel), nnz))
    values = [0.25 + 0.75 * gen.random() for _ in range(nnz)]
    return SparseVector(torch.tensor(indices, dtype=torch.int32), torch.tensor(values).to(dtype), numel)


def huge_sparse(numel: int, value: float = HUGE, dtype: torch.dtype = torch.float32) -> SparseVector:
    """Three coordinates at ±`value` (finite in `dtype`)."""
    values = torch.tensor([value, -value, value], dtype=torch.float32).to(dtype)
    assert bool(torch.isfinite(values).all()), f"{value} is not finite in {dtype}"
    return SparseVector(torch.tensor([0, numel // 2, numel - 1], dtype=torch.int32), values, numel)


def huge_dense(numel: int, value: float = HUGE) -> torch.Tensor:
    out = torch.zeros(numel, dtype=torch.float32)
    out[::97] = value
    return out


def dense_of(payload: Payload) -> torch.Tensor:
    """A payload as a (d,) fp32 vector."""
    return payload.to_dense() if isinstance(payload, SparseVector) else payload.flatten().float()


class Rogue:
    """One peer on a node's data port, speaking as `node_id` (and, unless `identity` says otherwise,
    with the routing id a node of that id draws: the id itself, or with `curve` a random one, as
    transport.connect_dealer does). Only loopback addresses: this tool never reaches a real cluster."""

    def __init__(
        self,
        address: str,
        node_id: str,
        job: str,
        *,
        identity: str | None = None,
        curve: ClientKeys | None = None,
    ) -> None:
        host, _, port = address.rpartition(":")
        if host != "localhost" and not ipaddress.ip_address(host).is_loopback:
            raise ValueError(f"{address}: the rogue peer only speaks on loopback")
        self.node_id, self.job = node_id, job
        self.ctx: zmq.Context[Any] = zmq.Context()
        self.sock: zmq.Socket[Any] = self.ctx.socket(zmq.DEALER)
        if identity is not None:
            routing_id = identity.encode()
        else:
            routing_id = curve_routing_id(node_id) if curve is not None else node_id.encode()
        self.sock.setsockopt(zmq.IDENTITY, routing_id)
        self.sock.setsockopt(zmq.LINGER, 0)
        if curve is not None:
            curve.apply(self.sock)
        self.sock.connect(f"tcp://{host}:{int(port)}")
        #: Messages sent, in all (replays included).
        self.sent = 0

    def __enter__(self) -> Rogue:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.sock.close(0)
        self.ctx.term()

    # -- sending --------------------------------------------------------------------------------------

    def send_frames(self, frames: Sequence[bytes]) -> None:
        """Raw frames: a replay of a message captured earlier, sent as it was."""
        self.sock.send_multipart(list(frames))
        self.sent += 1

    def send(self, msg: Message) -> list[bytes]:
        """Encode with the real codec and send; returns the frames, for a replay later."""
        frames = [bytes(f) for f in encode(msg)]
        self.send_frames(frames)
        return frames

    def message(
        self,
        round_index: int,
        delta: Payload,
        *,
        samples: int = 32,
        workers: int = 1,
        loss: float = 0.5,
        nodes: Iterable[dict[str, Any]] = (),
        traffic: Iterable[list[Any]] = (),
    ) -> Message:
        """An UPDATE as this peer, with whatever records and counters the test wants to forge."""
        meta = {
            "samples": samples,
            "workers": workers,
            "loss": loss,
            "nodes": list(nodes),
            "traffic": list(traffic),
        }
        return Message("update", self.job, round_index, self.node_id, meta, {"delta": delta})

    def update(self, round_index: int, delta: Payload, **meta: Any) -> list[bytes]:
        """Send an UPDATE (see `message`); returns its frames."""
        return self.send(self.message(round_index, delta, **meta))

    def hello(self, round_index: int, *, answered: bool = False) -> None:
        meta = {"role": "worker", "answered": answered}
        self.send(Message("hello", self.job, round_index, self.node_id, meta, {}))

    # -- receiving ------------------------------------------------------------------------------------

    def receive(self, timeout: float) -> Message | None:
        """The next message from the node (decoded by the real codec), or None after `timeout` s."""
        if not self.sock.poll(int(timeout * 1000)):
            return None
        return decode(self.sock.recv_multipart())

    def expect(self, *types: str, timeout: float = 60) -> Message:
        """The next message of one of `types` (e.g. "model", "stop"); AssertionError after `timeout`."""
        msg = self.receive(timeout)
        assert msg is not None, f"{self.node_id}: no {'/'.join(types)} within {timeout:g} s"
        assert msg.type in types, f"{self.node_id}: got {msg.type} (round {msg.round}), not {types}"
        return msg
