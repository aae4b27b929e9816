"""ed25519 signatures on what the wire carries: the digest of a message's tensors, and signed updates.

CURVE (protocol.curve) proves who is at the other end of a link, but not who wrote a message that
a peer relays: the leader of the root's replicas forwards its children's updates to the other
replicas inside its proposal, so each top-level child signs its update with its own ed25519 key
(`<id>.sign`, swarm_contract.keys) and every replica checks it against `<id>.verify`.

    tensors_digest(tensors)   sha256 of the tensors exactly as `codec.encode` frames them: the
                              tensor specs (name, dtype, dense shape, encoding, nnz) of the tensors
                              in name order, then each raw little-endian frame (a sparse tensor's
                              int32 indices, then its values), each with its length
    update_digest(msg)        sha256 over a domain tag, job, type, round, node, the meta without
                              its `sig` (maps with sorted keys, recursively) and `tensors_digest`
    sign_update(msg, signer)  the message with meta `sig`: the 64-byte signature of that digest

Hashing the codec's own frames means a message and its decoded copy give the same digest (decoded
tensors are views of the received frames: no copy is hashed twice), and that any field the codec
sends is covered. Signing the 32-byte digest rather than the message keeps ed25519's work constant.
Verifying costs about what signing does (benchmarks/bench_signing.py).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import replace
from typing import Any, Final

import msgpack
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from swarm_contract.keys import validate_key_text, z85_encode
from swarm_worker.protocol.codec import Message, Payload, encode

__all__ = [
    "DIGEST_BYTES",
    "SIGNATURE_BYTES",
    "generate_signing_pair",
    "sign_update",
    "signer_from_text",
    "tensors_digest",
    "update_digest",
    "verify_key_from_text",
    "verify_update",
]

DIGEST_BYTES: Final = 32
SIGNATURE_BYTES: Final = 64
#: The meta key of an update's signature (protocol.header.OPTIONAL_META).
SIG_KEY: Final = "sig"
_TENSORS_DOMAIN: Final = b"ncrsh-swarm tensors v1\0"
_UPDATE_DOMAIN: Final = b"ncrsh-swarm update v1\0"


def generate_signing_pair() -> tuple[str, str]:
    """A fresh ed25519 pair as (verify, sign) Z85 text: the raw public key and the 32-byte seed."""
    private = Ed25519PrivateKey.generate()
    return z85_encode(private.public_key().public_bytes_raw()), z85_encode(private.private_bytes_raw())


def signer_from_text(text: str, name: str) -> Ed25519PrivateKey:
    """The signing key of a `.sign` entry's text; KeyTextError naming `name` if it is not one."""
    return Ed25519PrivateKey.from_private_bytes(validate_key_text(text, name, kind="an ed25519 key"))


def verify_key_from_text(text: str, name: str) -> Ed25519PublicKey:
    """The verify key of a `.verify` entry's text; KeyTextError naming `name` if it is not one
    (any 32 bytes load: a point that is not on the curve fails every verification instead)."""
    return Ed25519PublicKey.from_public_bytes(validate_key_text(text, name, kind="an ed25519 key"))


def tensors_digest(tensors: Mapping[str, Payload]) -> bytes:
    """sha256 of `tensors` as the codec frames them, in name order (see the module docstring).
    CPU tensors are hashed in place; a GPU tensor is copied to the host, as `encode` does."""
    ordered = {name: tensors[name] for name in sorted(tensors)}
    # The header of a message carrying only these tensors: its fixed fields are constants, its
    # tensor specs are the ones the codec sends, in order.
    frames = encode(Message(type="model", job="-", round=0, node="-", tensors=ordered))
    h = hashlib.sha256(_TENSORS_DOMAIN)
    for frame in frames:
        view = memoryview(frame)
        h.update(view.nbytes.to_bytes(8, "little"))
        h.update(view)
    return h.digest()


def _canonical(value: Any) -> Any:
    """`value` with every map's keys sorted, recursively, so that its msgpack bytes do not depend on
    the order a sender built its maps in (a tuple packs as a list, as the codec sends it)."""
    if isinstance(value, Mapping):
        return {k: _canonical(value[k]) for k in sorted(value)}
    if isinstance(value, list | tuple):
        return [_canonical(v) for v in value]
    return value


def update_digest(msg: Message) -> bytes:
    """sha256 of everything an update says but its own signature (see the module docstring)."""
    meta = {k: v for k, v in msg.meta.items() if k != SIG_KEY}
    fields = [msg.job, msg.type, msg.round, msg.node, _canonical(meta)]
    head = msgpack.packb(fields, use_bin_type=True)
    h = hashlib.sha256(_UPDATE_DOMAIN)
    h.update(len(head).to_bytes(8, "little"))
    h.update(head)
    h.update(tensors_digest(msg.tensors))
    return h.digest()


def sign_update(msg: Message, signer: Ed25519PrivateKey) -> Message:
    """`msg` with meta `sig`: `signer`'s signature of `update_digest(msg)` (any old `sig` replaced)."""
    return replace(msg, meta={**msg.meta, SIG_KEY: signer.sign(update_digest(msg))})


def verify_update(msg: Message, verify_key: Ed25519PublicKey) -> bool:
    """Whether `msg` carries a valid signature by `verify_key` of everything else it says."""
    sig = msg.meta.get(SIG_KEY)
    if not isinstance(sig, bytes) or len(sig) != SIGNATURE_BYTES:
        return False
    try:
        verify_key.verify(sig, update_digest(msg))
    except InvalidSignature:
        return False
    return True
