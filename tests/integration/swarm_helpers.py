"""Shared helpers of the integration tests: manifests with overrides, a swarm run in a thread, what a
run leaves behind (the workers' per-round log lines) and a node's Prometheus metrics."""

from __future__ import annotations

import copy
import re
import threading
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from swarm_contract.manifest import Manifest, parse_manifest
from swarm_worker.local.launcher import LocalSwarm
from tests.polling import poll

ROOT = Path(__file__).resolve().parents[2]


def merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def manifest(example: str = "digits.yaml", **spec_override: Any) -> Manifest:
    doc = yaml.safe_load((ROOT / "examples" / example).read_text())
    doc["spec"] = merge(doc["spec"], spec_override)
    return parse_manifest(doc)


class SwarmThread:
    """`LocalSwarm.run` in a thread, so a test can inject faults while it runs."""

    def __init__(self, m: Manifest, output: Path, timeout: float = 400) -> None:
        self.swarm = LocalSwarm(m, output)
        self.result: dict[str, Any] | None = None
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(timeout,), daemon=True)

    def _run(self, timeout: float) -> None:
        try:
            self.result = self.swarm.run(timeout=timeout)
        except BaseException as e:  # reported by join()
            self.error = e

    def start(self) -> SwarmThread:
        self._thread.start()
        return self

    def running(self) -> bool:
        return self._thread.is_alive()

    def committed_rounds(self) -> int:
        """Rounds the root has committed so far (the last line of its metrics.jsonl)."""
        lines = self.swarm.metrics_lines()
        return int(lines[-1]["round"]) if lines else 0

    def wait_for_round(self, round_index: int, timeout: float = 300) -> None:
        def reached() -> bool:
            if self.committed_rounds() >= round_index:
                return True
            if not self.running():
                raise AssertionError(f"the swarm ended before round {round_index}: {self.error!r}")
            return False

        poll(f"round {round_index}", reached, timeout=timeout)

    def join(self, timeout: float = 420) -> dict[str, Any]:
        self._thread.join(timeout)
        if self._thread.is_alive():
            self.swarm.stop()
            raise AssertionError("the swarm did not finish")
        if self.error is not None:
            raise self.error
        assert self.result is not None
        return self.result


#: A worker's line for each round it trains (roles/worker.py), e.g.
#: `worker-3: round 4: loss 0.2656, 1600 samples in 0.07 s, update 781 bytes, model 0298ed5d9cefd54d`.
WORKER_ROUND = re.compile(
    r"\b(?P<node>worker-\d+): round (?P<round>\d+): loss .*, model (?P<digest>[0-9a-f]{16})$"
)


@dataclass(frozen=True)
class TrainedRound:
    round: int
    #: `model_digest` of θ_round, the model the worker trained this round from.
    digest: str


def trained_rounds(output: Path, node_id: str) -> list[TrainedRound]:
    """Every round `node_id` trained, in log order, over all its incarnations (a restarted process
    appends to the same log, and starts again from round 0)."""
    out = []
    for line in (output / "logs" / f"{node_id}.log").read_text().splitlines():
        m = WORKER_ROUND.search(line)
        if m is not None and m["node"] == node_id:
            out.append(TrainedRound(int(m["round"]), m["digest"]))
    return out


def digest_mismatches(trained: dict[str, list[TrainedRound]], root: dict[int, str]) -> list[str]:
    """Each round a worker trained from a θ other than the one the root committed (`root`: round ->
    the root's `modelDigest`); round 0 is θ_0, which every node builds and the root never logs."""
    return [
        f"{w} round {t.round}: {t.digest}, root {root[t.round]}"
        for w, rounds in trained.items()
        for t in rounds
        if t.round >= 1 and t.digest != root[t.round]
    ]


def metric_samples(port: int, family: str, host: str = "127.0.0.1") -> list[Sample]:
    """The samples of one metric family on a node's /metrics (raises OSError while it is not serving)."""
    with urllib.request.urlopen(f"http://{host}:{port}/metrics", timeout=5) as r:
        text = r.read().decode()
    return [s for f in text_string_to_metric_families(text) if f.name == family for s in f.samples]
