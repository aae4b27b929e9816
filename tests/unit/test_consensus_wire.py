"""consensus.wire: every mesh message round-trips, and anything malformed a lying replica could send
is a CodecError("mesh" or the codec's reason), never an exception of another kind."""

from __future__ import annotations

from typing import Any

import msgpack
import pytest
import torch

from swarm_worker.consensus.effects import Proof, ViewVote
from swarm_worker.consensus.wire import (
    certificate_fields,
    commit_fields,
    decode_mesh,
    encode_mesh,
    view_vote,
    view_vote_wire,
)
from swarm_worker.maths.compression import SparseVector
from swarm_worker.protocol.certificate import Certificate, CommitPoint
from swarm_worker.protocol.codec import Message, encode
from swarm_worker.protocol.header import CodecError

JOB = "mesh"
R = 4
POINT = CommitPoint(JOB, 2, 8, 7, b"i" * 32, b"m" * 32, b"t" * 32)
VOTE = {"from": "root", "view": 1, "round": 7, "sig": b"s" * 64, "lock": None}


def update(node: str) -> Message:
    delta = SparseVector(torch.tensor([1, 5], dtype=torch.int32), torch.tensor([0.5, -1.0]), 10)
    meta = {"samples": 4, "workers": 1, "loss": 0.1, "nodes": [], "traffic": [], "sig": b"s" * 64}
    return Message("update", JOB, 7, node, meta, {"delta": delta})


def roundtrip(msg_type: str, fields: dict[str, Any], nested: list[list[Any]] | None = None) -> Any:
    frames = [bytes(f) if not isinstance(f, bytes) else f for f in encode_mesh(JOB, msg_type, fields, nested)]
    return decode_mesh(frames, JOB, R)


def test_a_proposal_carries_its_inputs_as_codec_messages() -> None:
    inputs = [update("worker-0"), update("worker-1")]
    got = roundtrip("propose", {"view": 2, "round": 7, "claimed": b"c" * 32}, [encode(m) for m in inputs])
    assert got.type == "propose"
    assert [m.node for m in got.messages] == ["worker-0", "worker-1"]
    assert got.messages[0].meta["sig"] == b"s" * 64


def test_votes_view_changes_and_certificates_round_trip() -> None:
    got = roundtrip("commit", commit_fields(2, 7, POINT, b"x" * 64))
    assert got.fields["point"] == POINT
    assert got.fields["digest"] == POINT.digest()
    lock = Proof("prepare", 1, 7, b"d" * 32, (("root", b"a" * 64), ("root-2", b"b" * 64)))
    vote = ViewVote("root-3", 2, 7, lock, b"v" * 64)
    got = roundtrip("viewchange", view_vote_wire(vote))
    assert view_vote(got, "root-3", R) == vote
    got = roundtrip("newview", {"votes": [view_vote_wire(vote)]})
    assert got.fields["votes"] == (vote,)
    cert = Certificate(POINT, (("root", b"a" * 64), ("root-1", b"b" * 64), ("root-2", b"c" * 64)))
    assert roundtrip("cert", certificate_fields(cert)).fields["cert"] == cert


@pytest.mark.parametrize(
    ("msg_type", "fields"),
    [
        ("prepare", {"view": 1, "round": 7, "digest": b"d" * 31, "sig": b"s" * 64}),
        ("prepare", {"view": -1, "round": 7, "digest": b"d" * 32, "sig": b"s" * 64}),
        ("prepare", {"view": 1, "round": 2**41, "digest": b"d" * 32, "sig": b"s" * 64}),
        ("prepare", {"view": 1, "round": 7, "digest": b"d" * 32, "sig": "s" * 64}),
        ("commit", {**commit_fields(2, 7, POINT, b"x" * 64), "digest": b"z" * 32}),
        ("commit", {**commit_fields(2, 7, POINT, b"x" * 64), "point": {"job": JOB}}),
        ("viewchange", {"view": 0, "round": 7, "sig": b"s" * 64, "lock": None}),
        ("viewchange", {"view": 1, "round": 7, "sig": b"s" * 64, "lock": {"view": 1}}),
        ("newview", {"votes": []}),
        (
            "newview",
            {"votes": [{"from": "mallory", "view": 1, "round": 7, "sig": b"s" * 64, "lock": None}] * 2},
        ),
        ("newview", {"votes": [{"from": "root", "view": 1, "round": 7, "sig": b"s" * 64, "lock": None}] * 5}),
        ("cert", {"point": {}, "sigs": []}),
        ("fetch", {"round": "7"}),
        ("state", {"round": 7, "cert": None, "history": [], "books": {}, "elapsed": 1.0}),
        ("propose", {"view": 1, "round": 7, "claimed": b"c" * 32}),
        ("gossip", {}),
    ],
)
def test_malformed_fields_are_codec_errors(msg_type: str, fields: dict[str, Any]) -> None:
    with pytest.raises(CodecError):
        roundtrip(msg_type, fields)


def test_malformed_frames_are_codec_errors() -> None:
    good = encode_mesh(JOB, "fetch", {"round": 1})
    cases: list[list[Any]] = [
        [],
        [b"\xc1"],  # not msgpack
        [msgpack.packb([1, 2])],
        [msgpack.packb({"v": 1, "t": "fetch", "job": "other", "round": 1})],
        [*good, b"an extra frame"],
        [
            msgpack.packb(
                {
                    "v": 1,
                    "t": "propose",
                    "job": JOB,
                    "view": 1,
                    "round": 1,
                    "claimed": b"c" * 32,
                    "sizes": [2],
                }
            ),
            b"\x80",
            b"junk",
        ],
        [msgpack.packb({"v": 1, "t": "fetch", "job": JOB, "round": 1, "sizes": [0]})],
    ]
    for frames in cases:
        with pytest.raises(CodecError):
            decode_mesh(frames, JOB, R)
