"""Commit points and commit certificates: what the root's replicas sign, and what every node checks
before it applies a model.

A commit point names one outer step's result: the job, the view it committed in, the round the new
model opens, the round it was computed from, and three sha256 digests (32 bytes each):

    inputs   the leader's proposal's input list (computed by the proposer's code)
    model    `tensors_digest` of the MODEL message's tensors, exactly as the codec frames them
    theta    `theta_digest` of the new θ (fp32) and the common support (int32), if any

A replica's COMMIT vote is its ed25519 signature of `point.signed_bytes()` (a domain tag and the
fields in a fixed order, msgpack); a certificate is the point and at least 2f + 1 such signatures
of distinct replicas (swarm_contract.consensus.commit_quorum). `verify_certificate` counts only
valid signatures of distinct known replicas: an invalid, unknown or repeated one is ignored, so a
certificate with a quorum of good signatures passes whatever else it carries (a relay cannot spoil
a certificate by appending junk), and one without fails with the reason of the first bad signature
it saw, or "quorum" when each was good but too few.

On the wire (a MODEL message's meta `cert`, protocol.header) a certificate is a msgpack map of ints,
strings and bytes; `certificate_from_wire` checks every field and bound before building one, raising
CodecError("certificate", ...). A receiver must then check the point against the message it came
with (`model_mismatch`) and the signatures (`verify_certificate`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import astuple, dataclass
from typing import Any, Final

import msgpack
import torch
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from swarm_contract.consensus import replica_ids
from swarm_worker.protocol.codec import Message
from swarm_worker.protocol.header import MAX_ID_LEN, CodecError
from swarm_worker.protocol.signing import DIGEST_BYTES, SIGNATURE_BYTES, tensors_digest

__all__ = [
    "Certificate",
    "CommitPoint",
    "certificate_from_wire",
    "certificate_to_wire",
    "model_mismatch",
    "quorum_refusal",
    "sign_point",
    "tensors_digest",
    "theta_digest",
    "verify_certificate",
]

_COMMIT_DOMAIN: Final = b"ncrsh-swarm commit v1\0"
_THETA_DOMAIN: Final = b"ncrsh-swarm theta v1\0"
#: θ is hashed from the device this many elements at a time (16 MiB of fp32 on the host at once).
THETA_CHUNK: Final = 1 << 22
#: Bounds of a point's integers on the wire (rounds as in the codec's header).
MAX_ROUND: Final = 1 << 40
_WIRE_KEYS: Final = frozenset({"job", "view", "round", "base_round", "inputs", "model", "theta", "sigs"})


@dataclass(frozen=True)
class CommitPoint:
    job: str
    view: int
    #: The round the new model opens.
    round: int
    #: The round of the model it was computed from (-1: θ_0).
    base_round: int
    inputs: bytes
    model: bytes
    theta: bytes

    def signed_bytes(self) -> bytes:
        """What a COMMIT vote signs: the domain tag, then the fields in declaration order (msgpack)."""
        return _COMMIT_DOMAIN + msgpack.packb(list(astuple(self)), use_bin_type=True)

    def digest(self) -> bytes:
        """sha256 of `signed_bytes`: the point's name in votes and logs."""
        return hashlib.sha256(self.signed_bytes()).digest()


@dataclass(frozen=True)
class Certificate:
    point: CommitPoint
    #: (replica id, 64-byte signature of `point.signed_bytes()`), in the order they were gathered.
    signatures: tuple[tuple[str, bytes], ...]


def theta_digest(theta: torch.Tensor, support: torch.Tensor | None) -> bytes:
    """sha256 of θ's fp32 bytes and, if any, of the support's int32 bytes, each after its length.
    θ may be on a GPU: it comes to the host THETA_CHUNK elements at a time, never whole."""
    h = hashlib.sha256(_THETA_DOMAIN)
    flat = theta.detach().reshape(-1)
    h.update(flat.numel().to_bytes(8, "little"))
    for start in range(0, flat.numel(), THETA_CHUNK):
        chunk = flat[start : start + THETA_CHUNK].to(device="cpu", dtype=torch.float32).contiguous()
        h.update(chunk.numpy().data.cast("B"))
    if support is None:
        h.update(b"\0")
    else:
        indices = support.detach().reshape(-1).to(device="cpu", dtype=torch.int32).contiguous()
        h.update(b"\1" + indices.numel().to_bytes(8, "little"))
        if indices.numel():  # a view with a 0 in its shape cannot be cast
            h.update(indices.numpy().data.cast("B"))
    return h.digest()


def sign_point(point: CommitPoint, signer: Ed25519PrivateKey) -> bytes:
    """This replica's COMMIT signature of `point` (64 bytes)."""
    return signer.sign(point.signed_bytes())


def verify_certificate(
    cert: Certificate, verify_keys: Mapping[str, Ed25519PublicKey], quorum: int
) -> str | None:
    """None when at least `quorum` distinct replicas of `verify_keys` signed `cert.point` validly;
    else the reason (see the module docstring): "unknown-signer", "duplicate-signer", "signature"
    or "quorum"."""
    return quorum_refusal(cert.signatures, cert.point.signed_bytes(), verify_keys, quorum)


def quorum_refusal(
    signatures: Sequence[tuple[str, bytes]],
    message: bytes,
    verify_keys: Mapping[str, Ed25519PublicKey],
    quorum: int,
) -> str | None:
    """None when at least `quorum` distinct signers of `verify_keys` signed `message` validly
    (a certificate's COMMIT signatures, or a lock's PREPARE ones); else the reason of the first bad
    signature, or "quorum". Stops verifying once the quorum is reached."""
    good: set[str] = set()
    seen: set[str] = set()
    problem: str | None = None
    for replica, signature in signatures:
        if len(good) >= quorum:
            break
        key = verify_keys.get(replica)
        if key is None:
            problem = problem or "unknown-signer"
            continue
        if replica in seen:
            problem = problem or "duplicate-signer"
            continue
        seen.add(replica)
        try:
            key.verify(signature, message)
        except InvalidSignature:
            problem = problem or "signature"
            continue
        good.add(replica)
    return None if len(good) >= quorum else problem or "quorum"


def model_mismatch(point: CommitPoint, msg: Message) -> str | None:
    """None when `point` names the MODEL message `msg` (job, round, base round and the digest of
    its tensors); else the first field that differs."""
    if point.job != msg.job:
        return "job"
    if point.round != msg.round:
        return "round"
    if point.base_round != msg.meta.get("base_round"):
        return "base_round"
    if point.model != tensors_digest(msg.tensors):
        return "model"
    return None


def certificate_to_wire(cert: Certificate) -> dict[str, Any]:
    """The certificate as a MODEL message's meta `cert` (msgpack: ints, strings, bytes)."""
    p = cert.point
    return {
        "job": p.job,
        "view": p.view,
        "round": p.round,
        "base_round": p.base_round,
        "inputs": p.inputs,
        "model": p.model,
        "theta": p.theta,
        "sigs": [[replica, signature] for replica, signature in cert.signatures],
    }


def _int(obj: dict[str, Any], key: str, lo: int) -> int:
    value = obj[key]
    if type(value) is not int or not lo <= value <= MAX_ROUND:
        raise CodecError("certificate", f"{key} must be an integer in [{lo}, {MAX_ROUND}]")
    return value


def _bytes(value: Any, size: int, what: str) -> bytes:
    if not isinstance(value, bytes) or len(value) != size:
        raise CodecError("certificate", f"{what} must be {size} bytes")
    return value


def certificate_from_wire(obj: Any, replicas: int) -> Certificate:
    """Inverse of `certificate_to_wire`, for a job of `replicas` root replicas: at most `replicas`
    signatures, each by a replica id, every size exact; CodecError("certificate", ...) otherwise."""
    if not isinstance(obj, dict) or set(obj) != _WIRE_KEYS:
        raise CodecError("certificate", f"must be a map with keys {sorted(_WIRE_KEYS)}")
    job = obj["job"]
    if not isinstance(job, str) or not 0 < len(job) <= MAX_ID_LEN:
        raise CodecError("certificate", f"job must be a string of 1 to {MAX_ID_LEN} characters")
    point = CommitPoint(
        job=job,
        view=_int(obj, "view", 0),
        round=_int(obj, "round", 0),
        base_round=_int(obj, "base_round", -1),
        inputs=_bytes(obj["inputs"], DIGEST_BYTES, "inputs"),
        model=_bytes(obj["model"], DIGEST_BYTES, "model"),
        theta=_bytes(obj["theta"], DIGEST_BYTES, "theta"),
    )
    sigs = obj["sigs"]
    if not isinstance(sigs, list) or not 0 < len(sigs) <= replicas:
        raise CodecError("certificate", f"sigs must be a list of 1 to {replicas} signatures")
    ids = frozenset(replica_ids(replicas))
    signatures: list[tuple[str, bytes]] = []
    for i, entry in enumerate(sigs):
        if not (
            isinstance(entry, list) and len(entry) == 2 and isinstance(entry[0], str) and entry[0] in ids
        ):
            raise CodecError("certificate", f"sigs[{i}] must be [replica id, signature]")
        signatures.append((entry[0], _bytes(entry[1], SIGNATURE_BYTES, f"sigs[{i}]")))
    return Certificate(point=point, signatures=tuple(signatures))


def certificate_json(cert: Certificate) -> dict[str, Any]:
    """The certificate as JSON values (bytes as hex): the form metrics.jsonl keeps, so that anyone
    with the replicas' verify keys can check every committed model of a run afterwards."""
    wire = certificate_to_wire(cert)
    out = {k: v.hex() if isinstance(v, bytes) else v for k, v in wire.items() if k != "sigs"}
    out["sigs"] = [[replica, signature.hex()] for replica, signature in cert.signatures]
    return out


def certificate_from_json(obj: Any, replicas: int) -> Certificate:
    """Inverse of `certificate_json` (CodecError("certificate", ...) on anything malformed)."""
    if not isinstance(obj, dict):
        raise CodecError("certificate", "must be a map")
    try:
        wire = {k: bytes.fromhex(v) if k in ("inputs", "model", "theta") else v for k, v in obj.items()}
        wire["sigs"] = [[r, bytes.fromhex(s)] for r, s in obj.get("sigs", [])]
    except (TypeError, ValueError) as e:
        raise CodecError("certificate", f"not hex: {e}") from e
    return certificate_from_wire(wire, replicas)
