"""The messages root replicas send each other on their consensus port, and what each signature covers.

A mesh message is one ZeroMQ multipart message: frame 0 a msgpack map (at most MAX_MESH_HEADER
bytes) with `v`, `t` (the type), `job` and the type's fields; then, for the types that carry them,
whole codec messages (protocol.codec frames, decoded and validated by `codec.decode`):

    propose   view, round, claimed (the leader's digest), sizes (frames per input) + the inputs: the
              signed UPDATE messages of the leader's chosen children, as the children sent them
    prepare   view, round, digest, sig      sig: `prepare_bytes` (signed by the sender)
    commit    view, round, digest, sig, point   sig: the point's `signed_bytes` (a certificate vote)
    viewchange  view, round, sig, lock      sig: `view_change_bytes`; lock: a prepare proof or nil
    newview   votes: the 2f + 1 viewchange entries (each with its `from`) that began a view
    cert      point, sigs                   a commit certificate (for a replica that lags)
    fetch     round                         asks for the sender's committed state
    state     round, cert, history, books, elapsed + one codec MODEL message: θ, and the momentum,
              support and previous aggregate when there are any

The sender is the replica whose CURVE key the connection proved (the gate's User-Id): `from` fields
inside newview are the only ids taken from the message, and each is bound by its signature. Every
field is checked here (types, sizes, bounds: at most R of anything per replica set); signatures are
the shell's (consensus.replica). Raises CodecError("mesh", ...) on anything malformed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Final

import msgpack

from swarm_contract.consensus import replica_ids
from swarm_worker.consensus.effects import Proof, ViewVote
from swarm_worker.protocol.certificate import MAX_ROUND, Certificate, CommitPoint, certificate_from_wire
from swarm_worker.protocol.codec import Message, decode
from swarm_worker.protocol.header import CodecError
from swarm_worker.protocol.signing import DIGEST_BYTES, SIGNATURE_BYTES

MESH_VERSION: Final = 1
#: A state transfer's header holds the whole metrics history (a line of ~1 KB per round, each with
#: its certificate): room for about 60,000 rounds. Only replicas with the job's keys get this far.
MAX_MESH_HEADER: Final = 64 << 20
#: Inputs of one proposal: far above any root's children (the tree's branching factor).
MAX_INPUTS: Final = 1024
#: Metrics lines of a state transfer: one per round.
MAX_HISTORY: Final = 1 << 20
MESH_TYPES: Final = ("propose", "prepare", "commit", "viewchange", "newview", "cert", "fetch", "state")
_PREPARE_DOMAIN: Final = b"ncrsh-swarm prepare v1\0"
_VIEW_CHANGE_DOMAIN: Final = b"ncrsh-swarm view-change v1\0"


def prepare_bytes(job: str, view: int, round_index: int, digest: bytes) -> bytes:
    return _PREPARE_DOMAIN + msgpack.packb([job, view, round_index, digest], use_bin_type=True)


def view_change_bytes(job: str, view: int, round_index: int, lock: Proof | None) -> bytes:
    held = [lock.view, lock.digest] if lock is not None else [-1, b""]
    return _VIEW_CHANGE_DOMAIN + msgpack.packb([job, view, round_index, *held], use_bin_type=True)


@dataclass(frozen=True)
class Mesh:
    """A decoded mesh message: its type, its header fields, and the codec messages it carried."""

    type: str
    fields: dict[str, Any]
    messages: list[Message] = field(default_factory=list)


def _bad(detail: str) -> CodecError:
    return CodecError("mesh", detail)


def _int(fields: dict[str, Any], key: str, lo: int = 0) -> int:
    value = fields.get(key)
    if type(value) is not int or not lo <= value <= MAX_ROUND:
        raise _bad(f"{key} must be an integer in [{lo}, {MAX_ROUND}]")
    return value


def _bytes(value: Any, size: int, what: str) -> bytes:
    if not isinstance(value, bytes) or len(value) != size:
        raise _bad(f"{what} must be {size} bytes")
    return value


def _point_wire(point: CommitPoint) -> dict[str, Any]:
    return {
        "job": point.job, "view": point.view, "round": point.round, "base_round": point.base_round,
        "inputs": point.inputs, "model": point.model, "theta": point.theta,
    }  # fmt: skip


def _point(obj: Any, replicas: int) -> CommitPoint:
    """A point without signatures, through the certificate's own checks (one placeholder sig)."""
    if not isinstance(obj, dict):
        raise _bad("point must be a map")
    placeholder = {**obj, "sigs": [[replica_ids(replicas)[0], bytes(SIGNATURE_BYTES)]]}
    return certificate_from_wire(placeholder, replicas).point


def _proof_wire(proof: Proof) -> dict[str, Any]:
    return {
        "view": proof.view, "round": proof.round, "digest": proof.digest,
        "sigs": [[r, s] for r, s in proof.signatures],
    }  # fmt: skip


def _proof(obj: Any, phase: str, replicas: int) -> Proof:
    if not isinstance(obj, dict) or set(obj) != {"view", "round", "digest", "sigs"}:
        raise _bad("a proof is a map of view, round, digest, sigs")
    sigs, ids = obj["sigs"], set(replica_ids(replicas))
    if not isinstance(sigs, list) or not 0 < len(sigs) <= replicas:
        raise _bad(f"a proof holds 1 to {replicas} signatures")
    signatures = []
    for entry in sigs:
        if not (isinstance(entry, list) and len(entry) == 2 and entry[0] in ids):
            raise _bad("a proof's signature is [replica id, signature]")
        signatures.append((str(entry[0]), _bytes(entry[1], SIGNATURE_BYTES, "signature")))
    digest = _bytes(obj["digest"], DIGEST_BYTES, "digest")
    return Proof(phase, _int(obj, "view"), _int(obj, "round"), digest, tuple(signatures))


def _view_vote(obj: Any, sender: str, replicas: int) -> ViewVote:
    if not isinstance(obj, dict):
        raise _bad("a view change is a map")
    lock = obj.get("lock")
    return ViewVote(
        replica=sender,
        view=_int(obj, "view", 1),
        round=_int(obj, "round"),
        lock=None if lock is None else _proof(lock, "prepare", replicas),
        sig=_bytes(obj.get("sig"), SIGNATURE_BYTES, "sig"),
    )


def view_vote_wire(vote: ViewVote) -> dict[str, Any]:
    lock = None if vote.lock is None else _proof_wire(vote.lock)
    return {"from": vote.replica, "view": vote.view, "round": vote.round, "sig": vote.sig, "lock": lock}


def encode_mesh(
    job: str, msg_type: str, fields: dict[str, Any], nested: list[list[Any]] | None = None
) -> list[Any]:
    """Frames of a mesh message: the header, then each nested codec message's frames in order."""
    header = {"v": MESH_VERSION, "t": msg_type, "job": job, **fields}
    if nested:
        header["sizes"] = [len(frames) for frames in nested]
    return [msgpack.packb(header, use_bin_type=True), *(f for frames in nested or [] for f in frames)]


def commit_fields(view: int, round_index: int, point: CommitPoint, sig: bytes) -> dict[str, Any]:
    digest = point.digest()
    return {"view": view, "round": round_index, "digest": digest, "sig": sig, "point": _point_wire(point)}


def certificate_fields(cert: Certificate) -> dict[str, Any]:
    return {"point": _point_wire(cert.point), "sigs": [[r, s] for r, s in cert.signatures]}


def decode_mesh(frames: list[Any], job: str, replicas: int) -> Mesh:
    """Frames -> Mesh, every field checked (CodecError("mesh", ...) otherwise)."""
    if not frames:
        raise _bad("empty message")
    head = frames[0]
    raw = head.bytes if hasattr(head, "bytes") else bytes(head)
    if len(raw) > MAX_MESH_HEADER:
        raise _bad(f"header of {len(raw)} bytes")
    try:
        header = msgpack.unpackb(raw, raw=False, strict_map_key=True, max_bin_len=MAX_MESH_HEADER)
    except (ValueError, TypeError, msgpack.UnpackException) as e:
        raise _bad(f"header is not msgpack: {type(e).__name__}") from e
    if not isinstance(header, dict) or header.get("v") != MESH_VERSION or header.get("job") != job:
        raise _bad("not a mesh header of this job and version")
    msg_type = header.get("t")
    if msg_type not in MESH_TYPES:
        raise _bad(f"unknown type {msg_type!r}")
    messages = _nested(header, frames[1:])
    checked = _check_fields(msg_type, header, replicas)
    if msg_type == "propose" and not messages:
        raise _bad("a proposal without inputs")
    if msg_type == "state" and len(messages) != 1:
        raise _bad("a state carries exactly one tensor message")
    return Mesh(msg_type, checked, messages)


def _nested(header: dict[str, Any], frames: list[Any]) -> list[Message]:
    sizes = header.get("sizes", [])
    if not isinstance(sizes, list) or len(sizes) > MAX_INPUTS:
        raise _bad(f"sizes must be a list of at most {MAX_INPUTS} frame counts")
    if not all(type(s) is int and s >= 1 for s in sizes):
        raise _bad(f"sizes must be a list of at most {MAX_INPUTS} positive frame counts")
    if sum(sizes) != len(frames):
        raise _bad(f"{len(frames)} nested frames, sizes say {sum(sizes)}")
    out, start = [], 0
    for size in sizes:
        out.append(decode(frames[start : start + size]))  # CodecError with the codec's own reason
        start += size
    return out


def _check_fields(msg_type: str, header: dict[str, Any], replicas: int) -> dict[str, Any]:
    """The type's fields, typed and bounded."""
    out: dict[str, Any] = {}
    if msg_type in ("propose", "prepare", "commit"):
        out["view"], out["round"] = _int(header, "view"), _int(header, "round")
    if msg_type == "propose":
        out["claimed"] = _bytes(header.get("claimed"), DIGEST_BYTES, "claimed")
    if msg_type in ("prepare", "commit"):
        out["digest"] = _bytes(header.get("digest"), DIGEST_BYTES, "digest")
        out["sig"] = _bytes(header.get("sig"), SIGNATURE_BYTES, "sig")
    if msg_type == "commit":
        out["point"] = _point(header.get("point"), replicas)
        if out["point"].digest() != out["digest"]:
            raise _bad("a commit's point does not have its digest")
    if msg_type == "viewchange":
        out["vote"] = header  # bound to the sender by the shell: `view_vote(mesh, sender)`
        _view_vote(header, replica_ids(replicas)[0], replicas)
    if msg_type == "newview":
        votes = header.get("votes")
        if not isinstance(votes, list) or not 0 < len(votes) <= replicas:
            raise _bad(f"a new view carries 1 to {replicas} votes")
        ids = set(replica_ids(replicas))
        parsed = []
        for v in votes:
            if not isinstance(v, dict) or v.get("from") not in ids:
                raise _bad("a new view's vote names a replica")
            parsed.append(_view_vote(v, str(v["from"]), replicas))
        out["votes"] = tuple(parsed)
    if msg_type in ("cert", "state"):
        cert_obj = header.get("cert") if msg_type == "state" else header
        if not isinstance(cert_obj, dict):
            raise _bad("a certificate is a map")
        out["cert"] = _certificate(cert_obj, replicas)
    if msg_type in ("fetch", "state"):
        out["round"] = _int(header, "round")
    if msg_type == "state":
        history, books, elapsed = header.get("history"), header.get("books"), header.get("elapsed")
        if not isinstance(history, list) or len(history) > MAX_HISTORY:
            raise _bad("history must be a list")
        if not all(isinstance(h, dict) for h in history):
            raise _bad("history must be a list of maps")
        if not isinstance(books, dict) or not isinstance(elapsed, (int, float)) or not 0 <= elapsed < 1e12:
            raise _bad("books must be a map and elapsed a time")
        out.update(history=history, books=books, elapsed=float(elapsed))
    return out


def _certificate(obj: dict[str, Any], replicas: int) -> Certificate:
    point = obj.get("point")
    if not isinstance(point, dict):
        raise _bad("a certificate's point is a map")
    return certificate_from_wire({**point, "sigs": obj.get("sigs")}, replicas)


def view_vote(mesh: Mesh, sender: str, replicas: int) -> ViewVote:
    """A viewchange message's vote, as `sender` (the proved replica) cast it."""
    return _view_vote(mesh.fields["vote"], sender, replicas)
