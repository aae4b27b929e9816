"""The language-model task's corpus: the Python standard library's own `.py` sources, as bytes.

Every machine that runs a worker has a Python interpreter, so this corpus is there offline: on a
laptop, in CI and in the worker image (Debian's python3 ships the stdlib sources under
/usr/lib/python3.X, which is what `sysconfig.get_paths()["stdlib"]` names, also inside a venv).

How the bytes are chosen, deterministically from the file names alone:
- files: every `*.py` under the stdlib directory, skipping `site-packages`, `dist-packages`,
  `__pycache__` and test directories (`test`, `tests`, `idle_test`: Debian ships them in a separate
  package, so skipping them keeps the corpus the same on interpreters installed either way);
- order: by SHA-256 of the relative path (salted "order:"), a fixed shuffle, so that a budget of a
  few MB samples the whole library rather than the modules whose names sort first;
- budget: whole files in that order until `budget` bytes, the last one cut to fit;
- split: a file is validation when SHA-256 of its path (salted "split:") falls in the lowest
  `validation_fraction` of the hash range; no file is in both splits, so validation text is unseen.

The corpus, and so every loss figure measured on it, depends on the Python version (3.11's stdlib
differs from 3.12's). All processes of one swarm run the same interpreter (one image, or one
`swarm run`), so they all see the same bytes; figures compare only within one Python version.

Windows: a split of L bytes is cut into n = (L - 1) // T non-overlapping windows of T bytes;
window i is x = bytes[iT : iT + T] and its target y = bytes[iT + 1 : iT + T + 1] (the next byte of
every position). Both are uint8 (n, T) views of one buffer: 2 bytes of storage per token, not 16;
the model converts a batch to int64 indices.
"""

from __future__ import annotations

import hashlib
import os
import sysconfig
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

#: Directory names never descended into (third-party packages, bytecode, the test suites).
SKIPPED_DIRS = frozenset({"site-packages", "dist-packages", "__pycache__", "test", "tests", "idle_test"})


def stdlib_dir() -> Path:
    """The running interpreter's standard library (the base install's, also inside a venv)."""
    return Path(sysconfig.get_paths()["stdlib"])


def _digest(salt: str, relative: str) -> int:
    """A stable 64-bit number for a path: the same on every machine, unlike hash()."""
    return int.from_bytes(hashlib.sha256(f"{salt}:{relative}".encode()).digest()[:8], "big")


def source_files(root: Path) -> list[str]:
    """Relative POSIX paths of the `.py` files under `root`, sorted, skipping SKIPPED_DIRS."""
    found: list[str] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if d not in SKIPPED_DIRS]
        base = Path(dirpath).relative_to(root)
        found += [(base / name).as_posix() for name in filenames if name.endswith(".py")]
    return sorted(found)


def is_validation(relative: str, validation_fraction: float) -> bool:
    return _digest("split", relative) < validation_fraction * 2**64


@dataclass(frozen=True)
class Corpus:
    """The bytes of both splits and the files they came from (relative paths, in reading order)."""

    train: bytes
    validation: bytes
    train_files: tuple[str, ...]
    validation_files: tuple[str, ...]


def read_corpus(root: Path, budget: int, validation_fraction: float) -> Corpus:
    """Up to `budget` bytes of the sources under `root`, split by file (see the module docstring)."""
    if budget < 1:
        raise ValueError(f"corpusBytes must be >= 1, got {budget}")
    if not 0 < validation_fraction < 1:
        raise ValueError(f"validationFraction must lie in (0, 1), got {validation_fraction}")
    files = sorted(source_files(root), key=lambda rel: _digest("order", rel))
    if not files:
        raise ValueError(f"no .py sources under {root}: the corpus needs the Python standard library")
    parts: dict[bool, list[bytes]] = {False: [], True: []}
    names: dict[bool, list[str]] = {False: [], True: []}
    left = budget
    for rel in files:
        if left <= 0:
            break
        try:
            data = (root / rel).read_bytes()[:left]
        except OSError as e:
            raise ValueError(f"cannot read corpus file {root / rel}: {e}") from e
        held_out = is_validation(rel, validation_fraction)
        parts[held_out].append(data)
        names[held_out].append(rel)
        left -= len(data)
    return Corpus(
        train=b"".join(parts[False]),
        validation=b"".join(parts[True]),
        train_files=tuple(names[False]),
        validation_files=tuple(names[True]),
    )


def windows(data: bytes, context: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(x, y), each (n, context) uint8: non-overlapping windows and their next-byte targets."""
    if context < 1:
        raise ValueError(f"context must be >= 1, got {context}")
    n = (len(data) - 1) // context
    if n < 1:
        raise ValueError(f"{len(data)} bytes hold no window of {context} + 1 bytes")
    buffer = torch.from_numpy(np.frombuffer(bytearray(data), dtype=np.uint8))
    x = buffer[: n * context].view(n, context)
    y = buffer[1 : n * context + 1].view(n, context)  # the same storage, shifted by one byte
    return x, y


def spread_subset(n: int, count: int) -> torch.Tensor:
    """`count` indices spread evenly over range(n) (all of them when count >= n), ascending."""
    if count >= n:
        return torch.arange(n)
    return torch.from_numpy(np.linspace(0, n - 1, count).round().astype(np.int64))
