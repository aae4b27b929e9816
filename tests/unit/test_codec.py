"""The wire codec (protocol.codec): round trips, one test per rejection reason, and a fuzz corpus.

Every peer input goes through `decode`, so the contract tested here is: a well-formed message
comes back equal to what was encoded, and anything else raises `CodecError` with a countable
`reason`, never another exception.
"""

from __future__ import annotations

import copy
import math
import random
import warnings
from collections.abc import Callable
from typing import Any

import msgpack
import pytest
import torch
import zmq
from hypothesis import given, settings
from hypothesis import strategies as st

from swarm_worker.maths.compression import SparseVector
from swarm_worker.protocol.codec import (
    DTYPES,
    MAX_HEADER_BYTES,
    MAX_ID_LEN,
    MAX_NODE_RECORDS,
    MAX_NUMEL,
    MAX_TENSORS,
    MESSAGE_TYPES,
    META_SCHEMA,
    NODE_RECORD_SCHEMA,
    PROTOCOL_VERSION,
    CodecError,
    Message,
    Payload,
    decode,
    encode,
)
from swarm_worker.protocol.frames import check_values

Frames = list[bytes]

# ---------------------------------------------------------------------------------------------
# Building messages


def node_record(**changes: Any) -> dict[str, Any]:
    record: dict[str, Any] = {
        "id": "w-0",
        "role": "worker",
        "parent": "agg-0",
        "reputation": 0.9,
        "uptime": 1.0,
        "agreement": 1,
        "contribution": -0.25,
        "quarantined": False,
        "lastRound": 7,
    }
    record.update(changes)
    return record


VALID_META: dict[str, dict[str, Any]] = {
    "hello": {"role": "worker", "answered": False},
    "model": {"base_round": 3, "final": False},
    "update": {
        "samples": 32,
        "workers": 1,
        "loss": 0.5,
        "nodes": [node_record()],
        "traffic": [["w-0", 1, 4096, 40960], ["w-1", 2, 0, 0]],
    },
    "stop": {"reason": "done"},
}


def sparse(indices: list[int], values: list[float], numel: int, dtype: torch.dtype) -> SparseVector:
    return SparseVector(
        indices=torch.tensor(indices, dtype=torch.int32),
        values=torch.tensor(values, dtype=torch.float32).to(dtype),
        numel=numel,
    )


def valid_message(msg_type: str = "update", tensors: dict[str, Payload] | None = None) -> Message:
    if tensors is None:
        tensors = {
            "w": torch.tensor([[1.0, -2.0], [0.5, 0.0]]),
            "delta": sparse([1, 4, 9], [0.5, -1.0, 2.0], 10, torch.float16),
        }
    return Message(
        type=msg_type,
        job="digits",
        round=5,
        node="w-0",
        meta=copy.deepcopy(VALID_META[msg_type]),
        tensors=tensors,
    )


def wire(msg: Message) -> Frames:
    """What a receiver gets: every frame as its own bytes object."""
    return [bytes(frame) for frame in encode(msg)]


def header_of(frames: Frames) -> dict[str, Any]:
    header: dict[str, Any] = msgpack.unpackb(frames[0], raw=False)
    return header


def with_header(frames: Frames, header: Any) -> Frames:
    return [msgpack.packb(header, use_bin_type=True), *frames[1:]]


def assert_same_message(got: Message, want: Message) -> None:
    assert (got.type, got.job, got.round, got.node) == (want.type, want.job, want.round, want.node)
    assert got.meta == want.meta
    assert list(got.tensors) == list(want.tensors)
    for name, expected in want.tensors.items():
        actual = got.tensors[name]
        if isinstance(expected, SparseVector):
            assert isinstance(actual, SparseVector)
            assert actual.numel == expected.numel
            assert actual.indices.dtype == torch.int32
            assert torch.equal(actual.indices, expected.indices.to(torch.int32))
            assert actual.values.dtype == expected.values.dtype
            assert torch.equal(actual.values, expected.values)
        else:
            assert isinstance(actual, torch.Tensor)
            assert actual.dtype == expected.dtype
            assert actual.shape == expected.shape
            assert torch.equal(actual, expected)


# ---------------------------------------------------------------------------------------------
# Round trips

_text = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=12)
_ident = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=MAX_ID_LEN)
_finite = st.floats(allow_nan=False, allow_infinity=False)
_number = _finite | st.integers(-(2**63), 2**63 - 1)
_int64 = st.integers(-(2**63), 2**63 - 1)
_node_records = st.fixed_dictionaries(
    {
        "id": _text,
        "role": _text,
        "parent": _text,
        "reputation": _number,
        "uptime": _number,
        "agreement": _number,
        "contribution": _number,
        "quarantined": st.booleans(),
        "lastRound": _int64,
    }
)
META_STRATEGIES: dict[str, st.SearchStrategy[dict[str, Any]]] = {
    "hello": st.fixed_dictionaries({"role": _text, "answered": st.booleans()}),
    "model": st.fixed_dictionaries({"base_round": st.integers(-1, 1 << 40), "final": st.booleans()}),
    "update": st.fixed_dictionaries(
        {
            "samples": st.integers(0, 1 << 40),
            "workers": st.integers(0, 1 << 20),
            "loss": _number,
            "nodes": st.lists(_node_records, max_size=3),
            "traffic": st.lists(st.tuples(_ident, *[st.integers(0, 1 << 62)] * 3).map(list), max_size=3),
        }
    ),
    "stop": st.fixed_dictionaries({"reason": _text}),
}
# Finite in every wire dtype (float16's largest is 65504).
_values = st.floats(-6e4, 6e4, width=32)


@st.composite
def dense_tensors(draw: st.DrawFn, dtype: torch.dtype) -> torch.Tensor:
    shape = draw(st.lists(st.integers(0, 4), max_size=3))  # [] is a 0-dim tensor
    values = draw(st.lists(_values, min_size=math.prod(shape), max_size=math.prod(shape)))
    return torch.tensor(values, dtype=torch.float32).to(dtype).reshape(shape)


@st.composite
def sparse_tensors(draw: st.DrawFn, dtype: torch.dtype) -> SparseVector:
    numel = draw(st.integers(0, 40))
    indices = sorted(draw(st.sets(st.integers(0, max(0, numel - 1)), max_size=numel)))
    values = draw(st.lists(_values, min_size=len(indices), max_size=len(indices)))
    return sparse(indices, values, numel, dtype)


@st.composite
def messages(draw: st.DrawFn) -> Message:
    msg_type = draw(st.sampled_from(MESSAGE_TYPES))
    names = draw(st.lists(_ident, max_size=4, unique=True))
    tensors: dict[str, Payload] = {}
    for name in names:
        dtype = draw(st.sampled_from(list(DTYPES.values())))
        tensors[name] = draw(dense_tensors(dtype) | sparse_tensors(dtype))
    return Message(
        type=msg_type,
        job=draw(_ident),
        round=draw(st.integers(-1, 1 << 40)),
        node=draw(_ident),
        meta=draw(META_STRATEGIES[msg_type]),
        tensors=tensors,
    )


@given(msg=messages())
@settings(max_examples=300, deadline=None)
def test_decode_inverts_encode(msg: Message) -> None:
    assert_same_message(decode(encode(msg)), msg)  # the sender's zero-copy views
    assert_same_message(decode(wire(msg)), msg)  # copies, as received


@pytest.mark.parametrize("msg_type", MESSAGE_TYPES)
@pytest.mark.parametrize("dtype", list(DTYPES), ids=list(DTYPES))
@pytest.mark.parametrize("encoding", ["dense", "sparse", "empty-dense", "empty-sparse", "0-dim", "none"])
def test_every_type_dtype_and_encoding_round_trips(msg_type: str, dtype: str, encoding: str) -> None:
    wire_dtype = DTYPES[dtype]
    tensors: dict[str, Payload] = {
        "dense": {"t": torch.linspace(-3, 3, 24).reshape(2, 3, 4).to(wire_dtype)},
        "sparse": {"t": sparse([0, 17, 99], [1.5, -0.25, 3.0], 100, wire_dtype)},
        "empty-dense": {"t": torch.zeros(0, 5, dtype=wire_dtype), "s": torch.zeros(3, 0, dtype=wire_dtype)},
        "0-dim": {"scalar": torch.tensor(2.5).to(wire_dtype)},
        "empty-sparse": {"t": sparse([], [], 100, wire_dtype), "u": sparse([], [], 0, wire_dtype)},
        "none": {},
    }[encoding]
    msg = valid_message(msg_type, tensors)
    assert_same_message(decode(wire(msg)), msg)


def test_large_tensors_round_trip_zero_copy_over_zmq() -> None:
    g = torch.Generator().manual_seed(0)
    idx = torch.sort(torch.randperm(1_000_000, generator=g)[:10_000]).values.to(torch.int32)
    msg = valid_message(
        "update",
        {
            "dense": torch.randn(1000, 1000, generator=g),
            "delta": SparseVector(idx, torch.randn(10_000, generator=g).to(torch.float16), 1_000_000),
        },
    )
    with zmq.Context() as ctx, ctx.socket(zmq.PAIR) as tx, ctx.socket(zmq.PAIR) as rx:
        rx.bind("inproc://codec-test")
        tx.connect("inproc://codec-test")
        tx.send_multipart(encode(msg), copy=False)
        frames = rx.recv_multipart(copy=False)
    got = decode(frames)
    assert_same_message(got, msg)
    dense = got.tensors["dense"]
    assert isinstance(dense, torch.Tensor)
    # A view of the received frame, not a copy.
    assert dense.data_ptr() == _address(frames[1])


# ---------------------------------------------------------------------------------------------
# The finiteness check on the values' bits, against torch.isfinite


def _finite_by_codec(values: torch.Tensor) -> bool:
    try:
        check_values(memoryview(bytearray(values.view(torch.uint8).numpy())), values.dtype, "v")
    except CodecError:
        return False
    return True


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["float16", "bfloat16"])
def test_every_16_bit_pattern_is_judged_finite_exactly_as_torch_does(dtype: torch.dtype) -> None:
    every = torch.arange(-(2**15), 2**15, dtype=torch.int32).to(torch.int16)  # all 65,536 patterns
    finite = torch.isfinite(every.view(dtype))
    assert _finite_by_codec(every[finite].view(dtype))
    extremes = every[finite].view(dtype).aminmax()
    for bits in every[~finite].tolist():  # each Inf and NaN, between the largest finite values
        values = torch.stack([extremes.max, torch.tensor(bits, dtype=torch.int16).view(dtype), extremes.min])
        assert not _finite_by_codec(values), hex(bits & 0xFFFF)


@pytest.mark.parametrize("numel", [5, 1 << 20], ids=["numpy-pass", "torch-aminmax-pass"])
@pytest.mark.parametrize(
    "bits",
    [0x7F800000, 0xFF800000, 0x7FC00000, 0xFFC00000, 0x7F800001, None],
    ids=["inf", "-inf", "nan", "-nan", "signalling-nan", "finite"],
)
def test_float32_values_finite_or_not_on_both_passes(numel: int, bits: int | None) -> None:
    values = torch.full((numel,), -3.4e38)  # huge but finite: accepted (the magnitude is admission's)
    values[0] = 3.4e38
    if bits is not None:
        values.view(torch.int32)[-1] = bits - (1 << 32) if bits >= 1 << 31 else bits
    assert _finite_by_codec(values) is (bits is None)


def _address(frame: zmq.Frame) -> int:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The given buffer is not writable")
        return torch.frombuffer(frame.buffer, dtype=torch.uint8).data_ptr()


# ---------------------------------------------------------------------------------------------
# Each rejection reason


def _set(path: tuple[Any, ...], value: Any) -> Callable[[Frames], Frames]:
    """Mutator: set header[path...] = value."""

    def mutate(frames: Frames) -> Frames:
        header = header_of(frames)
        target = header
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value
        return with_header(frames, header)

    return mutate


def _drop(path: tuple[Any, ...]) -> Callable[[Frames], Frames]:
    def mutate(frames: Frames) -> Frames:
        header = header_of(frames)
        target = header
        for key in path[:-1]:
            target = target[key]
        del target[path[-1]]
        return with_header(frames, header)

    return mutate


def _frame(index: int, data: bytes) -> Callable[[Frames], Frames]:
    def mutate(frames: Frames) -> Frames:
        return [*frames[:index], data, *frames[index + 1 :]]

    return mutate


def _raw_header(data: bytes) -> Callable[[Frames], Frames]:
    return lambda frames: [data, *frames[1:]]


def _f32(*values: float) -> bytes:
    return torch.tensor(values, dtype=torch.float32).numpy().tobytes()


def _f16(*values: float) -> bytes:
    return torch.tensor(values, dtype=torch.float16).numpy().tobytes()


def _i32(*values: int) -> bytes:
    return torch.tensor(values, dtype=torch.int32).numpy().tobytes()


# The base message (valid_message()): frame 1 = dense float32 "w" (2, 2); frames 2, 3 = sparse
# float16 "delta" (numel 10, nnz 3): indices [1, 4, 9], values [0.5, -1, 2].
W, DELTA = 0, 1
MALFORMED: dict[str, tuple[str, Callable[[Frames], Frames]]] = {
    # frames
    "no frames": ("frames", lambda frames: []),
    "missing dense frame": ("frames", lambda frames: frames[:1]),
    "missing sparse values frame": ("frames", lambda frames: frames[:3]),
    "extra frame": ("frames", lambda frames: [*frames, b"\x00" * 4]),
    "frame index off by one": ("frames", _set(("tensors", DELTA, "frame"), 3)),
    "frame index missing": ("frames", _drop(("tensors", W, "frame"))),
    # header
    "header not msgpack": ("header", _raw_header(b"\xc1")),
    "header truncated": ("header", lambda frames: [frames[0][:-1], *frames[1:]]),
    "header with trailing bytes": ("header", lambda frames: [frames[0] + b"\x00", *frames[1:]]),
    "header is a list": ("header", lambda frames: with_header(frames, [1, 2, 3])),
    "header is a string": ("header", _raw_header(msgpack.packb("update"))),
    "header key missing": ("header", _drop(("meta",))),
    "header key extra": ("header", _set(("extra",), 1)),
    "header with an integer map key": ("header", _raw_header(b"\x81\x01\x02")),
    "header empty": ("header", _raw_header(b"")),
    # version
    "version 2": ("version", _set(("v",), PROTOCOL_VERSION + 1)),
    "version as string": ("version", _set(("v",), "1")),
    "version as bool": ("version", _set(("v",), True)),
    "version nil": ("version", _set(("v",), None)),
    # type
    "unknown type": ("type", _set(("type",), "gossip")),
    "type as int": ("type", _set(("type",), 2)),
    "type as list": ("type", _set(("type",), ["update"])),
    # field
    "empty job": ("field", _set(("job",), "")),
    "job too long": ("field", _set(("job",), "j" * (MAX_ID_LEN + 1))),
    "node as bytes": ("field", _set(("node",), b"w-0")),
    "round below -1": ("field", _set(("round",), -2)),
    "round as bool": ("field", _set(("round",), True)),
    "round as float": ("field", _set(("round",), 5.0)),
    "round too large": ("field", _set(("round",), (1 << 40) + 1)),
    "meta not a map": ("field", _set(("meta",), [])),
    "meta key missing": ("field", _drop(("meta", "loss"))),
    "meta key extra": ("field", _set(("meta", "secret"), "x")),
    "meta of another type": ("field", _set(("meta",), {"role": "worker"})),
    "samples negative": ("field", _set(("meta", "samples"), -1)),
    "samples as float": ("field", _set(("meta", "samples"), 1.0)),
    "workers too many": ("field", _set(("meta", "workers"), (1 << 20) + 1)),
    "loss nan": ("field", _set(("meta", "loss"), math.nan)),
    "loss inf": ("field", _set(("meta", "loss"), -math.inf)),
    "loss as bool": ("field", _set(("meta", "loss"), True)),
    "loss as string": ("field", _set(("meta", "loss"), "0.5")),
    "nodes not a list": ("field", _set(("meta", "nodes"), {})),
    "too many node records": ("field", _set(("meta", "nodes"), [node_record()] * (MAX_NODE_RECORDS + 1))),
    "node record not a map": ("field", _set(("meta", "nodes"), [1])),
    "node record key missing": ("field", _drop(("meta", "nodes", 0, "uptime"))),
    "node record reputation nan": ("field", _set(("meta", "nodes", 0, "reputation"), math.nan)),
    "node record quarantined as int": ("field", _set(("meta", "nodes", 0, "quarantined"), 1)),
    "node record lastRound as bool": ("field", _set(("meta", "nodes", 0, "lastRound"), False)),
    "node record id too long": ("field", _set(("meta", "nodes", 0, "id"), "n" * (MAX_ID_LEN + 1))),
    "traffic not a list": ("field", _set(("meta", "traffic"), {})),
    "traffic entry too short": ("field", _set(("meta", "traffic", 0), ["w-0", 1, 2])),
    "traffic entry not a list": ("field", _set(("meta", "traffic", 0), "w-0")),
    "traffic id empty": ("field", _set(("meta", "traffic", 0, 0), "")),
    "traffic bytes negative": ("field", _set(("meta", "traffic", 0, 2), -1)),
    "traffic bytes as float": ("field", _set(("meta", "traffic", 1, 3), 0.0)),
    "traffic incarnation as bool": ("field", _set(("meta", "traffic", 1, 1), True)),
    "too many traffic entries": (
        "field",
        _set(("meta", "traffic"), [["w", 0, 0, 0]] * (MAX_NODE_RECORDS + 1)),
    ),
    "tensors not a list": ("field", _set(("tensors",), {})),
    "too many tensors": ("field", _set(("tensors",), [{}] * (MAX_TENSORS + 1))),
    "tensor spec not a map": ("field", _set(("tensors", W), "w")),
    "tensor name empty": ("field", _set(("tensors", W, "name"), "")),
    "tensor name missing": ("field", _drop(("tensors", W, "name"))),
    "tensor name twice": ("field", _set(("tensors", DELTA, "name"), "w")),
    "unknown encoding": ("field", _set(("tensors", W, "enc"), "rle")),
    "dense with nnz": ("field", _set(("tensors", W, "nnz"), 4)),
    "sparse without nnz": ("field", _drop(("tensors", DELTA, "nnz"))),
    "sparse 2-d": ("field", _set(("tensors", DELTA, "shape"), [2, 5])),
    "nnz above numel": ("field", _set(("tensors", DELTA, "nnz"), 11)),
    "nnz negative": ("field", _set(("tensors", DELTA, "nnz"), -1)),
    "model base_round below -1": ("field", lambda frames: _model(-2)),
    # dtype
    "dtype int64": ("dtype", _set(("tensors", W, "dtype"), "int64")),
    "dtype float64": ("dtype", _set(("tensors", W, "dtype"), "float64")),
    "dtype missing": ("dtype", _drop(("tensors", W, "dtype"))),
    "dtype as torch name": ("dtype", _set(("tensors", DELTA, "dtype"), "torch.float16")),
    "dtype unhashable list": ("dtype", _set(("tensors", W, "dtype"), ["float32"])),
    "dtype unhashable map": ("dtype", _set(("tensors", W, "dtype"), {})),
    # shape
    "shape not a list": ("shape", _set(("tensors", W, "shape"), 4)),
    "shape of 9 dims": ("shape", _set(("tensors", W, "shape"), [1] * 9)),
    "negative dim": ("shape", _set(("tensors", W, "shape"), [-2, -2])),
    "bool dim": ("shape", _set(("tensors", W, "shape"), [True, 4])),
    "float dim": ("shape", _set(("tensors", W, "shape"), [2.0, 2])),
    "dim above int32": ("shape", _set(("tensors", W, "shape"), [MAX_NUMEL + 1])),
    "zero-size shape with a dim beyond int64": (
        "shape",
        lambda frames: _frame(1, b"")(_set(("tensors", W, "shape"), [0, 2**64 - 1])(frames)),
    ),
    # size
    "product above int32": ("size", _set(("tensors", W, "shape"), [1 << 16, 1 << 16])),
    "numel overflows as a product": ("size", _set(("tensors", W, "shape"), [1 << 20, 1 << 20, 1 << 20])),
    "header too large": ("size", _raw_header(b"\xc4" + b"\x00" * (MAX_HEADER_BYTES + 1))),
    # nbytes
    "dense frame short": ("nbytes", _frame(1, _f32(1, 2, 3))),
    "dense frame long": ("nbytes", _frame(1, _f32(1, 2, 3, 4, 5))),
    "dense frame ragged": ("nbytes", _frame(1, _f32(1, 2, 3, 4)[:-1])),
    "dense frame empty": ("nbytes", _frame(1, b"")),
    "sparse indices short": ("nbytes", _frame(2, _i32(1, 4))),
    "sparse values long": ("nbytes", _frame(3, _f16(1, 2, 3, 4))),
    "shape claims more than sent": ("nbytes", _set(("tensors", W, "shape"), [3, 2])),
    # index
    "index negative": ("index", _frame(2, _i32(-1, 4, 9))),
    "index equal to numel": ("index", _frame(2, _i32(1, 4, 10))),
    "index far out": ("index", _frame(2, _i32(1, 4, 2**31 - 1))),
    "indices descending": ("index", _frame(2, _i32(4, 1, 9))),
    "indices repeated": ("index", _frame(2, _i32(1, 4, 4))),
    "numel shrunk below an index": ("index", _set(("tensors", DELTA, "shape"), [9])),
    # nonfinite
    "dense nan": ("nonfinite", _frame(1, _f32(1, math.nan, 0, 0))),
    "dense inf": ("nonfinite", _frame(1, _f32(1, 0, 0, math.inf))),
    "sparse value -inf": ("nonfinite", _frame(3, _f16(0.5, -math.inf, 2))),
    "sparse value nan": ("nonfinite", _frame(3, _f16(math.nan, 1, 2))),
    "bfloat16 nan": (
        "nonfinite",
        lambda frames: _set(("tensors", DELTA, "dtype"), "bfloat16")(
            _frame(
                3, torch.tensor([1.0, math.nan, 2.0]).to(torch.bfloat16).view(torch.int16).numpy().tobytes()
            )(frames)
        ),
    ),
}


def _model(base_round: int) -> Frames:
    frames = wire(valid_message("model"))
    return _set(("meta", "base_round"), base_round)(frames)


@pytest.mark.parametrize(("reason", "mutate"), list(MALFORMED.values()), ids=list(MALFORMED))
def test_malformed_input_raises_codec_error_with_its_reason(
    reason: str, mutate: Callable[[Frames], Frames]
) -> None:
    base = wire(valid_message())
    decode(base)  # the unmutated message is fine
    with pytest.raises(CodecError) as caught:
        decode(mutate(base))
    assert caught.value.reason == reason
    assert str(caught.value).startswith(f"{reason}: ")


def test_every_reason_is_covered() -> None:
    covered = {reason for reason, _ in MALFORMED.values()}
    expected = {"frames", "header", "version", "type", "field", "dtype", "shape", "size", "nbytes", "index"}
    assert covered == expected | {"nonfinite"}


def test_schemas_cover_what_the_tests_build() -> None:
    assert set(VALID_META) == set(META_SCHEMA) == set(MESSAGE_TYPES)
    for msg_type, meta in VALID_META.items():
        assert set(meta) == set(META_SCHEMA[msg_type])
    assert set(node_record()) == set(NODE_RECORD_SCHEMA)


# ---------------------------------------------------------------------------------------------
# Fuzz corpus: decode never raises anything but CodecError


def _bases() -> list[Frames]:
    """Small valid messages of every type, dtype and encoding: the seeds the corpus mutates."""
    bases = []
    for msg_type in MESSAGE_TYPES:
        for dtype in DTYPES.values():
            bases.append(
                wire(
                    valid_message(
                        msg_type,
                        {
                            "w": torch.tensor([[1.0, -2.0], [0.5, 0.0]]).to(dtype),
                            "delta": sparse([1, 4, 9], [0.5, -1.0, 2.0], 10, dtype),
                            "empty": torch.zeros(0, dtype=dtype),
                        },
                    )
                )
            )
        bases.append(wire(valid_message(msg_type, {})))
    return bases


def _flip_bits(data: bytes, rng: random.Random, flips: int) -> bytes:
    out = bytearray(data)
    for _ in range(flips):
        pos = rng.randrange(len(out) * 8)
        out[pos // 8] ^= 1 << (pos % 8)
    return bytes(out)


def _mutate_bytes(frames: Frames, rng: random.Random) -> tuple[str, Frames, bool]:
    """One random byte-level mutation: (kind, frames, whether it is certainly invalid)."""
    frames = list(frames)
    kind = rng.choice(
        [
            "truncate header",
            "flip header",
            "overwrite header",
            "splice header",
            "truncate frame",
            "extend frame",
            "flip frame",
            "drop frame",
            "duplicate frame",
            "swap frames",
            "random frames",
        ]
    )
    index = rng.randrange(len(frames))
    certain = False
    if kind == "truncate header":
        frames[0] = frames[0][: rng.randrange(len(frames[0]))]
        certain = True  # a proper prefix of one msgpack object is never a complete object
    elif kind == "flip header":
        frames[0] = _flip_bits(frames[0], rng, rng.choice([1, 1, 2, 3, 8]))
    elif kind == "overwrite header":
        head = bytearray(frames[0])
        for _ in range(rng.randint(1, 4)):
            head[rng.randrange(len(head))] = rng.randrange(256)
        frames[0] = bytes(head)
    elif kind == "splice header":
        cut = rng.randrange(len(frames[0]))
        frames[0] = frames[0][:cut] + rng.randbytes(rng.randint(1, 8)) + frames[0][cut:]
    elif len(frames) == 1 or kind == "random frames":
        frames = [rng.randbytes(rng.randint(0, 64)) for _ in range(rng.randint(0, 4))]
    elif kind == "truncate frame" and index > 0 and frames[index]:
        frames[index] = frames[index][: rng.randrange(len(frames[index]))]
        certain = True
    elif kind == "extend frame" and index > 0:
        frames[index] = frames[index] + rng.randbytes(rng.randint(1, 8))
        certain = True
    elif kind == "drop frame":
        del frames[index]
        certain = True
    elif kind == "duplicate frame":
        frames.insert(index, frames[index])
        certain = True
    elif kind == "swap frames" and len(frames) > 2:
        i, j = rng.sample(range(len(frames)), 2)
        frames[i], frames[j] = frames[j], frames[i]
    elif frames[index]:
        frames[index] = _flip_bits(frames[index], rng, rng.randint(1, 4))
    return kind, frames, certain


GARBAGE: list[Any] = [
    None, True, False, 0, -1, 2, 2**31, 2**63 - 1, -(2**63), 2**64 - 1, 0.5, -0.0, math.nan, math.inf,
    "", "x", "w" * 300, "float32", "sparse", "dense", b"", b"\x00\x01", [], [0], [-1], [2**64 - 1],
    [1, 2, 3], [[1]], {}, {"a": 1}, {"name": "w"},
]  # fmt: skip


def _paths(obj: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    paths = [prefix] if prefix else []
    if isinstance(obj, dict):
        for key, value in obj.items():
            paths += _paths(value, (*prefix, key))
    elif isinstance(obj, list):
        for i, value in enumerate(obj):
            paths += _paths(value, (*prefix, i))
    return paths


def _mutate_header(frames: Frames, rng: random.Random) -> tuple[str, Frames, bool]:
    """Replace one value anywhere in the header (or delete a key) with a wrong-typed one."""
    header = header_of(frames)
    path = rng.choice(_paths(header))
    target = header
    for key in path[:-1]:
        target = target[key]
    if isinstance(target, dict) and rng.random() < 0.15:
        del target[path[-1]]
        return f"delete {path[-1]}", with_header(frames, header), True
    target[path[-1]] = rng.choice(GARBAGE)
    return f"replace {'.'.join(map(str, path))}", with_header(frames, header), False


def _run_corpus(
    mutate: Callable[[Frames, random.Random], tuple[str, Frames, bool]], size: int, seed: int
) -> tuple[int, list[str]]:
    """Feed `size` mutants to decode: (count rejected, descriptions of every contract breach)."""
    rng = random.Random(seed)
    bases = _bases()
    rejected, breaches = 0, []
    for case in range(size):
        kind, frames, certain = mutate(rng.choice(bases), rng)
        try:
            msg = decode(frames)
        except CodecError:
            rejected += 1
            continue
        except Exception as e:  # the contract under test: nothing else may escape
            breaches.append(f"#{case} {kind}: {type(e).__name__}: {str(e).splitlines()[0]}")
            continue
        if certain:
            breaches.append(f"#{case} {kind}: accepted")
        else:
            # A mutant can still be a valid message (a flipped bit in a name); then it must be a
            # consistent one.
            assert_same_message(decode(wire(msg)), msg)
    return rejected, breaches


def test_fuzz_corpus_of_byte_mutations_only_raises_codec_error() -> None:
    rejected, breaches = _run_corpus(_mutate_bytes, 12_000, seed=1)
    assert breaches == []
    assert rejected >= 10_000


def test_fuzz_corpus_of_header_value_mutations_only_raises_codec_error() -> None:
    rejected, breaches = _run_corpus(_mutate_header, 4_000, seed=2)
    assert breaches == []
    assert rejected >= 3_000
