"""Codec + ZeroMQ throughput vs raw ZeroMQ frames of the same bytes, over tcp loopback.

    python -m benchmarks.bench_codec [--repeats 5] [--params 10000000] [--ratio 0.01]

Two cases: a sparse UPDATE of a `--params` model at `--ratio` (int32 indices + float16 values) and
a dense MODEL of the same size (float32). "codec": every message is `encode`d by the sender, sent
PUSH -> PULL with copy=False and `decode`d (with all its validation) by the receiver. "raw": the
same frames, preallocated once, sent with send_multipart and received without decoding. Both
modes run in one process (sender on the main thread, receiver on a thread), interleaved per
repetition; the table gives medians and codec/raw throughput ratios. Writes
benchmarks/results/codec.md (not with --no-write).
"""

from __future__ import annotations

import argparse
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch
import zmq

from benchmarks.common import markdown_table, median, start_run, write_result
from swarm_worker.maths.compression import SparseVector, k_for
from swarm_worker.protocol.codec import META_SCHEMA, Message, decode, encode


def update_meta() -> dict[str, Any]:
    meta: dict[str, Any] = {"samples": 32, "workers": 1, "loss": 0.25, "nodes": []}
    if "traffic" in META_SCHEMA["update"]:
        meta["traffic"] = []
    return meta


def sparse_update(params: int, ratio: float) -> Message:
    g = torch.Generator().manual_seed(0)
    k = k_for(params, ratio)
    indices = torch.sort(torch.randperm(params, generator=g)[:k]).values.to(torch.int32)
    values = torch.randn(k, generator=g).to(torch.float16)
    return Message(
        "update", "bench", 1, "w-0", update_meta(), {"delta": SparseVector(indices, values, params)}
    )


def dense_model(params: int) -> Message:
    weights = torch.randn(params, generator=torch.Generator().manual_seed(1))
    return Message("model", "bench", 1, "root", {"base_round": 0, "final": False}, {"theta": weights})


def stream(
    push: zmq.Socket[Any],
    pull: zmq.Socket[Any],
    frames_for: Callable[[], Sequence[Any]],
    receive: Callable[[list[zmq.Frame]], object],
    n: int,
) -> float:
    """Seconds to send n messages and have the receiver finish with all of them."""

    def receiver() -> None:
        for _ in range(n):
            receive(pull.recv_multipart(copy=False))

    thread = threading.Thread(target=receiver)
    thread.start()
    start = time.perf_counter()
    for _ in range(n):
        push.send_multipart(frames_for(), copy=False)
    thread.join()
    return time.perf_counter() - start


def bench(msg: Message, n: int, repeats: int) -> dict[str, float]:
    raw_frames = [bytes(f) for f in encode(msg)]
    nbytes = sum(len(f) for f in raw_frames)
    ctx = zmq.Context()
    pull = ctx.socket(zmq.PULL)
    port = pull.bind_to_random_port("tcp://127.0.0.1")
    push = ctx.socket(zmq.PUSH)
    push.connect(f"tcp://127.0.0.1:{port}")
    modes: dict[str, tuple[Callable[[], Sequence[Any]], Callable[[list[zmq.Frame]], object]]] = {
        "codec": (lambda: encode(msg), decode),
        "raw": (lambda: raw_frames, lambda frames: None),
    }
    try:
        times: dict[str, list[float]] = {mode: [] for mode in modes}
        for rep in range(repeats + 1):  # the first round warms up the connection
            for mode, (frames_for, receive) in modes.items():
                seconds = stream(push, pull, frames_for, receive, n)
                if rep:
                    times[mode].append(seconds)
    finally:
        push.close(linger=0)
        pull.close(linger=0)
        ctx.term()
    codec_s, raw_s = median(times["codec"]), median(times["raw"])
    return {
        "bytes": nbytes,
        "codec_msgs": n / codec_s,
        "raw_msgs": n / raw_s,
        "codec_MBps": n * nbytes / codec_s / 1e6,
        "raw_MBps": n * nbytes / raw_s / 1e6,
        "ratio": raw_s / codec_s,
        "paired_min": min(r / c for r, c in zip(times["raw"], times["codec"], strict=True)),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--params", type=int, default=10_000_000)
    parser.add_argument("--ratio", type=float, default=0.01)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args(argv)
    run = start_run("benchmarks.bench_codec", argv)
    sparse_name = f"sparse update, {args.params:,} params at {args.ratio:g} (int32 + fp16)"
    cases = [
        (sparse_name, sparse_update(args.params, args.ratio), 200),
        (f"dense model, {args.params:,} params (fp32)", dense_model(args.params), 10),
    ]
    rows = []
    for name, msg, n in cases:
        r = bench(msg, n, args.repeats)
        rows.append(
            [
                name,
                f"{r['bytes'] / 1e6:.3f}",
                n,
                f"{r['codec_msgs']:.1f}",
                f"{r['raw_msgs']:.1f}",
                f"{r['codec_MBps']:.0f}",
                f"{r['raw_MBps']:.0f}",
                f"{r['ratio']:.2f}",
                f"{r['paired_min']:.2f}",
            ]
        )
        print(" | ".join(map(str, rows[-1])), flush=True)
    table = markdown_table(
        [
            "case", "MB/msg", "msgs/run", "codec msg/s", "raw msg/s", "codec MB/s", "raw MB/s",
            "ratio codec/raw (medians)", "worst paired ratio",
        ],
        rows,
    )  # fmt: skip
    print(table)
    if args.no_write:
        return
    body = (
        table + f"\n\n{args.repeats} repetitions per mode, interleaved, after one warm-up round; medians. "
        "codec = encode -> send_multipart(copy=False) -> recv_multipart(copy=False) -> decode (full "
        "validation: frame count, dtype, shape, nbytes, index bounds and order, finite values). "
        "raw = the same frames preallocated, no encode or decode. ratio = raw median time / codec "
        "median time (1.00: the codec costs nothing); worst paired ratio = the smallest of one "
        "repetition's pair. Sender and receiver share one process (receiver on a thread), so they "
        "also share the GIL and the machine's cores."
    )
    write_result(
        "codec", "Codec + ZeroMQ (PUSH/PULL, tcp loopback) vs raw ZeroMQ frames of the same bytes", run, body
    )


if __name__ == "__main__":
    main()
