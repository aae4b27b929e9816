"""10,000 malformed or truncated messages against a live aggregator process: it must not crash,
must count every one by reason, and must still use valid updates afterwards (the round they belong
to commits with them and the new model comes back)."""

from __future__ import annotations

import json
import random
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import msgpack
import pytest
import torch
import yaml
import zmq

from swarm_worker.local.ports import free_ports
from swarm_worker.maths.compression import SparseVector
from swarm_worker.protocol.codec import CodecError, Message, decode, encode
from tests.integration.swarm_helpers import metric_samples
from tests.polling import poll

pytestmark = pytest.mark.integration
COUNT = 10_000
NUMEL = 9_610  # digits MLP 64-128-10
UPDATE_INDICES = [1, 5, 9]


def valid_update(round_index: int = 0, node: str = "worker-0") -> list[bytes]:
    sparse = SparseVector(
        torch.tensor(UPDATE_INDICES, dtype=torch.int32), torch.ones(3, dtype=torch.float16), NUMEL
    )
    meta = {"samples": 32, "workers": 1, "loss": 0.5, "nodes": [], "traffic": []}
    frames = encode(Message("update", "fuzz", round_index, node, meta, {"delta": sparse}))
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
    return {
        s.labels["reason"]: s.value
        for s in metric_samples(metrics_port, "swarm_messages_dropped")
        if s.name.endswith("_total")
    }


def get(metrics_port: int, path: str) -> bytes:
    with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}{path}", timeout=5) as r:
        assert r.status == 200, f"GET {path}: {r.status}"
        body: bytes = r.read()
        return body


def test_live_aggregator_survives_and_counts_10000_malformed_messages(tmp_path: Path) -> None:
    doc = {
        "apiVersion": "swarm.ncrsh.io/v1alpha1",
        "kind": "SwarmTraining",
        "metadata": {"name": "fuzz"},
        "spec": {"workers": {"replicas": 2}, "training": {"roundDeadlineSeconds": 600}},
    }
    manifest_path = tmp_path / "fuzz.yaml"
    manifest_path.write_text(yaml.safe_dump(doc))
    data_port, metrics_port = free_ports("127.0.0.1", 2)
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

        def serving() -> bool:
            assert root.poll() is None, (tmp_path / "root.log").read_text()
            return get(metrics_port, "/healthz") == b"ok"

        poll("the root to serve /healthz", serving, timeout=120, interval=0.2, retry=(OSError,))
        before = dropped(metrics_port)
        sock.connect(f"tcp://127.0.0.1:{data_port}")
        gen = mutants(seed=1234)
        for _ in range(COUNT):
            sock.send_multipart(next(gen))
        sock.send_multipart(valid_update(round_index=7))  # a valid update for a round not open: counted
        after: dict[str, float] = {}

        def all_counted() -> bool:
            after.update(dropped(metrics_port))  # counters only grow
            return sum(after.values()) - sum(before.values()) >= COUNT + 1

        poll(lambda: f"{COUNT + 1} drops counted, have {after}", all_counted, timeout=60, interval=0.2)
        total = sum(after.values()) - sum(before.values())
        assert root.poll() is None, "the aggregator died"
        assert total == COUNT + 1, f"counted {total} of {COUNT + 1}: {after}"
        assert after.get("future-round") == 1
        assert len(after) >= 5, f"expected many distinct reasons, got {after}"

        # Still healthy: valid updates for the open round are used. Both workers report, so round 0
        # commits at once (the deadline is far away) with exactly their two updates.
        other = ctx.socket(zmq.DEALER)
        other.setsockopt(zmq.IDENTITY, b"worker-1")
        other.setsockopt(zmq.LINGER, 0)
        try:
            other.connect(f"tcp://127.0.0.1:{data_port}")
            sock.send_multipart(valid_update(round_index=0, node="worker-0"))
            other.send_multipart(valid_update(round_index=0, node="worker-1"))
            # The model of round 1 comes back to the sender: the mean of the two updates (ones at
            # UPDATE_INDICES), applied by outer SGD with lr 1 as θ - Δ, sent as a sparse delta on round 0.
            assert sock.poll(60_000), "no model for round 1 came back to worker-0"
            model = decode(sock.recv_multipart())
        finally:
            other.close(0)
        assert (model.type, model.round, model.meta["base_round"]) == ("model", 1, 0)
        change = model.tensors["theta"]
        assert isinstance(change, SparseVector)
        assert change.indices.tolist() == UPDATE_INDICES
        assert change.values.tolist() == [-1.0, -1.0, -1.0]
        status = json.loads(get(metrics_port, "/status"))
        assert status["round"] == 1
        line = json.loads((tmp_path / "metrics.jsonl").read_text().splitlines()[0])
        assert (line["round"], line["workers"], line["samples"], line["trainLoss"]) == (1, 2, 64, 0.5)
        last_round = {r["id"]: r["lastRound"] for r in status["nodes"]}
        assert last_round == {"worker-0": 0, "worker-1": 0}, status["nodes"]
        assert dropped(metrics_port) == after, "a valid update was dropped"
        assert root.poll() is None, "the aggregator died"
        assert get(metrics_port, "/healthz") == b"ok"
    finally:
        sock.close(0)
        ctx.term()
        root.kill()
        root.wait()
