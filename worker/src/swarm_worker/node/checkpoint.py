"""The root's checkpoints: written atomically, so a crash never leaves a half-written file.

Write to a temporary file in the same directory, fsync it, rename it over `latest.pt`, fsync the
directory. A reader sees the old checkpoint or the new one, never a mix. Files are our own (never
network data) and are read back with `weights_only=True`, which refuses arbitrary pickled objects.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import torch

LATEST = "latest.pt"


def save_checkpoint(directory: Path, state: dict[str, Any]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    target = directory / LATEST
    fd, tmp = tempfile.mkstemp(prefix=".latest-", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    return target


def load_checkpoint(directory: Path) -> dict[str, Any] | None:
    """The latest checkpoint's state, or None when there is none yet."""
    target = directory / LATEST
    if not target.exists():
        return None
    state = torch.load(target, map_location="cpu", weights_only=True)
    if not isinstance(state, dict):
        raise ValueError(f"{target}: not a checkpoint")
    return state
