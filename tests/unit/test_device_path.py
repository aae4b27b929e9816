"""The device path of a node, checked on the CPU: θ_0, a worker's round (local steps, error feedback,
top-k), an incoming MODEL and the digest, each computed on a given device.

The `*_on(device)` helpers are the checks themselves; tests/gpu/test_device_worker.py runs them on
CUDA and compares with the CPU. Here they run on the CPU, where they pin the device logic: what
stays on the device, what comes back to the host for the wire, and the bits of θ.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from swarm_contract.manifest import Manifest, parse_spec
from swarm_contract.spec import SpecError, SwarmSpec
from swarm_worker.maths.compression import (
    VALUE_DTYPES,
    ErrorFeedbackCompressor,
    SparseVector,
    dense_to_sparse,
)
from swarm_worker.maths.support import initial_support, merge_votes, next_support, on_support, valid_support
from swarm_worker.node.model_sync import apply_model, model_digest
from swarm_worker.node.runtime import NodeRuntime, NodeSettings
from swarm_worker.protocol.codec import Message, decode, encode
from swarm_worker.training.shards import honest_trainer
from swarm_worker.training.steps import flat_parameters
from swarm_worker.training.tasks import TaskBundle, build_task, initial_model

CPU = torch.device("cpu")
SEED = 3


def device_spec(device: str = "auto", selector: str = "exact", **training: object) -> SwarmSpec:
    return parse_spec(
        {
            "workers": {"replicas": 4, "device": device},
            "topology": {"branchingFactor": 4},
            "training": {"syncEvery": 5, "batchSize": 32, "seed": SEED, **training},
            "compression": {"method": "topk", "ratio": 0.05, "valueDtype": "float16", "selector": selector},
        }
    )


def node_settings(spec: SwarmSpec, node_id: str, workdir: Path) -> NodeSettings:
    parent = None if node_id == "root" else "127.0.0.1:1"
    return NodeSettings(
        manifest=Manifest(name="device", namespace="default", spec=spec),
        node_id=node_id,
        parent=parent,
        bind_host="127.0.0.1",
        bind_port=0,
        metrics_host="127.0.0.1",
        metrics_port=0,
        workdir=workdir,
    )


def initial_theta_on(device: str, workdir: Path) -> tuple[torch.device, torch.Tensor]:
    """(the node's device, θ_0) of worker-0 of a swarm whose workers use `device`."""
    rt = NodeRuntime(node_settings(device_spec(device), "worker-0", workdir))
    rt.start()
    try:
        return rt.device, rt.initial_theta()
    finally:
        rt.close()


def same_bits(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Bit-identical fp32 vectors (unlike ==, tells -0.0 from 0.0)."""
    return torch.equal(a.detach().cpu().view(torch.int32), b.detach().cpu().view(torch.int32))


@dataclass(frozen=True)
class WorkerRound:
    delta: torch.Tensor  # (d,) θ_r - θ_local, on the device
    accumulated: torch.Tensor  # (d,) Δ + residual before compression, on the device
    sent: SparseVector  # what goes on the wire
    residual: torch.Tensor  # (d,) after compression
    loss: float


def worker_rounds_on(
    device: torch.device, bundle: TaskBundle, selector: str, rounds: int = 3
) -> list[WorkerRound]:
    """Rank 1's first `rounds` rounds as its worker runs them on `device` (θ_0 from the seed, moved).
    Each round starts from θ - Δ, as if the root applied the whole update: the next θ does not hang
    on which near-tie the top-k kept, so two devices' rounds stay within float noise of each other."""
    spec = device_spec(selector=selector)
    model = initial_model(bundle, SEED).to(device)
    trainer = honest_trainer(spec, bundle, model, rank=1)
    theta = flat_parameters(model)
    numel = theta.numel()
    comp = spec.compression
    compressor = ErrorFeedbackCompressor(
        numel, ratio=comp.ratio, value_dtype=VALUE_DTYPES[comp.value_dtype], selector=selector, seed=SEED
    )
    out = []
    for _ in range(rounds):
        result = trainer.run_round(theta)
        accumulated = result.delta + compressor.residual.to(device)
        sent = compressor.compress(result.delta)
        out.append(WorkerRound(result.delta, accumulated, sent, compressor.residual, result.loss))
        theta = theta - result.delta
    return out


def is_top_k(vec: torch.Tensor, indices: torch.Tensor) -> bool:
    """Whether `indices` are k distinct coordinates of the k largest |vec| (ties either way)."""
    mags = vec.detach().abs().cpu()
    chosen = torch.zeros(vec.numel(), dtype=torch.bool)
    chosen[indices.long().cpu()] = True
    if int(chosen.sum()) != indices.numel():
        return False
    return bool(mags[~chosen].max() <= mags[chosen].min()) if bool((~chosen).any()) else True


def model_messages(theta: torch.Tensor, value_dtype: torch.dtype, rounds: int, seed: int) -> list[Message]:
    """`rounds` delta MODEL messages as the root makes them from θ (CPU), each through the codec (so
    the node gets read-only tensors from frames, as on the wire); small changes on a random tenth of
    the coordinates, with values near the bottom of fp32's range for bf16 (subnormal sums)."""
    gen = torch.Generator().manual_seed(seed)
    messages = []
    for r in range(rounds):
        change = torch.randn(theta.numel(), generator=gen) * 1e-3
        change[torch.rand(theta.numel(), generator=gen) > 0.1] = 0
        if value_dtype == torch.bfloat16:
            change[: theta.numel() // 8] *= 1e-36
        wire = dense_to_sparse(change, value_dtype)
        msg = Message("model", "device", r + 1, "root", {"base_round": r, "final": False}, {"theta": wire})
        messages.append(decode(encode(msg)))
    return messages


def root_applies(theta: torch.Tensor, messages: list[Message]) -> list[torch.Tensor]:
    """θ after each message, as the root applies what it sends (roles/root.py), on the CPU."""
    out = []
    theta = theta.clone()
    for msg in messages:
        wire = msg.tensors["theta"]
        assert isinstance(wire, SparseVector)
        theta[wire.indices.long()] += wire.values.to(torch.float32)
        out.append(theta.clone())
    return out


def node_applies(theta: torch.Tensor, messages: list[Message], device: torch.device) -> list[torch.Tensor]:
    """θ after each message, as a node holding θ on `device` applies it (`apply_model`)."""
    held: torch.Tensor | None = theta.to(device, copy=True)  # apply_model changes it in place
    out = []
    for r, msg in enumerate(messages):
        held = apply_model(held, r, msg)
        assert held is not None
        assert held.device.type == device.type
        out.append(held.clone())
    return out


def start_theta(numel: int = 50_001) -> torch.Tensor:
    """A θ with ordinary values, exact zeros of both signs and subnormals."""
    theta = torch.randn(numel, generator=torch.Generator().manual_seed(11))
    theta[:100] = 0.0
    theta[100:200] = -0.0
    theta[200 : numel // 8] *= 1e-38
    return theta


# -- θ_0 and the node's device ---------------------------------------------------------------


def test_initial_theta_is_the_seeds_model_on_the_nodes_device(tmp_path: Path) -> None:
    device, theta = initial_theta_on("cpu", tmp_path)
    assert device == CPU
    assert theta.device == CPU
    expected = flat_parameters(initial_model(build_task("digits", {}, SEED), SEED))
    assert same_bits(theta, expected)


def test_aggregators_compute_on_the_cpu_without_gpus_whatever_the_workers_use(tmp_path: Path) -> None:
    rt = NodeRuntime(node_settings(device_spec("cpu"), "root", tmp_path))
    rt.start()
    rt.close()
    assert rt.device == CPU
    assert rt.initial_theta().device == CPU


def test_cuda_workers_without_a_gpu_is_a_one_line_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(SpecError) as err:
        NodeRuntime(node_settings(device_spec("cuda"), "worker-0", tmp_path))
    message = str(err.value)
    assert message.startswith("workers.device: cuda")
    assert "\n" not in message


def test_swarm_run_with_cuda_workers_without_a_gpu_is_a_one_line_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from swarm_worker.cli import main

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")  # no GPU, even on a machine that has one
    example = (Path(__file__).resolve().parents[2] / "examples" / "digits.yaml").read_text()
    manifest = tmp_path / "cuda.yaml"
    manifest.write_text(example.replace("replicas: 8", "replicas: 2\n    device: cuda"))
    code = main(["run", str(manifest), "--output", str(tmp_path / "out"), "--rounds", "1", "--quiet"])
    errors = capsys.readouterr().err.splitlines()
    assert code != 0
    assert len(errors) == 1, errors
    assert errors[0].startswith("swarm: error: workers.device: cuda"), errors


# -- a worker's round ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def digits() -> TaskBundle:
    return build_task("digits", {}, SEED)


@pytest.mark.parametrize("selector", ["exact", "sampled"])
def test_a_workers_round_keeps_its_state_on_the_device_and_sends_a_host_top_k(
    digits: TaskBundle, selector: str
) -> None:
    rounds = worker_rounds_on(CPU, digits, selector)
    for r in rounds:
        assert r.delta.device == CPU
        assert r.residual.device == CPU
        assert r.sent.indices.device == CPU
        assert r.sent.values.device == CPU
        assert r.sent.indices.dtype == torch.int32
        assert r.sent.values.dtype == torch.float16
        assert is_top_k(r.accumulated, r.sent.indices)
        # Error feedback: what was sent plus what is kept is the accumulated update, exactly.
        assert torch.equal(r.sent.to_dense() + r.residual, r.accumulated)
    assert rounds[-1].loss < rounds[0].loss


def test_the_sampled_selectors_torch_path_picks_what_its_numpy_path_picks() -> None:
    """The CUDA path of `topk_sampled` (torch) against the CPU's (numpy), on the same vector and
    sample: both are the exact top-k whenever they return k, so they must agree (no ties here)."""
    from swarm_worker.maths.compression import _topk_sampled_numpy, _topk_sampled_torch

    gen = torch.Generator().manual_seed(2)
    vec = torch.randn(400_000, generator=gen)
    sample = torch.randint(0, vec.numel(), (20_000,), generator=gen)
    k = 4_000
    by_torch = _topk_sampled_torch(vec, k, sample, 1.2)
    by_numpy = _topk_sampled_numpy(vec.numpy(), k, sample.numpy(), 1.2)
    assert torch.equal(by_torch, by_numpy)
    assert is_top_k(vec, by_torch)


def test_the_residual_follows_the_updates_device() -> None:
    compressor = ErrorFeedbackCompressor(1_000, ratio=0.01, value_dtype=torch.float16, selector="exact")
    assert torch.equal(compressor.residual, torch.zeros(1_000))
    update = torch.arange(1_000, dtype=torch.float32)
    sent = compressor.compress(update)
    assert sent.indices.tolist() == list(range(990, 1_000))
    assert compressor.residual.device == update.device
    assert torch.equal(compressor.residual[:990], update[:990])


def supports_on(device: torch.device) -> dict[str, torch.Tensor]:
    """The common-support steps computed on `device`, brought back to the CPU for comparison: S_0,
    six nodes' votes merged (their counts, sorted: equal counts may be kept in another order), S_1,
    and a parent's announced S_1 validated onto the device."""
    numel, k = 20_000, 200
    gen = torch.Generator().manual_seed(4)
    votes = [
        SparseVector(
            indices=torch.sort(torch.randperm(numel, generator=gen)[:k]).values.to(torch.int32),
            values=torch.ones(k, dtype=torch.float16),
            numel=numel,
        )
        for _ in range(6)
    ]
    merged = merge_votes(votes, numel, k, device=device)
    assert merged is not None
    # S_1 from the CPU's merge: most counts are 1, so which of the tied coordinates a merge keeps may
    # differ between devices (harmless: one node decides, and sends what it kept).
    s1 = next_support(merge_votes(votes, numel, k), numel, k, SEED, 1, device=device)
    announced = valid_support(s1.to(CPU, torch.int32), numel, k, device=device)
    assert announced is not None
    sent = SparseVector(indices=s1[:10].to(CPU, torch.int32), values=torch.ones(10), numel=numel)
    assert on_support(sent, announced)
    for t in (s1, announced, merged.values):
        assert t.device.type == device.type
    return {
        "initial": initial_support(numel, k, SEED, device=device).cpu(),
        "merged counts": torch.sort(merged.values.cpu()).values,
        "next": s1.cpu(),
        "announced": announced.cpu(),
    }


def test_the_common_support_is_computed_on_the_given_device() -> None:
    numel, k = 20_000, 200
    got = supports_on(CPU)
    assert torch.equal(got["initial"], initial_support(numel, k, SEED))
    assert torch.equal(got["announced"], got["next"])
    assert got["merged counts"].numel() == k
    assert float(got["merged counts"].min()) >= 1.0


# -- an incoming model -----------------------------------------------------------------------


@pytest.mark.parametrize("value_dtype", [torch.float16, torch.bfloat16, torch.float32], ids=str)
def test_a_node_applies_exactly_what_the_root_applied(value_dtype: torch.dtype) -> None:
    theta = start_theta()
    messages = model_messages(theta, value_dtype, rounds=4, seed=5)
    for root, node in zip(root_applies(theta, messages), node_applies(theta, messages, CPU), strict=True):
        assert same_bits(node, root)
        assert model_digest(node) == model_digest(root)


def test_a_dense_model_lands_on_the_requested_device_as_a_tensor_of_its_own() -> None:
    theta = start_theta(1_000)
    msg = decode(
        encode(Message("model", "device", 4, "root", {"base_round": -1, "final": False}, {"theta": theta}))
    )
    got = apply_model(None, 0, msg, device=CPU)
    assert got is not None
    assert got.device == CPU
    assert same_bits(got, theta)
    got += 1  # writable: not the read-only frame
    held = torch.zeros(1_000)
    replaced = apply_model(held, 3, msg)
    assert replaced is not None
    assert same_bits(replaced, theta)


# -- the digest ------------------------------------------------------------------------------


def test_the_digest_tells_copies_apart_by_any_coordinate() -> None:
    theta = start_theta(3_000_000)  # more than one pass of the fingerprint
    digest = model_digest(theta)
    assert model_digest(theta.clone()) == digest
    changes: dict[str, Callable[[torch.Tensor], None]] = {
        "first": lambda t: t.__setitem__(0, 1e-45),
        "negative-zero": lambda t: t.__setitem__(150, 0.0),
        "one-ulp-late": lambda t: t.__setitem__(2_999_999, torch.nextafter(t[2_999_999], torch.tensor(9.0))),
        "swap": lambda t: t.__setitem__([500_000, 500_001], t[[500_001, 500_000]]),
        "sign": lambda t: t.__setitem__(2_500_000, -t[2_500_000]),
    }
    for name, change in changes.items():
        changed = theta.clone()
        change(changed)
        assert not same_bits(changed, theta), name
        assert model_digest(changed) != digest, name
    assert model_digest(theta[:-1]) != digest
    assert model_digest(torch.zeros(4)) != model_digest(torch.zeros(5))
