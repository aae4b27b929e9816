"""Common support: every node derives the same S_0, votes pick S_{r+1}, malformed supports are refused."""

from __future__ import annotations

import torch

from swarm_worker.maths.compression import VALUE_DTYPES, ErrorFeedbackCompressor, SparseVector
from swarm_worker.maths.support import initial_support, merge_votes, next_support, on_support, valid_support


def test_initial_support_is_the_same_everywhere_and_well_formed() -> None:
    a, b = initial_support(1000, 10, seed=3), initial_support(1000, 10, seed=3)
    assert torch.equal(a, b)
    assert valid_support(a.to(torch.int32), 1000, 10) is not None
    assert not torch.equal(a, initial_support(1000, 10, seed=4))


def test_the_most_voted_coordinates_become_the_next_support() -> None:
    votes = [
        SparseVector(torch.tensor([1, 2, 3], dtype=torch.int32), torch.ones(3, dtype=torch.float16), 100),
        SparseVector(torch.tensor([2, 3, 9], dtype=torch.int32), torch.ones(3, dtype=torch.float16), 100),
        SparseVector(torch.tensor([3, 50, 60], dtype=torch.int32), torch.ones(3, dtype=torch.float16), 100),
    ]
    merged = merge_votes(votes, 100, k=2)
    assert merged is not None
    assert merged.indices.tolist() == [2, 3]
    assert merged.values.tolist() == [2.0, 3.0]
    support = next_support(merge_votes(votes, 100, k=3), 100, 3, seed=0, round_index=1)
    assert support[:2].tolist() == [2, 3] or set(support.tolist()) >= {2, 3}
    assert len(support) == 3


def test_a_short_vote_is_filled_with_seeded_coordinates() -> None:
    one = SparseVector(torch.tensor([7], dtype=torch.int32), torch.ones(1), 100)
    support = next_support(one, 100, 5, seed=1, round_index=2)
    assert 7 in support.tolist()
    assert torch.equal(support, next_support(one, 100, 5, seed=1, round_index=2))


def test_malformed_supports_are_refused() -> None:
    good = torch.tensor([1, 4, 9], dtype=torch.int32)
    assert valid_support(good, 10, 3) is not None
    assert valid_support(good, 9, 3) is None  # out of range
    assert valid_support(torch.tensor([4, 1, 9], dtype=torch.int32), 10, 3) is None  # not ascending
    assert valid_support(good.float(), 10, 3) is None
    assert valid_support(good, 10, 4) is None
    assert valid_support(None, 10, 3) is None


def test_compressing_on_the_support_keeps_error_feedback_exact() -> None:
    comp = ErrorFeedbackCompressor(50, ratio=0.1, value_dtype=VALUE_DTYPES["float16"], selector="exact")
    update = torch.randn(50)
    support = torch.tensor([0, 5, 10, 20, 30])
    sent, votes = comp.compress_on_support(update, support)
    assert torch.equal(sent.indices.long(), support)
    assert on_support(sent, support)
    torch.testing.assert_close(sent.to_dense() + comp.residual, update, rtol=0, atol=0)
    assert votes.indices.numel() == comp.k
    assert not bool(torch.isin(votes.indices.long(), support).any()), "votes go where it still owes"
