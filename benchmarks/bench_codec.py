"""Codec + ZeroMQ throughput vs raw ZeroMQ frames of the same bytes, over tcp loopback.

    python -m benchmarks.bench_codec [--repeats 5] [--params 10000000] [--ratio 0.01]

Two cases: a sparse UPDATE of a `--params` model at `--ratio` (int32 indices + float16 values) and
a dense MODEL of the same size (float32). "codec": every message is `encode`d by the sender, sent
PUSH -> PULL with copy=False and `decode`d (with all its validation) by the receiver. "raw": the
same frames, preallocated once, sent with send_multipart and received without decoding. The sender
runs in its own process, as a worker does in the swarm (a thread of the receiver's process would
share its GIL, and every hand-over of the GIL would be counted as the codec's cost); the receiver
is the main process. Modes are interleaved per repetition; the table gives medians and codec/raw
throughput ratios. A second table, from the same run, gives CURVE on vs off for the same messages
on a tree link (benchmarks.curve_cost). Writes benchmarks/results/codec.md (not with --no-write).
"""

from __future__ import annotations

import argparse
import multiprocessing
import time
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any

import torch
import zmq

from benchmarks.common import markdown_table, median, start_run, write_result
from benchmarks.curve_cost import curve_cost
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


def build(case: str, params: int, ratio: float) -> Message:
    return sparse_update(params, ratio) if case == "sparse" else dense_model(params)


def sender(case: str, params: int, ratio: float, port: int, orders: Connection) -> None:
    """The sending process: builds the message itself, then for each order (mode, n) sends n
    messages, encoded one by one ("codec") or as the same prebuilt frames ("raw"), until None."""
    msg = build(case, params, ratio)
    raw_frames = [bytes(f) for f in encode(msg)]
    ctx = zmq.Context()
    push = ctx.socket(zmq.PUSH)
    push.connect(f"tcp://127.0.0.1:{port}")
    frames_for: dict[str, Callable[[], Any]] = {"codec": lambda: encode(msg), "raw": lambda: raw_frames}
    orders.send("ready")
    while (order := orders.recv()) is not None:
        mode, n = order
        for _ in range(n):
            push.send_multipart(frames_for[mode](), copy=False)
    push.close(linger=-1)  # the last messages are delivered before the process exits
    ctx.term()


def bench(case: str, params: int, ratio: float, n: int, repeats: int) -> dict[str, float]:
    nbytes = sum(len(f) for f in encode(build(case, params, ratio)))
    receive: dict[str, Callable[[list[zmq.Frame]], object]] = {"codec": decode, "raw": lambda frames: None}
    ctx = zmq.Context()
    pull = ctx.socket(zmq.PULL)
    port = pull.bind_to_random_port("tcp://127.0.0.1")
    orders, theirs = multiprocessing.get_context("spawn").Pipe()
    process = multiprocessing.get_context("spawn").Process(
        target=sender, args=(case, params, ratio, port, theirs)
    )
    process.start()
    try:
        orders.recv()  # the sender has built its message and connected
        times: dict[str, list[float]] = {mode: [] for mode in receive}
        for rep in range(repeats + 1):  # the first round warms up the connection
            for mode, handle in receive.items():
                start = time.perf_counter()
                orders.send((mode, n))
                for _ in range(n):
                    handle(pull.recv_multipart(copy=False))
                if rep:
                    times[mode].append(time.perf_counter() - start)
        orders.send(None)
        process.join()
    finally:
        if process.is_alive():
            process.kill()
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
        (sparse_name, "sparse", 200),
        (f"dense model, {args.params:,} params (fp32)", "dense", 10),
    ]
    rows = []
    for name, case, n in cases:
        r = bench(case, args.params, args.ratio, n, args.repeats)
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
    # CURVE on vs off on a tree link (DEALER -> ROUTER behind the ZAP gate), same run, same frames.
    curve_rows = []
    for name, case, n in cases:
        frames = [bytes(f) for f in encode(build(case, args.params, args.ratio))]
        c = curve_cost(frames, n, args.repeats)
        mb = c["bytes"] / 1e6
        msgs = [f"{c['plain_msgs']:.1f}", f"{c['curve_msgs']:.1f}"]
        mbps = [f"{c['plain_msgs'] * mb:.0f}", f"{c['curve_msgs'] * mb:.0f}"]
        codec = [f"{c['curve_codec_msgs']:.1f}", f"{c['codec_ratio']:.2f}"]
        curve_rows.append([name, *msgs, *mbps, f"{c['ratio']:.2f}", *codec])
        print(" | ".join(map(str, curve_rows[-1])), flush=True)
    curve_table = markdown_table(
        [
            "case", "plain msg/s", "CURVE msg/s", "plain MB/s", "CURVE MB/s", "ratio CURVE/plain",
            "CURVE + decode msg/s", "ratio codec/raw on the CURVE link",
        ],
        curve_rows,
    )  # fmt: skip
    print(curve_table)
    if args.no_write:
        return
    body = (
        table + f"\n\n{args.repeats} repetitions per mode, interleaved, after one warm-up round; medians. "
        "codec = encode -> send_multipart(copy=False) -> recv_multipart(copy=False) -> decode (full "
        "validation: frame count, dtype, shape, nbytes, index bounds and order, finite values). "
        "raw = the same frames preallocated, no encode or decode. ratio = raw median time / codec "
        "median time (1.00: the codec costs nothing); worst paired ratio = the smallest of one "
        "repetition's pair. The sender is a process of its own, as a worker is (it used to be a "
        "thread of the receiver's process, whose GIL hand-overs the codec's time then included); "
        "both share the machine's cores."
        "\n\nCURVE on vs off, the same messages over a tree link (benchmarks.curve_cost: a DEALER to a "
        "ROUTER over tcp loopback, the ROUTER behind the ZAP gate admitting the child's key, every "
        "frame encrypted and authenticated by libzmq; no decode, so the ratio CURVE/plain is the "
        "link's cost alone). The last two columns: the same CURVE link with the receiver decoding "
        "every message (transport.receive's path), against that link's raw msg/s; sender and "
        "receiver share one process there (the receiver on a thread):\n\n" + curve_table
    )
    write_result(
        "codec", "Codec + ZeroMQ (PUSH/PULL, tcp loopback) vs raw ZeroMQ frames of the same bytes", run, body
    )


if __name__ == "__main__":
    main()
