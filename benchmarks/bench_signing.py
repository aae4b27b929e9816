"""What commit certificates and signed updates cost per operation, on the CPU.

    python -m benchmarks.bench_signing [--params 10000000] [--ratio 0.01] [--repeats 7] [--no-write]

ed25519 (cryptography): one signature and one verification of a commit point; a certificate of
2f + 1 signatures checked for R = 4 and R = 7. Digests (sha256 over the codec's frames): a sparse
update of `--params` at `--ratio` (int32 indices + fp16 values), its `sign_update` and
`verify_update`, and `theta_digest` of a dense fp32 θ of `--params` with a support of the update's
size. Each figure is the median over `--repeats` timed batches. Writes
benchmarks/results/signing.md (not with --no-write).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import torch
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from benchmarks.common import markdown_table, median, start_run, write_result
from swarm_contract.consensus import commit_quorum, replica_ids
from swarm_worker.maths.compression import SparseVector, k_for
from swarm_worker.protocol.certificate import (
    Certificate,
    CommitPoint,
    sign_point,
    theta_digest,
    verify_certificate,
)
from swarm_worker.protocol.codec import Message
from swarm_worker.protocol.signing import sign_update, tensors_digest, verify_update


def per_op_us(fn: Callable[[], object], batch: int, repeats: int) -> float:
    """Median over `repeats` batches of `batch` calls, in µs per call (one untimed warm-up call)."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(batch):
            fn()
        times.append((time.perf_counter() - start) / batch * 1e6)
    return median(times)


def certificate(replicas: int, point: CommitPoint) -> tuple[Certificate, dict[str, Ed25519PublicKey]]:
    signers = {r: Ed25519PrivateKey.generate() for r in replica_ids(replicas)}
    quorum = list(signers)[: commit_quorum(replicas)]
    cert = Certificate(point, tuple((r, sign_point(point, signers[r])) for r in quorum))
    return cert, {r: k.public_key() for r, k in signers.items()}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--params", type=int, default=10_000_000)
    parser.add_argument("--ratio", type=float, default=0.01)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args(argv)
    run = start_run("benchmarks.bench_signing", argv)
    gen = torch.Generator().manual_seed(0)
    k = k_for(args.params, args.ratio)
    indices = torch.randperm(args.params, generator=gen)[:k].sort().values.to(torch.int32)
    delta = SparseVector(indices, torch.randn(k, generator=gen).half(), args.params)
    meta = {"samples": 32, "workers": 4, "loss": 0.5, "nodes": [], "traffic": []}
    update = Message("update", "bench", 7, "agg-0", meta, {"delta": delta})
    signer = Ed25519PrivateKey.generate()
    signed = sign_update(update, signer)
    theta = torch.randn(args.params, generator=gen)
    point = CommitPoint("bench", 0, 8, 7, bytes(32), tensors_digest(update.tensors), bytes(32))
    vote = sign_point(point, signer)
    cert4, keys4 = certificate(4, point)
    cert7, keys7 = certificate(7, point)
    cases: list[tuple[str, Callable[[], object], int]] = [
        ("sign a commit point", lambda: sign_point(point, signer), 200),
        ("verify one commit vote", lambda: signer.public_key().verify(vote, point.signed_bytes()), 200),
        ("verify a certificate, R = 4 (3 signatures)", lambda: verify_certificate(cert4, keys4, 3), 100),
        ("verify a certificate, R = 7 (5 signatures)", lambda: verify_certificate(cert7, keys7, 5), 100),
        (f"tensors_digest of the update ({k:,} nnz)", lambda: tensors_digest(update.tensors), 10),
        ("sign_update", lambda: sign_update(update, signer), 10),
        ("verify_update", lambda: verify_update(signed, signer.public_key()), 10),
        (f"theta_digest, {args.params:,} fp32 + {k:,} support", lambda: theta_digest(theta, indices), 3),
    ]
    rows = []
    for name, fn, batch in cases:
        rows.append([name, f"{per_op_us(fn, batch, args.repeats):,.1f}"])
        print(" | ".join(rows[-1]), flush=True)
    table = markdown_table(["operation", "µs per op (median)"], rows)
    print(table)
    if not args.no_write:
        body = table + f"\n\nMedian of {args.repeats} timed batches per operation, after one warm-up call."
        write_result("signing", "Signing and certificate costs", run, body)


if __name__ == "__main__":
    main()
