"""The fractional-GPU checks of tests/gpu/test_fractional.py on a machine without a GPU: `swarm run`
places two `gpus: 0.5` workers on one pretend GPU (CUDA_VISIBLE_DEVICES=0; `device: auto` then
trains on CPU), both train and every node logs its exit line; the two share probes complete their
handshake (nothing caps CPU memory, so the over-share allocation succeeds here)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.gpu.share_probe import run_probes
from tests.gpu.shared_swarm import ROUNDS, WORKERS, run_shared_swarm

pytestmark = pytest.mark.integration


def test_two_half_gpu_workers_are_placed_together_and_train(tmp_path: Path) -> None:
    run = run_shared_swarm(tmp_path, "auto", env={"CUDA_VISIBLE_DEVICES": "0"})
    assert run.returncode == 0, run.output[-4000:]
    assert run.gpu == "0", run.output[-4000:]
    for worker in WORKERS:
        assert len(run.rounds[worker]) >= ROUNDS, (worker, run.rounds)
    assert set(run.peaks) == {"root", *WORKERS}
    for node, peak in run.peaks.items():
        assert peak is not None, node
        assert peak["device"] is None, (node, peak)
        assert int(peak["rss"] or 0) > 0, (node, peak)


def test_share_probes_on_cpu(tmp_path: Path) -> None:
    probes = run_probes(tmp_path, "cpu")
    assert probes["greedy"][0]["oom"] is False
    assert probes["steady"][0]["value"] == 16.0
