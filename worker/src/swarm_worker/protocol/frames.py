"""A tensor's raw frames: their bytes checked against the header, and the per-element checks
`codec.decode` runs before a tensor is built from them (finite values; sparse indices strictly
ascending inside the vector). Each check is one vectorised pass over the frame as it arrived, with
no copy and no upcast: a sparse update's checks are on the receiving thread of every aggregator, for
every message, so they are measured in benchmarks/bench_codec.py against raw ZeroMQ throughput.
Raises `CodecError` with the reason the receiver counts.
"""

from __future__ import annotations

import math
import warnings
from typing import Any, Final

import numpy as np
import torch

from swarm_worker.protocol.header import CodecError

__all__ = ["check_indices", "check_values", "frame_buffer", "frame_tensor"]


def frame_buffer(frame: Any, dtype: torch.dtype, count: int, what: str) -> memoryview:
    """The frame's bytes, which must be exactly `count` values of `dtype`."""
    buf = frame.buffer if hasattr(frame, "buffer") else memoryview(frame)
    if buf.nbytes != count * dtype.itemsize:
        raise CodecError("nbytes", f"{what}: {buf.nbytes} bytes, expected {count} x {dtype.itemsize}")
    return buf


def frame_tensor(buf: memoryview, dtype: torch.dtype) -> torch.Tensor:
    """A read-only view of checked bytes (decoded tensors are documented as read-only views)."""
    return torch.frombuffer(buf, dtype=dtype) if buf.nbytes else torch.empty(0, dtype=dtype)


def _spend_readonly_warning() -> None:
    """torch warns once per process, from C++, that a tensor over a read-only buffer (every zmq
    frame) is writable through torch. Decoded tensors are documented as read-only views, so the one
    warning is spent here, at import, under a filter: a filter around every decode instead
    (warnings.catch_warnings) cost 2 us per message, and is not thread-safe."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The given buffer is not writable")
        torch.frombuffer(memoryview(bytes(4)), dtype=torch.uint8)


_spend_readonly_warning()


# The per-element checks read the frames as numpy integers (np.frombuffer: no copy, and cheaper than
# a view of the torch tensor), one vectorised pass each.
#
# Values: a float dtype's IEEE bits as (signed, unsigned) integers of its width, and +Inf's bits.
# Inf and NaN are the values whose exponent bits are all set: with the sign bit clear they are the
# largest signed integers (from +Inf's bits up), with it set the largest unsigned ones (from -Inf's
# bits up). So two integer maxima prove every value finite: no temporary array, no float32 copy (a
# sum in float32 overflows on huge finite values and then needs an exact second pass), and numpy's
# single-threaded pass beats torch's OpenMP fork and join on an update's few hundred KB. From
# _PARALLEL_VALUES values on (a dense model), torch's multi-threaded `aminmax` is the faster pass:
# NaN propagates to its min and max, and an infinity is one of them.
_PARALLEL_VALUES: Final = 1 << 20
_FLOAT_BITS: Final[
    dict[torch.dtype, tuple[type[np.signedinteger[Any]], type[np.unsignedinteger[Any]], int]]
] = {
    torch.float32: (np.int32, np.uint32, 0x7F800000),
    torch.float16: (np.int16, np.uint16, 0x7C00),
    torch.bfloat16: (np.int16, np.uint16, 0x7F80),  # numpy has no bfloat16; its bits suffice
}


def check_values(buf: memoryview, dtype: torch.dtype, what: str) -> None:
    """Every value finite (see `_FLOAT_BITS`); an int32 index list has nothing to check."""
    layout = _FLOAT_BITS.get(dtype)
    if layout is None or not buf.nbytes:
        return
    signed, unsigned, inf_bits = layout
    bits = np.frombuffer(buf, dtype=signed)
    if bits.size >= _PARALLEL_VALUES:
        lo, hi = torch.aminmax(frame_tensor(buf, dtype))
        finite = math.isfinite(lo) and math.isfinite(hi)
    else:
        sign_bit = 1 << (8 * bits.itemsize - 1)
        finite = int(bits.max()) < inf_bits and int(bits.view(unsigned).max()) < sign_bit | inf_bits
    if not finite:
        raise CodecError("nonfinite", f"{what} holds NaN or Inf")


def check_indices(buf: memoryview, numel: int, what: str) -> None:
    """Strictly ascending (so unique) inside [0, numel): ascending makes the ends the extremes, so
    the bounds are two reads; the order is one comparison of neighbours (which, unlike np.diff on
    int32, cannot overflow)."""
    idx = np.frombuffer(buf, dtype=np.int32)
    if idx.size == 0:
        return
    if idx[0] < 0 or idx[-1] >= numel:
        raise CodecError("index", f"{what}: index out of [0, {numel})")
    if idx.size > 1 and not np.greater(idx[1:], idx[:-1]).all():
        raise CodecError("index", f"{what}: indices not strictly ascending")
