"""The header's metadata: what each message type carries besides its tensors, and the checks
`codec.decode` runs on it. Every key of META_SCHEMA is required and no other is allowed but the few
of OPTIONAL_META, so a peer cannot smuggle unbounded data through the header; an update's `nodes`
are swarm_contract.records.NodeRecord mappings whose field names and types (not bounds: those are
the reader's) are checked here.

The optional keys are those of the root's replicas (swarm_worker.consensus), absent with one
replica: a model's `cert` (its commit certificate, a map checked in full by
`protocol.certificate.certificate_from_wire`, which knows the replica count: here only its type)
and an update's `sig` (the sender's ed25519 signature, protocol.signing: exactly 64 bytes).
"""

from __future__ import annotations

import math
from typing import Any, Final, Literal, get_args, get_origin

from pydantic import BaseModel

from swarm_contract.records import MAX_ID_LENGTH, NodeRecord

MAX_ID_LEN: Final = MAX_ID_LENGTH  # a DNS name


class CodecError(ValueError):
    """A message failed validation; `reason` is a short, countable label."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason


# Per-type metadata: key -> allowed Python types. Missing keys are errors; extra keys are refused
# so that a peer cannot smuggle unbounded data through the header.
META_SCHEMA: Final[dict[str, dict[str, tuple[type, ...]]]] = {
    "hello": {"role": (str,), "answered": (bool,)},
    "model": {"base_round": (int,), "final": (bool,)},
    "update": {
        "samples": (int,),
        "workers": (int,),
        "loss": (float, int),
        "nodes": (list,),
        "traffic": (list,),
    },
    "stop": {"reason": (str,)},
}
#: Per-type metadata a message may carry or leave out (see the module docstring).
OPTIONAL_META: Final[dict[str, dict[str, tuple[type, ...]]]] = {
    "hello": {},
    "model": {"cert": (dict,)},
    "update": {"sig": (bytes,)},
    "stop": {},
}
#: An ed25519 signature (protocol.signing.SIGNATURE_BYTES).
SIG_BYTES: Final = 64


# Python type of a model's scalar field -> the msgpack types its value may arrive as: a float may
# arrive as an int (a peer may send 1 for 1.0).
_WIRE_TYPES: Final[dict[Any, tuple[type, ...]]] = {
    str: (str,),
    int: (int,),
    bool: (bool,),
    float: (float, int),
}


def wire_types(model: type[BaseModel]) -> dict[str, tuple[type, ...]]:
    """Wire key -> the msgpack types its value may have, for a model of scalar fields (a Literal is
    checked as the type of its first value, not against the values: bounds and choices are the
    reader's to check). Computed once, so checking a record stays a walk over a dict."""
    out: dict[str, tuple[type, ...]] = {}
    for name, info in model.model_fields.items():
        annotation = info.annotation
        if get_origin(annotation) is Literal:
            annotation = type(get_args(annotation)[0])
        types = _WIRE_TYPES.get(annotation)
        if types is None:
            raise TypeError(f"{model.__name__}.{name}: {annotation} has no wire type")
        out[info.alias or name] = types
    return out


# Each entry of an update's `nodes`: a measured record of one node of the sender's subtree.
NODE_RECORD_SCHEMA: Final = wire_types(NodeRecord)
MAX_NODE_RECORDS: Final = 4096
# Each entry of an update's `traffic`: [node id, incarnation, bytes received, dense-equivalent bytes
# received], cumulative since that process started (its incarnation), so lost reports lose nothing.
TRAFFIC_RECORD_LEN: Final = 4


def check_str(value: Any, what: str) -> str:
    if not isinstance(value, str) or not 0 < len(value) <= MAX_ID_LEN:
        raise CodecError("field", f"{what} must be a non-empty string of at most {MAX_ID_LEN} characters")
    return value


def check_int(value: Any, what: str, lo: int, hi: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
        raise CodecError("field", f"{what} must be an integer in [{lo}, {hi}]")
    return value


def check_fields(
    obj: Any,
    schema: dict[str, tuple[type, ...]],
    what: str,
    optional: dict[str, tuple[type, ...]] | None = None,
) -> dict[str, Any]:
    """`obj`, a map with every key of `schema`, any of `optional` and no other, each of its type."""
    if not isinstance(obj, dict):
        raise CodecError("field", f"{what} must be a map")
    if set(obj) != set(schema) and not (optional and set(schema) <= set(obj) <= {*schema, *optional}):
        raise CodecError("field", f"{what} keys {sorted(map(str, obj))} != {sorted(schema)}")
    for key, types in (schema | optional if optional else schema).items():
        if key not in obj:
            continue
        value = obj[key]
        ok = isinstance(value, types) and not (isinstance(value, bool) and bool not in types)
        if not ok:
            raise CodecError("field", f"{what}.{key} has type {type(value).__name__}")
        if isinstance(value, float) and not math.isfinite(value):
            raise CodecError("field", f"{what}.{key} is not finite")
        if isinstance(value, str) and len(value) > MAX_ID_LEN:
            raise CodecError("field", f"{what}.{key} is too long")
    return obj


def check_meta(msg_type: str, raw_meta: Any) -> dict[str, Any]:
    meta = check_fields(raw_meta, META_SCHEMA[msg_type], "meta", OPTIONAL_META[msg_type])
    if "sig" in meta and len(meta["sig"]) != SIG_BYTES:
        raise CodecError("field", f"meta.sig must be {SIG_BYTES} bytes")
    if msg_type == "update":
        check_int(meta["samples"], "meta.samples", 0, 1 << 40)
        check_int(meta["workers"], "meta.workers", 0, 1 << 20)
        if len(meta["nodes"]) > MAX_NODE_RECORDS:
            raise CodecError("field", "meta.nodes has too many records")
        for i, record in enumerate(meta["nodes"]):
            check_fields(record, NODE_RECORD_SCHEMA, f"meta.nodes[{i}]")
        if len(meta["traffic"]) > MAX_NODE_RECORDS:
            raise CodecError("field", "meta.traffic has too many records")
        for i, entry in enumerate(meta["traffic"]):
            if not isinstance(entry, list) or len(entry) != TRAFFIC_RECORD_LEN:
                raise CodecError("field", f"meta.traffic[{i}] must be [id, incarnation, bytes, dense bytes]")
            check_str(entry[0], f"meta.traffic[{i}] id")
            for j in (1, 2, 3):
                check_int(entry[j], f"meta.traffic[{i}][{j}]", 0, 1 << 62)
    if msg_type == "model":
        check_int(meta["base_round"], "meta.base_round", -1, 1 << 40)
    return meta
