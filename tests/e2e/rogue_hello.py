"""The rogue of the e2e suite: run inside a pod of the job's namespace, with the job's labels, from
the worker image (so it has our codec and pyzmq), it dials the job's nodes without CURVE keys,
claims to be one of their children and asks for the model with HELLO for a while.

    python -c "$(cat rogue_hello.py)" JOB TARGET=CLAIMED_ID [TARGET=CLAIMED_ID ...]

It prints one line per target, `rogue: <target> as <id>: <n> replies`, and exits 0: the test
reads the counts (every one must be 0: no model, no answer, to anyone outside the tree).
"""

from __future__ import annotations

import contextlib
import sys
import time
from typing import Any

import zmq

from swarm_worker.protocol.codec import Message
from swarm_worker.protocol.transport import encode_message

SECONDS = 20.0


def main(argv: list[str]) -> int:
    job, *pairs = argv
    ctx: zmq.Context[Any] = zmq.Context()
    socks: dict[str, tuple[str, zmq.Socket[Any]]] = {}
    for pair in pairs:
        target, _, claimed = pair.partition("=")
        sock = ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.IDENTITY, claimed.encode())
        sock.setsockopt(zmq.LINGER, 0)
        sock.connect(f"tcp://{target}")
        socks[target] = (claimed, sock)
    replies = dict.fromkeys(socks, 0)
    deadline = time.monotonic() + SECONDS
    while time.monotonic() < deadline:
        for target, (claimed, sock) in socks.items():
            hello = Message("hello", job, 0, claimed, {"role": "worker", "answered": False}, {})
            # No connection (the handshake never completes) means nothing to send on: EAGAIN.
            with contextlib.suppress(zmq.Again):
                sock.send_multipart(encode_message(hello).frames, flags=zmq.NOBLOCK)
            while sock.poll(100):
                sock.recv_multipart()
                replies[target] += 1
        time.sleep(0.5)
    for target, (claimed, _) in socks.items():
        print(f"rogue: {target} as {claimed}: {replies[target]} replies", flush=True)
    ctx.destroy(linger=0)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
