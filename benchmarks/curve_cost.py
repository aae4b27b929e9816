"""What CURVE costs on the tree's links: a child's DEALER to its parent's ROUTER over tcp loopback,
plain vs CURVE (protocol.curve + protocol.gate, the transport's own socket functions), same frames.

    python -m benchmarks.curve_cost [--params 10000000] [--ratio 0.01] [--repeats 5] [--no-write]

Two cases, as in bench_codec: a sparse UPDATE of a `--params` model at `--ratio` (int32 indices +
float16 values) and a dense MODEL of the same size (float32). The message is encoded once; each
repetition streams `n` copies child -> parent and the parent receives them (recv_multipart with
copy=False, the transport's receive path up to the codec: no decode, so the ratio is the link's
alone). Plain and CURVE run interleaved per repetition in one process (receiver on a thread, a
ZeroMQ context per side, so each side's I/O thread does its own encryption or decryption);
medians. `curve_cost(frames, n, repeats)` is the measuring function, for benchmarks.bench_codec.
Writes benchmarks/results/curve_cost.md (not with --no-write).
"""

from __future__ import annotations

import argparse
import tempfile
import threading
import time
from collections.abc import Sequence
from typing import Any

import torch
import zmq

from benchmarks.common import markdown_table, median, start_run, write_result
from swarm_contract.topology import ROOT_ID, plan_tree
from swarm_worker.maths.compression import SparseVector, k_for
from swarm_worker.protocol.codec import Message, decode, encode
from swarm_worker.protocol.curve import load_node_keys, write_job_keys
from swarm_worker.protocol.gate import ChildGate
from swarm_worker.protocol.transport import bind_router, connect_dealer

CHILD = "worker-0"


def sparse_frames(params: int, ratio: float) -> list[bytes]:
    g = torch.Generator().manual_seed(0)
    k = k_for(params, ratio)
    indices = torch.sort(torch.randperm(params, generator=g)[:k]).values.to(torch.int32)
    values = torch.randn(k, generator=g).to(torch.float16)
    meta: dict[str, Any] = {"samples": 32, "workers": 1, "loss": 0.25, "nodes": [], "traffic": []}
    msg = Message("update", "bench", 1, CHILD, meta, {"delta": SparseVector(indices, values, params)})
    return [bytes(f) for f in encode(msg)]


def dense_frames(params: int) -> list[bytes]:
    theta = torch.randn(params, generator=torch.Generator().manual_seed(1))
    msg = Message("model", "bench", 1, CHILD, {"base_round": 0, "final": False}, {"theta": theta})
    return [bytes(f) for f in encode(msg)]


def _stream(
    dealer: zmq.Socket[Any], router: zmq.Socket[Any], frames: Sequence[bytes], n: int, decoding: bool
) -> float:
    """Seconds to send `n` messages and have the parent receive (and, `decoding`, decode) all of them."""

    def receiver() -> None:
        for _ in range(n):
            received = router.recv_multipart(copy=False)
            if decoding:
                decode(received[1:])  # after the ROUTER's routing-id frame, as transport.receive

    thread = threading.Thread(target=receiver)
    thread.start()
    start = time.perf_counter()
    for _ in range(n):
        dealer.send_multipart(list(frames), copy=False)
    thread.join()
    return time.perf_counter() - start


def curve_cost(frames: Sequence[bytes], n: int, repeats: int) -> dict[str, float]:
    """msgs/s plain and with CURVE for `frames` sent `n` times per repetition, and their ratio
    (CURVE throughput / plain throughput, from the medians; 1.00: CURVE costs nothing); and msgs/s
    on the CURVE link with every message decoded, with its ratio to the same link's raw msgs/s."""
    tree = plan_tree(1, 2)  # root <- worker-0
    max_bytes = 4 * sum(len(f) for f in frames) + (1 << 20)
    with tempfile.TemporaryDirectory() as tmp:
        write_job_keys(tmp, tree)
        server_keys = load_node_keys(tmp, tree, ROOT_ID, reshuffle=False)
        client_keys = load_node_keys(tmp, tree, CHILD, reshuffle=False).client(ROOT_ID)
    # A context each, as in two processes: each side's I/O thread does its own side's crypto.
    ctx: zmq.Context[Any] = zmq.Context()
    child_ctx: zmq.Context[Any] = zmq.Context()
    gate = ChildGate(ctx, server_keys, on_refused=lambda reason: None)
    links: dict[str, tuple[zmq.Socket[Any], zmq.Socket[Any]]] = {}
    for mode in ("plain", "curve"):
        router = bind_router(ctx, "127.0.0.1", 0, max_bytes, gate=gate if mode == "curve" else None)
        address = router.getsockopt_string(zmq.LAST_ENDPOINT).removeprefix("tcp://")
        curve = client_keys if mode == "curve" else None
        links[mode] = (connect_dealer(child_ctx, CHILD, address, max_bytes, curve=curve), router)
    # "curve+codec": the CURVE link with the receiver decoding every message, as the swarm's parents do.
    runs = [("plain", False), ("curve", False), ("curve+codec", True)]
    times: dict[str, list[float]] = {mode: [] for mode, _ in runs}
    try:
        for rep in range(repeats + 1):  # the first round completes the handshakes and warms up
            for mode, decoding in runs:
                dealer, router = links[mode.removesuffix("+codec")]
                seconds = _stream(dealer, router, frames, n, decoding)
                if rep:
                    times[mode].append(seconds)
    finally:
        gate.close()
        for dealer, router in links.values():
            dealer.close(0)
            router.close(0)
        ctx.term()
        child_ctx.term()
    plain_s, curve_s, codec_s = (median(times[mode]) for mode, _ in runs)
    return {
        "bytes": sum(len(f) for f in frames),
        "plain_msgs": n / plain_s,
        "curve_msgs": n / curve_s,
        "ratio": plain_s / curve_s,
        "curve_codec_msgs": n / codec_s,
        "codec_ratio": curve_s / codec_s,
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
    run = start_run("benchmarks.curve_cost", argv)
    sparse_name = f"sparse update, {args.params:,} params at {args.ratio:g} (int32 + fp16)"
    cases = [
        (sparse_name, sparse_frames(args.params, args.ratio), 200),
        (f"dense model, {args.params:,} params (fp32)", dense_frames(args.params), 10),
    ]
    rows = []
    for name, frames, n in cases:
        r = curve_cost(frames, n, args.repeats)
        mb = r["bytes"] / 1e6
        rows.append(
            [
                name,
                f"{mb:.3f}",
                n,
                f"{r['plain_msgs']:.1f}",
                f"{r['curve_msgs']:.1f}",
                f"{r['plain_msgs'] * mb:.0f}",
                f"{r['curve_msgs'] * mb:.0f}",
                f"{r['ratio']:.2f}",
            ]
        )
        print(" | ".join(map(str, rows[-1])), flush=True)
    table = markdown_table(
        [
            "case",
            "MB/msg",
            "msgs/run",
            "plain msg/s",
            "CURVE msg/s",
            "plain MB/s",
            "CURVE MB/s",
            "ratio CURVE/plain",
        ],
        rows,
    )
    print(table)
    if args.no_write:
        return
    body = (
        table + f"\n\n{args.repeats} repetitions per mode, interleaved, after one warm-up round; medians. "
        "DEALER -> ROUTER over tcp loopback with the transport's socket options; CURVE = the "
        "ROUTER behind a ChildGate (ZAP handler admitting the child's key) and the DEALER a CURVE "
        "client: every frame encrypted and authenticated (XSalsa20-Poly1305) by libzmq. Frames "
        "encoded once, received without decoding: the ratio is the link's cost alone. Sender and "
        "receiver share one process (receiver on a thread, a ZeroMQ context each) and the machine's cores."
    )
    write_result("curve_cost", "CURVE on vs off on a tree link (DEALER -> ROUTER, tcp loopback)", run, body)


if __name__ == "__main__":
    main()
