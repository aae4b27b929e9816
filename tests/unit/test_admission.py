"""The values a child's UPDATE may carry (swarm_worker.node.admission): exactly the forms and dtypes
honest workers and aggregators of the spec send, nothing above robustness.maxUpdateRatio x
max(1, max |θ|); and the per-frame socket limit derived from the model
(protocol.transport.effective_max_message_bytes)."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import torch

from swarm_contract.manifest import load_manifest, parse_spec
from swarm_contract.spec import SwarmSpec
from swarm_worker.maths.compression import VALUE_DTYPES, ErrorFeedbackCompressor, SparseVector, to_wire
from swarm_worker.node.admission import ChildUpdate, DropReason, check_update, value_rules
from swarm_worker.protocol.codec import MAX_HEADER_BYTES, Message, Payload
from swarm_worker.protocol.transport import effective_max_message_bytes, encode_message
from swarm_worker.training.shards import honest_trainer
from swarm_worker.training.steps import flat_parameters
from swarm_worker.training.tasks import build_task, initial_model

NUMEL = 64
ROOT_DIR = Path(__file__).resolve().parents[2]


def _spec(**compression: Any) -> SwarmSpec:
    return parse_spec({"workers": {"replicas": 4}, "compression": compression})


def _sparse(values: list[float], dtype: torch.dtype) -> SparseVector:
    indices = torch.arange(len(values), dtype=torch.int32) * 3
    return SparseVector(indices, torch.tensor(values).to(dtype), NUMEL)


def _dense(value: float, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return torch.full((NUMEL,), value).to(dtype)


def _message(payload: Payload, workers: int = 1) -> Message:
    meta = {"samples": 10, "workers": workers, "loss": 0.5, "nodes": [], "traffic": []}
    return Message("update", "job", 3, "child", meta, {"delta": payload})


def _check(spec: SwarmSpec, role: str, payload: Payload, theta: torch.Tensor) -> ChildUpdate | DropReason:
    workers = 1 if role == "worker" else 4
    return check_update(_message(payload, workers), NUMEL, None, workers, value_rules(spec, role, theta))


F16, BF16, F32 = torch.float16, torch.bfloat16, torch.float32
TOPK = {"method": "topk", "valueDtype": "float16"}
TOPK_BF16 = {"method": "topk", "valueDtype": "bfloat16"}
DENSE = {"method": "none"}

# (id, compression, child role, payload, expected): None is accepted.
DTYPE_CASES: list[tuple[str, dict[str, Any], str, Payload, DropReason | None]] = [
    ("worker-topk-sparse-f16", TOPK, "worker", _sparse([0.5, -0.25], F16), None),
    ("worker-topk-sparse-f32", TOPK, "worker", _sparse([0.5, -0.25], F32), DropReason.DTYPE),
    ("worker-topk-sparse-bf16", TOPK, "worker", _sparse([0.5, -0.25], BF16), DropReason.DTYPE),
    ("worker-topk-dense-f32", TOPK, "worker", _dense(0.5), DropReason.DTYPE),  # never compressed
    ("worker-topk-dense-f16", TOPK, "worker", _dense(0.5, F16), DropReason.DTYPE),
    ("worker-bf16-sparse-bf16", TOPK_BF16, "worker", _sparse([0.5], BF16), None),
    ("worker-bf16-sparse-f16", TOPK_BF16, "worker", _sparse([0.5], F16), DropReason.DTYPE),
    ("worker-none-dense-f32", DENSE, "worker", _dense(0.5), None),
    ("worker-none-dense-f16", DENSE, "worker", _dense(0.5, F16), DropReason.DTYPE),
    ("worker-none-sparse-f32", DENSE, "worker", _sparse([0.5], F32), DropReason.DTYPE),
    ("aggregator-topk-sparse-f16", TOPK, "aggregator", _sparse([0.5, -0.25], F16), None),
    ("aggregator-topk-dense-f32", TOPK, "aggregator", _dense(0.5), None),  # to_wire: mostly nonzero
    ("aggregator-topk-dense-f16", TOPK, "aggregator", _dense(0.5, F16), DropReason.DTYPE),
    ("aggregator-topk-sparse-f32", TOPK, "aggregator", _sparse([0.5], F32), DropReason.DTYPE),
    ("aggregator-none-sparse-f32", DENSE, "aggregator", _sparse([0.5], F32), None),
    ("aggregator-none-dense-f32", DENSE, "aggregator", _dense(0.5), None),
    ("aggregator-none-sparse-f16", DENSE, "aggregator", _sparse([0.5], F16), DropReason.DTYPE),
]


@pytest.mark.parametrize(
    ("compression", "role", "payload", "expected"),
    [c[1:] for c in DTYPE_CASES],
    ids=[c[0] for c in DTYPE_CASES],
)
def test_only_the_forms_honest_children_send_are_accepted(
    compression: dict[str, Any], role: str, payload: Payload, expected: DropReason | None
) -> None:
    got = _check(_spec(**compression), role, payload, torch.zeros(NUMEL))
    if expected is None:
        assert isinstance(got, ChildUpdate)
        assert got.vector.dtype == torch.float32
        assert got.vector.shape == (NUMEL,)
    else:
        assert got == expected


def _theta(largest: float) -> torch.Tensor:
    theta = torch.linspace(-0.1, 0.1, NUMEL)
    theta[5] = largest
    return theta


def _payload_max(payload: Payload) -> torch.Tensor:
    values = payload.values if isinstance(payload, SparseVector) else payload
    return values.abs().max().to(torch.float32)


# (id, max |θ|, child role, payload, expected). Default ratio 50: the bound is 50 x max(1, max |θ|).
MAGNITUDE_CASES: list[tuple[str, float, str, Payload, DropReason | None]] = [
    ("under-bound-small-theta", 0.5, "worker", _sparse([49.96875, -1.0], F16), None),
    ("at-bound-small-theta", 0.5, "worker", _sparse([-50.0], F16), None),
    ("over-bound-small-theta", 0.5, "worker", _sparse([1.0, 50.03125], F16), DropReason.MAGNITUDE),
    ("negative-over-bound", 0.5, "worker", _sparse([-50.03125], F16), DropReason.MAGNITUDE),
    ("float16-max", 1.0, "worker", _sparse([65504.0], F16), DropReason.MAGNITUDE),
    ("under-bound-large-theta", -4.0, "worker", _sparse([199.875], F16), None),  # bound 200
    ("over-bound-large-theta", -4.0, "worker", _sparse([200.125], F16), DropReason.MAGNITUDE),
    ("aggregator-dense-under", 2.0, "aggregator", _dense(99.99), None),
    ("aggregator-dense-huge", 2.0, "aggregator", _dense(1e30), DropReason.MAGNITUDE),
    ("aggregator-sparse-over", 2.0, "aggregator", _sparse([100.0625], F16), DropReason.MAGNITUDE),
]


@pytest.mark.parametrize(
    ("largest", "role", "payload", "expected"),
    [c[1:] for c in MAGNITUDE_CASES],
    ids=[c[0] for c in MAGNITUDE_CASES],
)
def test_values_above_the_bound_are_dropped(
    largest: float, role: str, payload: Payload, expected: DropReason | None
) -> None:
    spec = _spec(**TOPK)
    assert spec.robustness.max_update_ratio == 50.0
    got = _check(spec, role, payload, _theta(largest))
    if expected is None:
        assert isinstance(got, ChildUpdate)
        torch.testing.assert_close(got.vector.abs().max(), _payload_max(payload))
    else:
        assert got == expected


def test_the_bound_follows_the_spec_ratio() -> None:
    spec = parse_spec({"workers": {"replicas": 4}, "robustness": {"maxUpdateRatio": 2.0}})
    theta = _theta(0.5)
    assert _check(spec, "worker", _sparse([1.99], F16), theta) != DropReason.MAGNITUDE
    assert _check(spec, "worker", _sparse([2.01], F16), theta) == DropReason.MAGNITUDE


def test_shape_and_support_are_judged_before_the_values() -> None:
    spec = _spec(**TOPK)
    rules = value_rules(spec, "worker", torch.zeros(NUMEL))
    wrong_length = SparseVector(torch.tensor([0], dtype=torch.int32), torch.tensor([1e4]), NUMEL + 1)
    assert check_update(_message(wrong_length), NUMEL, None, 1, rules) == DropReason.SHAPE
    off_support = _sparse([1e4, 1e4], F32)  # indices 0 and 3
    support = torch.tensor([0, 1])
    assert check_update(_message(off_support), NUMEL, support, 1, rules) == DropReason.SUPPORT


@pytest.mark.parametrize("example", ["digits.yaml", "robust.yaml"])
def test_honest_updates_of_the_examples_pass_with_a_wide_margin(example: str) -> None:
    """Two honest workers' first-round updates, compressed as roles/worker.py does, and their mean
    forwarded as roles/aggregator.py does (to_wire), enter the round; the largest value is far
    below the bound (the spec field documents whole runs: at most 0.36 x max(1, max |θ|))."""
    spec = load_manifest(ROOT_DIR / "examples" / example).spec
    bundle = build_task(spec.task.name, spec.task.options, spec.training.seed)
    model = initial_model(bundle, spec.training.seed)
    theta = flat_parameters(model)
    numel, comp = theta.numel(), spec.compression
    sent = []
    for rank in (0, 1):
        delta = honest_trainer(spec, bundle, copy.deepcopy(model), rank).run_round(theta).delta
        compressor = ErrorFeedbackCompressor(
            numel, ratio=comp.ratio, value_dtype=VALUE_DTYPES[comp.value_dtype], seed=rank
        )
        sparse = compressor.compress(delta)
        rules = value_rules(spec, "worker", theta)
        got = check_update(_message(sparse), numel, None, 1, rules)
        assert isinstance(got, ChildUpdate)
        assert float(sparse.values.abs().max()) < rules.max_abs / 100
        sent.append(got.vector)
    forwarded = to_wire(torch.stack(sent).mean(0), VALUE_DTYPES[comp.value_dtype])
    rules = value_rules(spec, "aggregator", theta)
    assert isinstance(check_update(_message(forwarded, 2), numel, None, 2, rules), ChildUpdate)


MIB = 1 << 20
# (id, network.maxMessageBytes, numel, expected limit)
MAX_BYTES_CASES = [
    ("derived-digits", None, 9_610, 4 * 4 * 9_610 + MAX_HEADER_BYTES),
    ("derived-mnist1d", None, 4_300_000, 4 * 4 * 4_300_000 + MAX_HEADER_BYTES),
    ("derived-tiny", None, 1, 16 + MAX_HEADER_BYTES),
    ("explicit-kept", 2_048, 9_610, 2_048),
    ("explicit-large-kept", 1 << 30, 10, 1 << 30),
]


@pytest.mark.parametrize(
    ("explicit", "numel", "expected"), [c[1:] for c in MAX_BYTES_CASES], ids=[c[0] for c in MAX_BYTES_CASES]
)
def test_effective_max_message_bytes(explicit: int | None, numel: int, expected: int) -> None:
    network = {} if explicit is None else {"maxMessageBytes": explicit}
    spec = parse_spec({"network": network})
    assert spec.network.max_message_bytes == explicit
    assert effective_max_message_bytes(spec, numel) == expected


def test_the_derived_limit_carries_the_largest_honest_frames() -> None:
    """A dense fp32 model and a header at the codec's cap both fit under the derived limit."""
    numel = 9_610
    limit = effective_max_message_bytes(parse_spec({}), numel)
    model = Message(
        "model", "job", 1, "root", {"base_round": -1, "final": False}, {"theta": torch.ones(numel)}
    )
    frames = encode_message(model).frames
    assert max(len(f) if isinstance(f, bytes) else f.nbytes for f in frames) <= limit
    assert MAX_HEADER_BYTES < limit < 5 * MIB
