"""A real `swarm run` of two workers sharing one GPU (`workers.resources.gpus: 0.5`), and what it
leaves behind: the launcher's placement line, each worker's trained rounds and each node's exit line
(node/peak_memory.py). Used by tests/gpu/test_fractional.py on a GPU and, with `workers.device: auto`
and a pretend GPU (CUDA_VISIBLE_DEVICES=0 where there is none), by tests/integration on CPU."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from swarm_worker.node.peak_memory import parse_peak_line

ROOT = Path(__file__).resolve().parents[2]
ROUNDS = 3
WORKERS = ("worker-0", "worker-1")
#: `swarm run`'s header line for the two workers placed on one GPU (local/placement.py `describe`).
PLACED = re.compile(r"^GPUs: GPU (?P<gpu>\S+): worker-0 \(0\.5\), worker-1 \(0\.5\)$", re.MULTILINE)
#: A worker's line for each round it trains (roles/worker.py).
TRAINED = re.compile(r"\b(?P<node>worker-\d+): round (?P<round>\d+): loss ")


def manifest(device: str) -> str:
    """Two digits workers under the root, both with half a GPU; a generous deadline so CUDA start-up
    never costs a round."""
    return f"""apiVersion: swarm.ncrsh.io/v1alpha1
kind: SwarmTraining
metadata:
  name: fractional
spec:
  workers:
    replicas: 2
    device: {device}
    resources: {{gpus: 0.5}}
  topology: {{branchingFactor: 2}}
  task: {{name: digits}}
  training:
    rounds: {ROUNDS}
    syncEvery: 10
    roundDeadlineSeconds: 60
  compression: {{method: topk, ratio: 0.1}}
"""


@dataclass(frozen=True)
class SharedRun:
    returncode: int
    output: str
    #: The GPU both workers were placed on, from the header line; None without the line.
    gpu: str | None
    #: Rounds each worker trained.
    rounds: dict[str, set[int]]
    #: Each node's exit-line fields (parse_peak_line), None for a node that logged none.
    peaks: dict[str, dict[str, str | None] | None]


def run_shared_swarm(tmp_path: Path, device: str, env: dict[str, str] | None = None) -> SharedRun:
    path = tmp_path / "fractional.yaml"
    path.write_text(manifest(device))
    out = tmp_path / "out"
    sources = [str(ROOT / "contract" / "src"), str(ROOT / "worker" / "src")]
    pythonpath = os.pathsep.join([*sources, os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    proc = subprocess.run(
        [sys.executable, "-m", "swarm_worker.cli", "run", str(path), "--output", str(out), "--quiet"],
        capture_output=True,
        text=True,
        timeout=150,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": pythonpath, **(env or {})},
    )
    placed = PLACED.search(proc.stdout)
    rounds: dict[str, set[int]] = {}
    peaks: dict[str, dict[str, str | None] | None] = {}
    for log in sorted((out / "logs").glob("*.log")) if (out / "logs").is_dir() else []:
        text = log.read_text()
        node = log.stem
        peaks[node] = parse_peak_line(text)
        if node in WORKERS:
            rounds[node] = {int(m["round"]) for m in TRAINED.finditer(text) if m["node"] == node}
    return SharedRun(
        proc.returncode, proc.stdout + proc.stderr, placed["gpu"] if placed else None, rounds, peaks
    )
