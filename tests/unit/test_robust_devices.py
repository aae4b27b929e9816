"""The device paths of the robust rules, checked on the CPU (tests/gpu/test_aggregation_gpu.py runs
them on CUDA): the column-blocked sort used off the CPU equals the CPU kernels for every block size,
and `aggregate` takes weights and a previous aggregate from another device than the updates'."""

from __future__ import annotations

import pytest
import torch

from swarm_worker.maths.robust import _kernels, aggregate


@pytest.mark.parametrize("block_elements", [1, 9, 64, 1 << 25], ids=["one-column", "ragged", "even", "whole"])
@pytest.mark.parametrize(("n", "lo", "hi"), [(7, 3, 3), (8, 3, 4), (9, 2, 6), (5, 0, 4)])
def test_blocked_sort_equals_the_cpu_kernel(
    monkeypatch: pytest.MonkeyPatch, block_elements: int, n: int, lo: int, hi: int
) -> None:
    x = torch.randn(n, 101, generator=torch.Generator().manual_seed(n))
    monkeypatch.setattr(_kernels, "_SORT_BLOCK_ELEMENTS", block_elements)
    got = _kernels.ranked_mean_sorted_blocks(x, lo, hi)
    expected = _kernels.ranked_mean(x, lo, hi)
    for g, e in zip(got, expected, strict=True):
        torch.testing.assert_close(g, e, rtol=1e-6, atol=1e-6)
    ordered = torch.sort(x, dim=0).values
    torch.testing.assert_close(got[0], ordered[lo : hi + 1].mean(0), rtol=1e-6, atol=1e-6)


def test_weights_and_previous_follow_the_updates_device() -> None:
    """Host-side weights and centre are moved to the updates' device (here the same one: the
    call must accept them and give the result the updates' device and dtype)."""
    x = torch.randn(7, 30, generator=torch.Generator().manual_seed(1))
    result = aggregate(
        "centered-clipping",
        x,
        f=1,
        weights=torch.arange(1.0, 8.0),
        previous=torch.zeros(30, dtype=torch.float64),
    )
    assert result.vector.device == x.device
    assert result.vector.dtype == x.dtype
