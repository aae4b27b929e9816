"""Fractional GPUs for real (docs/gpu.md): two workers with `gpus: 0.5` share one device in a real
`swarm run`, both train, and each keeps to its half of the memory; a process that asks for more
than its share gets an OutOfMemoryError while its neighbour carries on.

    PYTHONPATH=contract/src:worker/src python3 -m pytest --noconftest -q tests/gpu/test_fractional.py

About 30 s on an H200 (three short processes start torch and CUDA). The same steps run on CPU in
tests/integration/test_gpu_sharing_on_cpu.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.gpu.share_probe import OVER_SHARE, run_probes
from tests.gpu.shared_swarm import ROUNDS, WORKERS, run_shared_swarm

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="no GPU")]


def test_two_workers_share_one_gpu_each_within_its_half(tmp_path: Path) -> None:
    run = run_shared_swarm(tmp_path, "cuda")
    assert run.returncode == 0, run.output[-4000:]
    assert run.gpu is not None, run.output[-4000:]  # both placed on one GPU, 0.5 each
    for worker in WORKERS:
        assert len(run.rounds[worker]) >= ROUNDS, (worker, run.rounds)
        peak = run.peaks[worker]
        assert peak is not None, worker
        assert peak["device"] == "cuda:0", (worker, peak)
        assert float(peak["fraction"] or 0) == 0.5, peak  # node/device.py applied the cap
        reserved, cap, total = (int(peak[k] or 0) for k in ("reserved", "cap", "total"))
        assert 0 < reserved <= cap <= total / 2 + 1, peak
    root = run.peaks["root"]
    assert root is not None
    assert root["device"] is None  # aggregation stays on CPU without aggregatorResources


def test_over_its_share_a_process_fails_alone(tmp_path: Path) -> None:
    probes = run_probes(tmp_path, "cuda")
    greedy, greedy_peak = probes["greedy"]
    steady, steady_peak = probes["steady"]
    assert greedy["wanted"] == int(OVER_SHARE * greedy["total"])
    assert greedy["oom"] is True, greedy
    # The device had the room: the process's cap refused it, not the GPU.
    assert greedy["free"] > greedy["wanted"], greedy
    assert int(greedy_peak["reserved"] or 0) <= int(greedy_peak["cap"] or 0), greedy_peak
    assert steady["value"] == 16.0, steady  # the neighbour kept computing on what it holds
    assert float(steady_peak["fraction"] or 0) == 0.5, steady_peak
