"""A worker on CUDA (issue 13's device path), checked against the same computation on the CPU:

(a) a worker's rounds on CUDA give the CPU's update within float tolerance, and what it sends is a
    valid top-k of its accumulated update (exact and sampled selectors; the sampled selector's torch
    path on CUDA picks exactly what its numpy path picks on the CPU); an attacker computes on CUDA;
(b) θ_0 and every MODEL applied on CUDA are bit-identical with the root's CPU θ, and `model_digest`
    computed on CUDA equals the CPU's;
(c) a local `swarm run` with `workers.device: cuda` (aggregators and root on the CPU) finishes and
    every worker's digest matches the root's each round.

    PYTHONPATH=contract/src:worker/src python3 -m pytest --noconftest -q tests/gpu/test_device_worker.py

About 40 s on an H200, most of it (c): seven processes start torch, four of them CUDA. The CPU
variants of these checks are tests/unit/test_device_path.py and tests/integration/test_device_swarm.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from swarm_contract.manifest import parse_spec
from swarm_worker.maths.compression import topk_sampled
from swarm_worker.node.model_sync import model_digest
from swarm_worker.simulation.byzantine import Attacker, plan_for
from swarm_worker.training.tasks import TaskBundle, build_task, initial_model
from tests.integration.test_device_swarm import check_swarm_with_workers_on
from tests.unit.test_device_path import (
    CPU,
    SEED,
    initial_theta_on,
    is_top_k,
    model_messages,
    node_applies,
    root_applies,
    same_bits,
    start_theta,
    supports_on,
    worker_rounds_on,
)

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="no GPU")]
CUDA = torch.device("cuda")


@pytest.fixture(scope="module")
def digits() -> TaskBundle:
    return build_task("digits", {}, SEED)


# -- (a) a worker's round --------------------------------------------------------------------


@pytest.mark.parametrize("selector", ["exact", "sampled"])
def test_a_round_on_cuda_gives_the_cpus_update_and_a_valid_top_k(digits: TaskBundle, selector: str) -> None:
    on_cpu = worker_rounds_on(CPU, digits, selector)
    on_gpu = worker_rounds_on(CUDA, digits, selector)
    for r, (cpu, gpu) in enumerate(zip(on_cpu, on_gpu, strict=True)):
        assert gpu.delta.device.type == "cuda", r
        assert gpu.residual.device.type == "cuda", r
        assert gpu.sent.indices.device == CPU, r
        assert gpu.sent.values.device == CPU, r
        torch.testing.assert_close(gpu.delta.cpu(), cpu.delta, rtol=1e-4, atol=1e-5)
        if r == 0:  # later, the residuals differ wherever a near-tie at the cut fell the other way
            torch.testing.assert_close(gpu.accumulated.cpu(), cpu.accumulated, rtol=1e-4, atol=1e-5)
        assert gpu.loss == pytest.approx(cpu.loss, rel=1e-4)
        assert is_top_k(gpu.accumulated, gpu.sent.indices), r
        assert torch.equal(gpu.sent.to_dense() + gpu.residual.cpu(), gpu.accumulated.cpu()), r
        # Near-ties at the cut may fall either way between devices; nearly all coordinates agree.
        common = set(gpu.sent.indices.tolist()) & set(cpu.sent.indices.tolist())
        assert len(common) >= 0.9 * cpu.sent.indices.numel(), (r, len(common))


def test_the_sampled_selector_on_cuda_picks_the_cpus_top_k() -> None:
    vec = torch.randn(2_000_000, generator=torch.Generator().manual_seed(8))
    k = 20_000
    on_cpu = topk_sampled(vec, k, generator=torch.Generator().manual_seed(1))
    on_gpu = topk_sampled(vec.to(CUDA), k, generator=torch.Generator().manual_seed(1))
    assert on_gpu.device.type == "cuda"
    assert torch.equal(on_gpu.cpu(), on_cpu)  # same sample, same threshold, no ties in randn
    assert is_top_k(vec, on_gpu)


@pytest.mark.parametrize("attack", ["gaussian", "alie", "sign-flip"])
def test_an_attacker_computes_on_cuda(digits: TaskBundle, attack: str) -> None:
    spec = parse_spec(
        {
            "workers": {"replicas": 4},
            "training": {"syncEvery": 3, "batchSize": 16, "seed": SEED},
            "simulation": {"byzantine": [{"worker": 3, "attack": attack}]},
        }
    )
    plan = plan_for(spec, 3)
    assert plan is not None
    model = initial_model(digits, SEED).to(CUDA)
    theta = torch.nn.utils.parameters_to_vector(model.parameters()).detach()
    own = torch.randn(theta.numel(), device=CUDA) * 1e-3
    crafted = Attacker(plan, spec, digits, model).craft(own, theta)
    assert crafted.device.type == "cuda"
    assert bool(torch.isfinite(crafted).all())
    assert not torch.equal(crafted, own)


def test_the_common_support_on_cuda_is_the_cpus() -> None:
    on_gpu, on_cpu = supports_on(CUDA), supports_on(CPU)
    for name in ("initial", "merged counts"):
        assert torch.equal(on_gpu[name], on_cpu[name]), name
    assert torch.equal(on_gpu["announced"], on_gpu["next"])
    # S_1 breaks ties between equal scores with torch.topk, which may order them differently on CUDA
    # (harmless: the root alone decides S_1); random priorities make ties rare, so nearly all agree.
    common = set(on_gpu["next"].tolist()) & set(on_cpu["next"].tolist())
    assert len(common) >= 0.95 * on_cpu["next"].numel()


# -- (b) θ on CUDA stays the root's ----------------------------------------------------------


def test_theta_0_on_cuda_is_the_cpus_bit_for_bit(tmp_path: Path) -> None:
    gpu_device, on_gpu = initial_theta_on("cuda", tmp_path / "gpu")
    cpu_device, on_cpu = initial_theta_on("cpu", tmp_path / "cpu")
    assert gpu_device.type == "cuda"
    assert on_gpu.device.type == "cuda"
    assert cpu_device == CPU
    assert same_bits(on_gpu, on_cpu)
    assert model_digest(on_gpu) == model_digest(on_cpu)


@pytest.mark.parametrize("value_dtype", [torch.float16, torch.bfloat16, torch.float32], ids=str)
def test_models_applied_on_cuda_are_the_roots_bit_for_bit(value_dtype: torch.dtype) -> None:
    theta = start_theta(1_000_003)
    messages = model_messages(theta, value_dtype, rounds=5, seed=9)
    root = root_applies(theta, messages)
    on_gpu = node_applies(theta, messages, CUDA)
    on_cpu = node_applies(theta, messages, CPU)
    for r, (expected, gpu, cpu) in enumerate(zip(root, on_gpu, on_cpu, strict=True)):
        assert same_bits(gpu, expected), r
        assert same_bits(cpu, expected), r
        assert model_digest(gpu) == model_digest(expected), r  # digest on CUDA == digest on CPU


# -- (c) a real swarm ------------------------------------------------------------------------


def test_a_swarm_of_cuda_workers_trains_from_the_roots_model_bit_for_bit(tmp_path: Path) -> None:
    check_swarm_with_workers_on("cuda", tmp_path)
