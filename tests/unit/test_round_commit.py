"""The root's commit (consensus.outcome.apply_change) keeps every copy of θ bit-identical: the root adds
exactly the rounded values it sends, and a child applying the message (node.model_sync) gets the
same bits. Run on the CPU here; tests/gpu/test_aggregation_gpu.py runs the root's side on CUDA."""

from __future__ import annotations

import pytest
import torch

from swarm_worker.consensus.outcome import apply_change
from swarm_worker.maths.compression import SparseVector
from swarm_worker.node.model_sync import apply_model
from swarm_worker.protocol.codec import Message

D = 1000


def _change(nonzero: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(nonzero)
    change = torch.zeros(D)
    where = torch.randperm(D, generator=generator)[:nonzero]
    change[where] = torch.randn(nonzero, generator=generator) * 1e-3
    return change


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32], ids=str)
def test_the_child_applying_the_delta_holds_the_roots_bits(dtype: torch.dtype) -> None:
    theta = torch.randn(D, generator=torch.Generator().manual_seed(0))
    child = theta.clone()
    change = _change(50)
    root, wire = apply_change(theta.clone(), change, dtype, delta=True)
    assert isinstance(wire, SparseVector)
    assert wire.values.dtype == dtype
    assert wire.values.device.type == "cpu"
    message = Message("model", "job", 1, "root", {"base_round": 0, "final": False}, {"theta": wire})
    child_theta = apply_model(child, 0, message)
    assert child_theta is not None
    assert torch.equal(child_theta.view(torch.int32), root.view(torch.int32))
    # What θ changed by is the fp32 change rounded to the wire dtype (up to the rounding of θ + v).
    torch.testing.assert_close(root - theta, change.to(dtype).float(), rtol=0, atol=1e-6)


def test_a_nearly_dense_change_is_sent_as_the_dense_model() -> None:
    theta = torch.zeros(D)
    root, wire = apply_change(theta, _change(D // 2 + 1), torch.float16, delta=True)
    assert wire is None
    torch.testing.assert_close(root, _change(D // 2 + 1))
    _, dense = apply_change(theta, _change(5), torch.float16, delta=False)
    assert dense is None
