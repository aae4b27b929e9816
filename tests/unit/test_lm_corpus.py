"""The `lm` corpus: which files, the deterministic split by file, the byte budget, the windows."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from swarm_worker.training.corpus import (
    is_validation,
    read_corpus,
    source_files,
    spread_subset,
    stdlib_dir,
    windows,
)
from swarm_worker.training.tasks import shard_indices


def make_tree(root: Path, files: dict[str, bytes]) -> None:
    for rel, data in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)


def test_sources_skip_third_party_bytecode_and_tests(tmp_path: Path) -> None:
    make_tree(
        tmp_path,
        {
            "os.py": b"a",
            "json/decoder.py": b"b",
            "json/README": b"not python",
            "site-packages/torch/x.py": b"c",
            "dist-packages/y.py": b"d",
            "test/test_os.py": b"e",
            "unittest/test/test_case.py": b"f",
            "idlelib/idle_test/t.py": b"g",
            "__pycache__/os.py": b"h",
        },
    )
    assert source_files(tmp_path) == ["json/decoder.py", "os.py"]


def test_the_running_stdlib_is_a_corpus() -> None:
    files = source_files(stdlib_dir())
    assert "os.py" in files
    assert "json/decoder.py" in files
    assert not any(part in {"site-packages", "test"} for f in files for part in f.split("/"))


def test_split_is_by_file_disjoint_and_the_same_every_time() -> None:
    a = read_corpus(stdlib_dir(), 1_000_000, 0.1)
    b = read_corpus(stdlib_dir(), 1_000_000, 0.1)
    assert a == b
    assert not set(a.train_files) & set(a.validation_files)
    assert all(is_validation(f, 0.1) for f in a.validation_files)
    assert not any(is_validation(f, 0.1) for f in a.train_files)
    assert len(a.train) + len(a.validation) == 1_000_000
    # about a tenth of the files are held out (binomial: 0.1 ± 3 sigma for this many files)
    share = len(a.validation_files) / (len(a.train_files) + len(a.validation_files))
    assert 0.02 < share < 0.25


def test_a_larger_budget_extends_the_same_files(tmp_path: Path) -> None:
    make_tree(tmp_path, {f"m{i}.py": bytes([i]) * 100 for i in range(40)})
    small, large = read_corpus(tmp_path, 1_050, 0.3), read_corpus(tmp_path, 3_000, 0.3)
    order = small.train_files + small.validation_files
    assert len(small.train) + len(small.validation) == 1_050  # 10 whole files and half of the 11th
    assert len(order) == 11
    # the same files come first, in the same order (the 11th one cut), in both splits
    assert large.train_files[: len(small.train_files)] == small.train_files
    assert large.validation_files[: len(small.validation_files)] == small.validation_files
    assert large.train.startswith(small.train)
    assert large.validation.startswith(small.validation)


def test_an_empty_directory_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"no \.py sources"):
        read_corpus(tmp_path, 100, 0.1)


def test_windows_predict_the_next_byte() -> None:
    x, y = windows(bytes(range(10)), 3)
    assert x.dtype == torch.uint8
    assert x.shape == y.shape == (3, 3)
    assert x.tolist() == [[0, 1, 2], [3, 4, 5], [6, 7, 8]]
    assert y.tolist() == [[1, 2, 3], [4, 5, 6], [7, 8, 9]]
    with pytest.raises(ValueError, match="no window"):
        windows(b"abc", 3)


def test_the_validation_subset_is_spread_and_fixed() -> None:
    assert spread_subset(10, 4).tolist() == [0, 3, 6, 9]
    assert spread_subset(3, 5).tolist() == [0, 1, 2]


def test_windows_are_dealt_to_workers_but_not_by_class() -> None:
    y = torch.zeros(12, 4, dtype=torch.uint8)
    shards = [shard_indices(y, 3, r, partition="iid", alpha=1.0, seed=0) for r in range(3)]
    assert sorted(torch.cat(shards).tolist()) == list(range(12))
    with pytest.raises(ValueError, match="needs one class label per example"):
        shard_indices(y, 3, 0, partition="dirichlet", alpha=1.0, seed=0)
