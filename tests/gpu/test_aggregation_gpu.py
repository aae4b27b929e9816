"""Aggregation on an aggregator's GPU equals aggregation on the CPU: every robust rule and
pre-aggregation step (also against huge finite values, as tests/unit/test_robust_overflow.py), the
column-blocked sort, a whole round on a common support and on own supports, and the root's commit,
which must leave θ on CUDA bit-identical with a child's CPU copy; and whole local swarms whose root
and aggregators run on the GPU (`topology.aggregatorResources.gpus`) while the workers train on the
CPU, every worker's θ bit-identical with the root's each round.

Run on a machine with a GPU, from the repository root:
    PYTHONPATH=contract/src:worker/src python3 -m pytest --noconftest -q tests/gpu
Skipped (reason "no GPU") where torch sees none; the CPU side of each check runs in tests/unit.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from swarm_contract.manifest import parse_spec
from swarm_contract.topology import plan_tree
from swarm_worker.consensus.outcome import apply_change
from swarm_worker.local.launcher import LocalSwarm
from swarm_worker.maths.compression import SparseVector
from swarm_worker.maths.robust import RULES, _kernels, aggregate
from swarm_worker.node.model_sync import apply_model
from swarm_worker.node.round import RoundState
from swarm_worker.node.traffic import Traffic
from swarm_worker.protocol.codec import Message
from tests.integration.swarm_helpers import manifest, trained_rounds
from tests.unit.test_robust_overflow import ATTACKS, POSITIONS, ROBUST_RULES, attacked, rule_inputs

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no GPU")

CUDA = torch.device("cuda")
F = 2
STEPS: list[list[tuple[str, float | None]]] = [
    [],
    [("nnm", None)],
    [("bucketing", 2.0)],
    [("clipping", 1.0)],
    [("arc", None)],
]


def _honest(n: int, d: int, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return 0.1 * torch.randn(d, generator=generator) + torch.randn(n, d, generator=generator)


@pytest.mark.parametrize("steps", STEPS, ids=["none", "nnm", "bucketing", "clipping", "arc"])
@pytest.mark.parametrize("rule", RULES)
def test_every_rule_on_cuda_equals_the_cpu(rule: str, steps: list[tuple[str, float | None]]) -> None:
    n = 23 if steps and steps[0][0] == "bucketing" else 11  # the rule runs on ⌈n/2⌉ buckets
    x = _honest(n, 4099, 3)
    weights = torch.linspace(1, 2, n)
    previous = 0.05 * torch.ones(4099)
    cpu = aggregate(
        rule,
        x,
        f=F,
        weights=weights,
        previous=previous,
        pre_aggregation=steps,
        generator=torch.Generator().manual_seed(1),
    )
    cuda = aggregate(
        rule,
        x.to(CUDA),
        f=F,
        weights=weights,
        previous=previous,
        pre_aggregation=steps,
        generator=torch.Generator().manual_seed(1),
    )
    assert cuda.vector.device.type == "cuda"
    assert cuda.selected.device.type == "cuda"
    torch.testing.assert_close(cuda.vector.cpu(), cpu.vector, rtol=1e-4, atol=1e-5)
    if rule == "bulyan" and steps:
        # NNM and bucketing make equal rows, and which of two equal rows Bulyan credits is the
        # tie order of argmin and topk, which differs between the devices: the total is the same.
        torch.testing.assert_close(cuda.selected.sum().cpu(), cpu.selected.sum(), rtol=1e-4, atol=1e-4)
    else:
        torch.testing.assert_close(cuda.selected.cpu(), cpu.selected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("position", list(POSITIONS))
@pytest.mark.parametrize("attack", list(ATTACKS))
@pytest.mark.parametrize("rule", ROBUST_RULES)
def test_huge_values_give_the_same_result_on_cuda(rule: str, attack: str, position: str) -> None:
    x, _, attackers = attacked(rule_inputs(rule), attack, position)
    cpu = aggregate(rule, x, f=F)
    cuda = aggregate(rule, x.to(CUDA), f=F)
    assert bool(torch.isfinite(cuda.vector).all())
    torch.testing.assert_close(cuda.vector.cpu(), cpu.vector, rtol=1e-4, atol=1e-5)
    assert float(cuda.selected[attackers].max()) <= 1e-6


def test_the_blocked_sort_on_cuda_equals_the_cpu_kernel(monkeypatch: pytest.MonkeyPatch) -> None:
    x = _honest(16, 10_007, 4)
    monkeypatch.setattr(_kernels, "_SORT_BLOCK_ELEMENTS", 16 * 1000)
    for lo, hi in ((7, 8), (3, 12), (0, 15)):
        got = _kernels.ranked_mean(x.to(CUDA), lo, hi)
        expected = _kernels.ranked_mean(x, lo, hi)
        for g, e in zip(got, expected, strict=True):
            torch.testing.assert_close(g.cpu(), e, rtol=1e-6, atol=1e-6)


def _round(device: torch.device, rule: str, numel: int, payloads: list[SparseVector]) -> RoundState:
    spec = parse_spec(
        {"workers": {"replicas": 8}, "topology": {"branchingFactor": 8}, "robustness": {"rule": rule, "f": 1}}
    )
    tree = plan_tree(8, 8)
    theta = torch.zeros(numel, device=device)
    state = RoundState(spec, tree, tree.node("root"), numel, Traffic("root"), theta, 0, 0.0, device)
    for i, payload in enumerate(payloads):
        meta = {"samples": 10 + i, "workers": 1, "loss": 0.5, "nodes": [], "traffic": []}
        assert state.accept(Message("update", "job", 0, f"worker-{i}", meta, {"delta": payload}), 0.0) is None
    return state


@pytest.mark.parametrize("rule", ["median", "trimmed-mean", "krum", "geometric-median", "mean"])
def test_a_round_on_cuda_equals_the_round_on_the_cpu(rule: str) -> None:
    """Median, trimmed mean, Krum, geometric median on the common support's (n, k) rows; the mean
    on own supports by scatter-add (with the union rows for reputation)."""
    d, k = 50_000, 500
    support = _round(torch.device("cpu"), rule, d, []).support
    generator = torch.Generator().manual_seed(5)
    payloads = []
    for _ in range(8):
        vector = torch.randn(d, generator=generator)
        indices = (
            torch.sort(torch.randperm(d, generator=generator)[:k]).values if support is None else support
        )
        payloads.append(SparseVector(indices.to(torch.int32), vector[indices].half(), d))
    cpu_state, cuda_state = _round(torch.device("cpu"), rule, d, payloads), _round(CUDA, rule, d, payloads)
    assert all(u.values.device.type == "cuda" for u in cuda_state.pending.values())
    cpu, cuda = cpu_state.close(), cuda_state.close()
    assert cuda.aggregate.values.device.type == "cuda"
    torch.testing.assert_close(cuda.vector.cpu(), cpu.vector, rtol=1e-4, atol=1e-5)
    assert cuda.agreement == pytest.approx(cpu.agreement, rel=1e-4, abs=1e-5)
    # Records round their scores to 4 decimals: a last-digit difference may flip one of them.
    cpu_reputation = {r["id"]: r["reputation"] for r in cpu_state.records()}
    assert {r["id"]: pytest.approx(r["reputation"], abs=2e-4) for r in cuda_state.records()} == cpu_reputation


def test_the_roots_theta_on_cuda_stays_bit_identical_with_a_cpu_child() -> None:
    generator = torch.Generator().manual_seed(6)
    theta_cpu = torch.randn(100_000, generator=generator)
    root_theta, child_theta = theta_cpu.to(CUDA), theta_cpu.clone()
    for round_index in range(5):
        change = torch.zeros(100_000)
        where = torch.randperm(100_000, generator=generator)[:1000]
        change[where] = 1e-3 * torch.randn(1000, generator=generator)
        root_theta, wire = apply_change(root_theta, change.to(CUDA), torch.float16, delta=True)
        assert wire is not None
        assert wire.values.device.type == "cpu"
        meta = {"base_round": round_index, "final": False}
        applied = apply_model(
            child_theta, round_index, Message("model", "job", round_index + 1, "root", meta, {"theta": wire})
        )
        assert applied is not None
        child_theta = applied
    assert root_theta.device.type == "cuda"
    assert torch.equal(root_theta.cpu().view(torch.int32), child_theta.view(torch.int32))


@pytest.mark.parametrize(
    "robustness",
    [{"rule": "mean"}, {"rule": "trimmed-mean", "f": 1}],
    ids=["mean-own-supports", "trimmed-mean-common-support"],
)
def test_a_swarm_with_its_aggregators_on_the_gpu_keeps_every_copy_identical(
    tmp_path: Path, robustness: dict[str, object]
) -> None:
    """The root and both aggregators share the GPU (a quarter each), the 8 workers train on the
    CPU; the fp16 deltas the root applies on CUDA are the ones the workers apply on the CPU."""
    rounds = 4
    m = manifest(
        training={"rounds": rounds},
        workers={"device": "cpu"},
        topology={"aggregatorResources": {"gpus": 0.25}},
        robustness=robustness,
    )
    swarm = LocalSwarm(m, tmp_path)
    result = swarm.run(timeout=300)
    assert result["phase"] == "Succeeded"
    for node in ("root", "agg-0", "agg-1"):
        assert " up on cuda" in (tmp_path / "logs" / f"{node}.log").read_text(), node
    root = {line["round"]: line["modelDigest"] for line in swarm.metrics_lines()}
    assert sorted(root) == list(range(1, rounds + 1))
    mismatches = [
        f"{w} round {t.round}: {t.digest}, root {root[t.round]}"
        for w in (f"worker-{rank}" for rank in range(m.spec.workers.replicas))
        for t in trained_rounds(tmp_path, w)
        if t.round >= 1 and t.digest != root[t.round]
    ]
    assert not mismatches, "\n".join(mismatches)
    assert result["accuracy"] is not None
