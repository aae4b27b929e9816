"""The wire format: `encode` and `decode` are inverse functions; nothing else touches raw frames.

A message is one ZeroMQ multipart message (after the ROUTER's identity frame, when there is one):

    frame 0      header: msgpack map (use_bin_type=True), at most MAX_HEADER_BYTES
                   v        int    protocol version, must equal PROTOCOL_VERSION
                   type     str    "hello" | "model" | "update" | "stop"
                   job      str    the SwarmTraining's name (a message for another job is refused)
                   round    int    round number, >= 0 (hello: the round of the model the sender holds)
                   node     str    sender's node id
                   meta     map    per-type scalars, checked against META_SCHEMA; an update's
                                   `nodes` are swarm_contract.records.NodeRecord mappings, whose
                                   fields and types (not bounds) are checked here. Optional, with
                                   root replicas only (header.OPTIONAL_META): a model's `cert`
                                   (map: its commit certificate, checked by protocol.certificate)
                                   and an update's `sig` (64 bytes: ed25519, protocol.signing)
                   tensors  list   one map per tensor, in frame order:
                              name   str
                              dtype  str    "float32" | "float16" | "bfloat16" (values), or
                                            "int32" (a dense index list)
                              shape  [int]  dense shape, product <= MAX_NUMEL
                              enc    str    "dense": 1 frame of prod(shape) values
                                            "sparse": 2 frames, int32 indices (strictly ascending,
                                                      inside [0, prod(shape))) then nnz values
                              nnz    int    sparse only
                              frame  int    index of the tensor's first frame
    frame 1..    raw little-endian tensor bytes; sent zero-copy (pyzmq copies frames below its
                 copy threshold, 64 KiB by default, which is cheaper for small ones)

`decode` validates everything before building a tensor (frame count, dtype whitelist, shapes,
`nbytes == numel * itemsize`, index bounds and order, finite values, sizes) and raises `CodecError`
whose `reason` is a short label the receiver counts. Tensors come back as read-only views of the
received frames (`torch.frombuffer`): copy before writing. Never pickle.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import msgpack
import torch

from swarm_worker.maths.compression import SparseVector
from swarm_worker.protocol.frames import check_indices, check_values, frame_buffer, frame_tensor
from swarm_worker.protocol.header import (
    MAX_ID_LEN,
    MAX_NODE_RECORDS,
    META_SCHEMA,
    NODE_RECORD_SCHEMA,
    CodecError,
    check_int,
    check_meta,
    check_str,
)

__all__ = [
    "DTYPES",
    "MAX_HEADER_BYTES",
    "MAX_ID_LEN",
    "MAX_NODE_RECORDS",
    "MAX_NUMEL",
    "MAX_TENSORS",
    "MESSAGE_TYPES",
    "META_SCHEMA",
    "NODE_RECORD_SCHEMA",
    "PROTOCOL_VERSION",
    "CodecError",
    "Message",
    "Payload",
    "decode",
    "dense_numel",
    "encode",
]

PROTOCOL_VERSION: Final = 1
MAX_HEADER_BYTES: Final = 4 << 20
MAX_TENSORS: Final = 64
MAX_NUMEL: Final = (1 << 31) - 1  # int32 indices
MESSAGE_TYPES: Final = ("hello", "model", "update", "stop")
DTYPES: Final[dict[str, torch.dtype]] = {
    "float32": torch.float32,
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
    "int32": torch.int32,  # index lists (the announced common support)
}
_DTYPE_NAMES: Final = {v: k for k, v in DTYPES.items()}

Payload = torch.Tensor | SparseVector


@dataclass(frozen=True)
class Message:
    type: str
    job: str
    round: int
    node: str
    meta: dict[str, Any] = field(default_factory=dict)
    tensors: dict[str, Payload] = field(default_factory=dict)


def dense_numel(payload: Payload) -> int:
    """Elements of the payload's dense form (what a dense fp32 protocol would send)."""
    return payload.numel if isinstance(payload, SparseVector) else int(payload.numel())


def _raw(t: torch.Tensor) -> memoryview:
    """The tensor's bytes, without a copy for a contiguous CPU tensor (the usual case, checked first:
    each no-op torch call costs about a microsecond, a message's whole header)."""
    if t.requires_grad or not t.is_cpu or not t.is_contiguous():
        t = t.detach().cpu().contiguous()
    if not t.numel():
        return memoryview(b"")  # a view with a 0 in its shape cannot be cast
    # numpy has no bfloat16: the same bytes as int16. A 0-dim array casts to a 1-d byte view too.
    return (t.view(torch.int16) if t.dtype is torch.bfloat16 else t).numpy().data.cast("B")


def encode(msg: Message) -> list[bytes | memoryview]:
    """Message -> frames: [header, *tensor buffers]. Inverse of `decode`."""
    specs: list[dict[str, Any]] = []
    buffers: list[bytes | memoryview] = []
    for name, payload in msg.tensors.items():
        frame = 1 + len(buffers)
        if isinstance(payload, SparseVector):
            specs.append(
                {
                    "name": name,
                    "dtype": _DTYPE_NAMES[payload.values.dtype],
                    "shape": [payload.numel],
                    "enc": "sparse",
                    "nnz": int(payload.indices.numel()),
                    "frame": frame,
                }
            )
            buffers.append(_raw(payload.indices.to(torch.int32)))
            buffers.append(_raw(payload.values))
        else:
            specs.append(
                {
                    "name": name,
                    "dtype": _DTYPE_NAMES[payload.dtype],
                    "shape": list(payload.shape),
                    "enc": "dense",
                    "frame": frame,
                }
            )
            buffers.append(_raw(payload))
    header = {
        "v": PROTOCOL_VERSION,
        "type": msg.type,
        "job": msg.job,
        "round": msg.round,
        "node": msg.node,
        "meta": msg.meta,
        "tensors": specs,
    }
    return [msgpack.packb(header, use_bin_type=True), *buffers]


def _decode_tensor(spec: Any, frames: Sequence[Any], expected_frame: int) -> tuple[str, Payload, int]:
    if not isinstance(spec, dict):
        raise CodecError("field", "tensor spec must be a map")
    name = check_str(spec.get("name"), "tensor name")
    dtype_name = spec.get("dtype")
    dtype = DTYPES.get(dtype_name) if isinstance(dtype_name, str) else None
    if dtype is None:
        raise CodecError("dtype", f"{name}: dtype {spec.get('dtype')!r} not allowed")
    shape = spec.get("shape")
    if not isinstance(shape, list) or len(shape) > 8:
        raise CodecError("shape", f"{name}: shape must be a list of at most 8 dims")
    for dim in shape:
        if not isinstance(dim, int) or isinstance(dim, bool) or not 0 <= dim <= MAX_NUMEL:
            raise CodecError("shape", f"{name}: bad dimension {dim!r}")
    numel = math.prod(shape)
    if numel > MAX_NUMEL:
        raise CodecError("size", f"{name}: {numel} elements exceed {MAX_NUMEL}")
    if spec.get("frame") != expected_frame:
        raise CodecError("frames", f"{name}: frame index {spec.get('frame')!r}, expected {expected_frame}")
    enc = spec.get("enc")
    if enc == "dense":
        if set(spec) != {"name", "dtype", "shape", "enc", "frame"}:
            raise CodecError("field", f"{name}: unexpected keys")
        if expected_frame >= len(frames):
            raise CodecError("frames", f"{name}: missing frame")
        buf = frame_buffer(frames[expected_frame], dtype, numel, name)
        check_values(buf, dtype, name)
        return name, frame_tensor(buf, dtype).view(shape), expected_frame + 1
    if enc == "sparse":
        if set(spec) != {"name", "dtype", "shape", "enc", "frame", "nnz"} or len(shape) != 1:
            raise CodecError("field", f"{name}: a sparse tensor has a 1-d shape and an nnz")
        nnz = check_int(spec["nnz"], f"{name}.nnz", 0, numel)
        if expected_frame + 1 >= len(frames):
            raise CodecError("frames", f"{name}: missing frame")
        index_buf = frame_buffer(frames[expected_frame], torch.int32, nnz, f"{name}.indices")
        value_buf = frame_buffer(frames[expected_frame + 1], dtype, nnz, f"{name}.values")
        check_indices(index_buf, numel, name)
        check_values(value_buf, dtype, name)
        vector = SparseVector(frame_tensor(index_buf, torch.int32), frame_tensor(value_buf, dtype), numel)
        return name, vector, expected_frame + 2
    raise CodecError("field", f"{name}: unknown encoding {enc!r}")


def decode(frames: Sequence[Any]) -> Message:
    """Frames (bytes, memoryviews or zmq.Frame) -> Message. Inverse of `encode`; raises CodecError."""
    if not frames:
        raise CodecError("frames", "empty message")
    head = frames[0]
    raw = head.bytes if hasattr(head, "bytes") else bytes(head)
    if len(raw) > MAX_HEADER_BYTES:
        raise CodecError("size", f"header of {len(raw)} bytes")
    try:
        header = msgpack.unpackb(raw, raw=False, strict_map_key=True)
    except (ValueError, TypeError, msgpack.UnpackException) as e:
        raise CodecError("header", f"not a msgpack map: {type(e).__name__}") from e
    if not isinstance(header, dict):
        raise CodecError("header", "not a msgpack map")
    if set(header) != {"v", "type", "job", "round", "node", "meta", "tensors"}:
        raise CodecError("header", f"keys {sorted(map(str, header))}")
    if type(header["v"]) is not int or header["v"] != PROTOCOL_VERSION:
        raise CodecError("version", f"protocol version {header['v']!r}, expected {PROTOCOL_VERSION}")
    msg_type = header["type"]
    if msg_type not in MESSAGE_TYPES:
        raise CodecError("type", f"unknown message type {msg_type!r}")
    job = check_str(header["job"], "job")
    node = check_str(header["node"], "node")
    rnd = check_int(header["round"], "round", -1, 1 << 40)
    meta = check_meta(msg_type, header["meta"])
    specs = header["tensors"]
    if not isinstance(specs, list) or len(specs) > MAX_TENSORS:
        raise CodecError("field", f"tensors must be a list of at most {MAX_TENSORS}")
    tensors: dict[str, Payload] = {}
    next_frame = 1
    for spec in specs:
        name, payload, next_frame = _decode_tensor(spec, frames, next_frame)
        if name in tensors:
            raise CodecError("field", f"tensor {name!r} twice")
        tensors[name] = payload
    if next_frame != len(frames):
        raise CodecError("frames", f"{len(frames)} frames, header describes {next_frame}")
    return Message(type=msg_type, job=job, round=rnd, node=node, meta=meta, tensors=tensors)
