"""Commit certificates (swarm_worker.protocol.certificate) and signed updates (protocol.signing):
digests that survive the codec's round trip, quorum counting over distinct valid replicas, a wire
form refused field by field, and updates whose every field is covered by the signature."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import pytest
import torch
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from swarm_contract.consensus import commit_quorum, replica_ids
from swarm_worker.maths.compression import SparseVector
from swarm_worker.protocol import certificate as certificate_module
from swarm_worker.protocol.certificate import (
    Certificate,
    CommitPoint,
    certificate_from_wire,
    certificate_to_wire,
    model_mismatch,
    sign_point,
    theta_digest,
    verify_certificate,
)
from swarm_worker.protocol.codec import CodecError, Message, Payload, decode, encode
from swarm_worker.protocol.signing import sign_update, tensors_digest, update_digest, verify_update

R = 4
REPLICAS = replica_ids(R)
SIGNERS = {r: Ed25519PrivateKey.generate() for r in REPLICAS}
VERIFY: dict[str, Ed25519PublicKey] = {r: k.public_key() for r, k in SIGNERS.items()}
QUORUM = commit_quorum(R)  # 3
CHILD = Ed25519PrivateKey.generate()


def tensors() -> dict[str, Payload]:
    return {
        "w": torch.tensor([[1.0, -2.0], [0.5, 0.0]]),
        "delta": SparseVector(
            torch.tensor([1, 4, 9], dtype=torch.int32), torch.tensor([0.5, -1.0, 2.0]).half(), 10
        ),
        "b": torch.tensor([3.0, 4.0], dtype=torch.bfloat16),
    }


def roundtrip(msg: Message) -> Message:
    """What a receiver decodes: every frame as its own bytes object."""
    return decode([bytes(frame) for frame in encode(msg)])


def model_message(**meta: Any) -> Message:
    return Message("model", "digits", 8, "root", {"base_round": 7, "final": False, **meta}, tensors())


def update_message() -> Message:
    record = {
        "id": "worker-0",
        "role": "worker",
        "parent": "agg-0",
        "reputation": 0.9,
        "uptime": 1.0,
        "agreement": 1,
        "contribution": -0.25,
        "quarantined": False,
        "lastRound": 7,
    }
    meta = {"samples": 32, "workers": 4, "loss": 0.5, "nodes": [record], "traffic": [["worker-0", 1, 10, 40]]}
    return Message("update", "digits", 7, "agg-0", meta, tensors())


def point(**changes: Any) -> CommitPoint:
    msg = model_message()
    base = CommitPoint(
        job="digits",
        view=2,
        round=8,
        base_round=7,
        inputs=bytes(range(32)),
        model=tensors_digest(msg.tensors),
        theta=theta_digest(torch.arange(10.0), torch.tensor([1, 4, 9])),
    )
    return dataclasses.replace(base, **changes)


def certify(p: CommitPoint, signers: list[str], over: CommitPoint | None = None) -> Certificate:
    target = p if over is None else over
    return Certificate(p, tuple((r, sign_point(target, SIGNERS[r])) for r in signers))


# ---------------------------------------------------------------------------------------------
# Digests


def test_a_message_and_its_decoded_copy_have_the_same_digests() -> None:
    msg = model_message()
    received = roundtrip(msg)
    assert tensors_digest(received.tensors) == tensors_digest(msg.tensors)
    assert update_digest(roundtrip(update_message())) == update_digest(update_message())


def test_the_tensors_digest_is_in_name_order_and_covers_every_byte_and_spec() -> None:
    base = tensors()
    w = torch.tensor([[1.0, -2.0], [0.5, 0.0]])
    indices = torch.tensor([1, 4, 9], dtype=torch.int32)
    values = torch.tensor([0.5, -1.0, 2.0]).half()
    assert tensors_digest(dict(reversed(base.items()))) == tensors_digest(base)
    changed: list[dict[str, Payload]] = [
        {**base, "w": torch.tensor([[1.0, -2.0], [0.5, 1e-30]])},  # a value
        {**base, "w": w.reshape(4)},  # the shape, same bytes
        {**base, "w": w.half()},  # the dtype
        {**base, "delta": SparseVector(torch.tensor([1, 4, 8], dtype=torch.int32), values, 10)},  # an index
        {**base, "delta": SparseVector(indices, values, 11)},  # the dense length
        {**base, "delta": SparseVector(indices, values, 10).to_dense(torch.float16)},  # dense, same values
        {"v": w, "delta": base["delta"], "b": base["b"]},  # a name
    ]
    digests = {tensors_digest(t) for t in changed}
    assert len(digests) == len(changed)
    assert tensors_digest(base) not in digests


def test_theta_digest_does_not_depend_on_the_chunk_size(monkeypatch: pytest.MonkeyPatch) -> None:
    theta = torch.randn(1000)
    support = torch.tensor([0, 5, 999], dtype=torch.int32)
    whole = theta_digest(theta, support)
    monkeypatch.setattr(certificate_module, "THETA_CHUNK", 7)
    assert theta_digest(theta, support.long()) == whole
    nudged = theta.clone()
    nudged[500] = torch.nextafter(nudged[500], torch.tensor(float("inf")))
    assert theta_digest(nudged, support) != whole
    assert theta_digest(theta, None) != theta_digest(theta, torch.empty(0, dtype=torch.int32))
    assert theta_digest(theta, None) != whole


@pytest.mark.parametrize(
    "field",
    ["job", "view", "round", "base_round", "inputs", "model", "theta"],
)
def test_every_field_of_a_point_is_signed(field: str) -> None:
    value = getattr(point(), field)
    other = value + "x" if isinstance(value, str) else value + 1 if isinstance(value, int) else bytes(32)
    assert point(**{field: other}).signed_bytes() != point().signed_bytes()
    assert point(**{field: other}).digest() != point().digest()


# ---------------------------------------------------------------------------------------------
# Certificates


CertCase = Callable[[CommitPoint], Certificate]


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (lambda p: certify(p, ["root", "root-1", "root-2"]), None),
        (lambda p: certify(p, ["root-3", "root-1", "root", "root-2"]), None),
        (lambda p: certify(p, ["root", "root-1"]), "quorum"),
        (lambda p: certify(p, ["root", "root-1", "root-1"]), "duplicate-signer"),
        (lambda p: certify(p, ["root", "root-1", "root-2"], over=point(round=9)), "signature"),
        (lambda p: certify(p, ["root", "root-1", "root-2"], over=point(view=3)), "signature"),
        (lambda p: certify(p, ["root", "root-1", "root-2"], over=point(theta=bytes(32))), "signature"),
        (
            lambda p: Certificate(p, (*certify(p, ["root", "root-1"]).signatures, ("root-9", bytes(64)))),
            "unknown-signer",
        ),
        # Junk around a quorum of good signatures is ignored.
        (
            lambda p: Certificate(
                p,
                (
                    ("root-3", bytes(64)),
                    ("root", sign_point(p, SIGNERS["root"])),
                    ("root", sign_point(p, SIGNERS["root"])),
                    ("root-9", bytes(64)),
                    *certify(p, ["root-1", "root-2"]).signatures,
                ),
            ),
            None,
        ),
        # A signature valid for another replica does not count for the one it names.
        (
            lambda p: Certificate(
                p, (*certify(p, ["root", "root-1"]).signatures, ("root-2", sign_point(p, SIGNERS["root-3"])))
            ),
            "signature",
        ),
    ],
    ids=[
        "quorum",
        "all",
        "too-few",
        "duplicate-counts-once",
        "other-round",
        "other-view",
        "other-theta",
        "unknown-signer",
        "junk-around-a-quorum",
        "misattributed",
    ],
)
def test_a_certificate_needs_a_quorum_of_distinct_valid_replicas(make: CertCase, reason: str | None) -> None:
    assert verify_certificate(make(point()), VERIFY, QUORUM) == reason


def test_one_replica_certifies_alone() -> None:
    cert = certify(point(), ["root"])
    assert verify_certificate(cert, {"root": VERIFY["root"]}, commit_quorum(1)) is None
    assert verify_certificate(Certificate(point(), ()), {"root": VERIFY["root"]}, 1) == "quorum"


def test_a_certificate_rides_a_model_message_through_the_codec() -> None:
    cert = certify(point(), ["root", "root-2", "root-3"])
    received = roundtrip(model_message(cert=certificate_to_wire(cert)))
    assert certificate_from_wire(received.meta["cert"], R) == cert
    assert model_mismatch(cert.point, received) is None
    assert verify_certificate(certificate_from_wire(received.meta["cert"], R), VERIFY, QUORUM) is None


@pytest.mark.parametrize(
    ("msg", "field"),
    [
        (dataclasses.replace(model_message(), job="other"), "job"),
        (dataclasses.replace(model_message(), round=9), "round"),
        (model_message(base_round=6), "base_round"),
        (dataclasses.replace(model_message(), tensors={**tensors(), "w": torch.zeros(2, 2)}), "model"),
    ],
    ids=["job", "round", "base-round", "tensors"],
)
def test_a_point_names_one_model_message(msg: Message, field: str) -> None:
    assert model_mismatch(point(), msg) == field


def _wire(**changes: Any) -> dict[str, Any]:
    wire = certificate_to_wire(certify(point(), ["root", "root-1", "root-2"]))
    wire.update(changes)
    return wire


@pytest.mark.parametrize(
    "obj",
    [
        [],
        {k: v for k, v in _wire().items() if k != "theta"},
        _wire(extra=1),
        _wire(job=""),
        _wire(job=b"digits"),
        _wire(view=True),
        _wire(view=-1),
        _wire(round=1 << 41),
        _wire(base_round=-2),
        _wire(inputs=bytes(31)),
        _wire(model="x" * 32),
        _wire(theta=None),
        _wire(sigs=[]),
        _wire(sigs=[["root", bytes(64)]] * (R + 1)),
        _wire(sigs=[["root-4", bytes(64)]]),
        _wire(sigs=[[["root"], bytes(64)]]),
        _wire(sigs=[["root", bytes(63)]]),
        _wire(sigs=[["root", "x" * 64]]),
        _wire(sigs=[["root", bytes(64), 1]]),
        _wire(sigs={"root": bytes(64)}),
    ],
    ids=[
        "not-a-map",
        "missing-key",
        "extra-key",
        "empty-job",
        "job-bytes",
        "view-bool",
        "view-negative",
        "round-too-large",
        "base-round-below-minus-one",
        "short-inputs",
        "model-str",
        "theta-none",
        "no-signature",
        "more-signatures-than-replicas",
        "replica-beyond-R",
        "unhashable-id",
        "short-signature",
        "signature-str",
        "long-entry",
        "sigs-map",
    ],
)
def test_a_malformed_wire_certificate_is_a_codec_error(obj: Any) -> None:
    with pytest.raises(CodecError) as e:
        certificate_from_wire(obj, R)
    assert e.value.reason == "certificate"


# ---------------------------------------------------------------------------------------------
# Signed updates


def test_a_signed_update_verifies_after_the_codec_round_trip() -> None:
    signed = sign_update(update_message(), CHILD)
    assert len(signed.meta["sig"]) == 64
    assert verify_update(signed, CHILD.public_key())
    assert verify_update(roundtrip(signed), CHILD.public_key())
    assert not verify_update(signed, Ed25519PrivateKey.generate().public_key())
    assert not verify_update(update_message(), CHILD.public_key())  # no signature
    # Resigning replaces the signature and covers the same fields.
    assert sign_update(signed, CHILD).meta["sig"] == signed.meta["sig"]


def test_meta_key_order_does_not_change_the_digest() -> None:
    msg = update_message()
    shuffled = {k: msg.meta[k] for k in reversed(list(msg.meta))}
    shuffled["nodes"] = [dict(reversed(list(r.items()))) for r in msg.meta["nodes"]]
    assert update_digest(dataclasses.replace(msg, meta=shuffled)) == update_digest(msg)


def _meta(msg: Message, **changes: Any) -> Message:
    return dataclasses.replace(msg, meta={**msg.meta, **changes})


@pytest.mark.parametrize(
    "forge",
    [
        lambda m: dataclasses.replace(m, tensors={**m.tensors, "w": torch.tensor([[1.0, -2.0], [0.5, 1.0]])}),
        lambda m: dataclasses.replace(
            m,
            tensors={
                **m.tensors,
                "delta": SparseVector(m.tensors["delta"].indices, torch.tensor([0.5, -1.0, 4.0]).half(), 10),
            },
        ),
        lambda m: _meta(m, samples=33),
        lambda m: _meta(m, loss=0.25),
        lambda m: _meta(m, nodes=[{**m.meta["nodes"][0], "reputation": 1.0}]),
        lambda m: dataclasses.replace(m, round=8),
        lambda m: dataclasses.replace(m, node="agg-1"),
        lambda m: dataclasses.replace(m, job="other"),
        lambda m: _meta(m, sig=bytes(64)),
        lambda m: _meta(m, sig=m.meta["sig"][:63]),
    ],
    ids=[
        "dense-value",
        "sparse-value",
        "samples",
        "loss",
        "node-record",
        "round",
        "node",
        "job",
        "zero-sig",
        "short-sig",
    ],
)
def test_a_forged_update_fails_verification(forge: Callable[[Message], Message]) -> None:
    signed = sign_update(update_message(), CHILD)
    assert not verify_update(forge(signed), CHILD.public_key())


# ---------------------------------------------------------------------------------------------
# The header's optional keys


@pytest.mark.parametrize(
    ("msg", "detail"),
    [
        (_meta(update_message(), sig=bytes(63)), "meta.sig must be 64 bytes"),
        (_meta(update_message(), sig="x" * 64), "meta.sig has type str"),
        (model_message(cert=[1]), "meta.cert has type list"),
        (model_message(sig=bytes(64)), "meta keys"),
        (_meta(update_message(), cert={}), "meta keys"),
    ],
    ids=["short-sig", "sig-str", "cert-list", "sig-on-a-model", "cert-on-an-update"],
)
def test_the_optional_meta_keys_are_checked(msg: Message, detail: str) -> None:
    with pytest.raises(CodecError, match=detail) as e:
        roundtrip(msg)
    assert e.value.reason == "field"
