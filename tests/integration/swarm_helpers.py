"""Shared helpers of the integration tests: manifests with overrides, a swarm run in a thread."""

from __future__ import annotations

import copy
import threading
import time
from pathlib import Path
from typing import Any

import yaml

from swarm_contract.spec import Manifest, parse_manifest
from swarm_worker.local.launcher import LocalSwarm

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

    def wait_for_round(self, round_index: int, timeout: float = 300) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            lines = self.swarm.metrics_lines()
            if lines and lines[-1]["round"] >= round_index:
                return
            if not self._thread.is_alive():
                raise AssertionError(f"the swarm ended before round {round_index}: {self.error!r}")
            time.sleep(0.1)
        raise AssertionError(f"no round {round_index} within {timeout} s")

    def join(self, timeout: float = 420) -> dict[str, Any]:
        self._thread.join(timeout)
        if self._thread.is_alive():
            self.swarm.stop()
            raise AssertionError("the swarm did not finish")
        if self.error is not None:
            raise self.error
        assert self.result is not None
        return self.result
