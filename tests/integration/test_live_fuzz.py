"""10,000 malformed or truncated messages against a live aggregator process: it must not crash,
must count every one by reason, and must still accept a valid update afterwards."""

from __future__ import annotations

import random
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import msgpack
import pytest
import torch
import yaml
import zmq
from prometheus_client.parser import text_string_to_metric_families

from swarm_worker.local.launcher import free_port
from swarm_worker.maths.compression import SparseVector
from swarm_worker.protocol.codec import CodecError, Message, decode, encode

pytestmark = pytest.mark.integration
COUNT = 10_000
NUMEL = 9_610  # digits MLP 64-128-10


def valid_update(round_index: int = 0) -> list[bytes]:
    sparse = SparseVector(
        torch.tensor([1, 5, 9], dtype=torch.int32), torch.ones(3, dtype=torch.float16), NUMEL
    )
    meta = {"samples": 32, "workers": 1, "loss": 0.5, "nodes": [], "traffic": []}
    frames = encode(Message("update", "fuzz", round_index, "worker-0", meta, {"delta": sparse}))
    return [bytes(f) for f in frames]


def mutants(seed: int) -> Iterator[list[bytes]]:
    """Endless malformed messages: byte flips, truncations, wrong frame counts, bad header values."""
    rng = random.Random(seed)
    base = valid_update()
    header = msgpack.unpackb(base[0], raw=False)
    bad_values: list[tuple[str, object]] = [
        ("v", 2), ("v", "1"), ("type", "nope"), ("round", -5), ("round", "0"), ("node", ""), ("job", 7),
        ("meta", []), ("tensors", {}), ("tensors", [{"name": "delta"}]),
    ]  # fmt: skip
    while True:
        frames = [bytearray(f) for f in base]
        kind = rng.randrange(6)
        if kind == 0:  # flip bytes of the header
            for _ in range(rng.randint(1, 4)):
                i = rng.randrange(len(frames[0]))
                frames[0][i] ^= 1 << rng.randrange(8)
        elif kind == 1:  # truncate a frame
            j = rng.randrange(len(frames))
            frames[j] = frames[j][: rng.randrange(len(frames[j]))]
        elif kind == 2:  # drop or duplicate a frame
            j = rng.randrange(1, len(frames))
            frames = frames[:j] + frames[j + 1 :] if rng.random() < 0.5 else [*frames, frames[j]]
        elif kind == 3:  # a header value of the wrong type or range
            key, value = rng.choice(bad_values)
            frames[0] = bytearray(msgpack.packb({**header, key: value}, use_bin_type=True))
        elif kind == 4:  # indices out of range or out of order
            idx = torch.frombuffer(bytearray(frames[1]), dtype=torch.int32).clone()
            idx[rng.randrange(3)] = rng.choice([-1, NUMEL, 2**31 - 1, 0])
            frames[1] = bytearray(idx.numpy().tobytes())
        else:  # random garbage
            frames = [bytearray(rng.randbytes(rng.randint(0, 64))) for _ in range(rng.randint(1, 4))]
        out = [bytes(f) for f in frames]
        try:
            decode(out)
        except CodecError:
            yield out  # only messages the codec must refuse: every one has to be counted


def dropped(metrics_port: int) -> dict[str, float]:
    text = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).read().decode()
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        if family.name == "swarm_messages_dropped":
            for sample in family.samples:
                if sample.name.endswith("_total"):
                    out[sample.labels["reason"]] = sample.value
    return out


def test_live_aggregator_survives_and_counts_10000_malformed_messages(tmp_path: Path) -> None:
    doc = {
        "apiVersion": "swarm.ncrsh.io/v1alpha1",
        "kind": "SwarmTraining",
        "metadata": {"name": "fuzz"},
        "spec": {"workers": {"replicas": 2}, "training": {"roundDeadlineSeconds": 600}},
    }
    manifest_path = tmp_path / "fuzz.yaml"
    manifest_path.write_text(yaml.safe_dump(doc))
    data_port, metrics_port = free_port("127.0.0.1"), free_port("127.0.0.1")
    argv = [
        sys.executable, "-m", "swarm_worker.cli", "node",
        "--manifest", str(manifest_path), "--node-id", "root",
        "--bind-host", "127.0.0.1", "--bind-port", str(data_port), "--metrics-host", "127.0.0.1",
        "--metrics-port", str(metrics_port), "--workdir", str(tmp_path), "--threads", "1",
    ]  # fmt: skip
    with (tmp_path / "root.log").open("wb") as log:
        root = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=log)
    ctx = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.IDENTITY, b"worker-0")
    sock.setsockopt(zmq.LINGER, 0)
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                before = dropped(metrics_port)
                break
            except OSError:
                assert root.poll() is None, (tmp_path / "root.log").read_text()
                assert time.monotonic() < deadline, "the root never served /metrics"
                time.sleep(0.2)
        sock.connect(f"tcp://127.0.0.1:{data_port}")
        gen = mutants(seed=1234)
        for _ in range(COUNT):
            sock.send_multipart(next(gen))
        sock.send_multipart(valid_update(round_index=7))  # a valid update for a round not open: counted
        deadline = time.monotonic() + 60
        while True:
            after = dropped(metrics_port)
            total = sum(after.values()) - sum(before.values())
            if total >= COUNT + 1 or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert root.poll() is None, "the aggregator died"
        assert total == COUNT + 1, f"counted {total} of {COUNT + 1}: {after}"
        assert after.get("future-round") == 1
        assert len(after) >= 5, f"expected many distinct reasons, got {after}"
        # Still healthy: a valid update for the open round is accepted (nothing more is dropped).
        sock.send_multipart(valid_update(round_index=0))
        time.sleep(0.5)
        assert sum(dropped(metrics_port).values()) == sum(after.values())
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/healthz", timeout=5) as r:
            assert r.read() == b"ok"
    finally:
        sock.close(0)
        ctx.term()
        root.kill()
        root.wait()
