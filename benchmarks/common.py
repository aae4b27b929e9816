"""Shared helpers for the benchmarks: interleaved timing, medians, machine description, result files.

Every `results/<name>.md` is written by its benchmark (`write_result`): title, the command line
that produced it, machine, date, wall time and load average, then the tables. Numbers are never
edited by hand; commentary written by hand goes between the notes markers at the end of the file,
which the command keeps when it rewrites the file.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import re
import shlex
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml

RESULTS = Path(__file__).parent / "results"
NOTES_BEGIN = "<!-- notes: written by hand, kept when the command rewrites this file -->"
NOTES_END = "<!-- /notes -->"
_NOTES = re.compile(re.escape(NOTES_BEGIN) + r"\n?(.*?)\n?" + re.escape(NOTES_END), re.DOTALL)


def interleaved(
    fns: dict[str, Callable[[], object]], repeats: int, warmup: int = 1
) -> dict[str, list[float]]:
    """Seconds per call of each fn, run round-robin so that machine noise hits all of them alike."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return times


def median(xs: Sequence[float]) -> float:
    return statistics.median(xs)


def mean_range(xs: Sequence[float], fmt: str = "{:.1f}") -> str:
    """`mean (min-max)` of a few runs, e.g. seeds; a single run prints as itself."""
    if len(xs) == 1:
        return fmt.format(xs[0])
    return f"{fmt.format(statistics.fmean(xs))} ({fmt.format(min(xs))}-{fmt.format(max(xs))})"


def machine() -> str:
    cpus = os.cpu_count()
    affinity: int | None
    try:
        affinity = len(os.sched_getaffinity(0))
    except AttributeError:  # not on every platform
        affinity = cpus
    return (
        f"{platform.machine()} {platform.processor() or ''} {affinity} usable cores ({cpus} total), "
        f"Linux {platform.release()}, Python {platform.python_version()}, torch {torch.__version__}, "
        f"torch threads {torch.get_num_threads()}"
    ).replace("  ", " ")


def today() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")


def load_average() -> str:
    try:
        return " / ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "n/a"


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


@dataclass(frozen=True)
class Run:
    """What a result file says about the run that wrote it, captured when the benchmark starts."""

    command: str
    date: str
    load_at_start: str
    started: float  # time.monotonic()


def start_run(module: str, argv: Sequence[str] | None = None) -> Run:
    """Call first thing in main(): the reproducing command line (argv defaults to sys.argv[1:])."""
    args = sys.argv[1:] if argv is None else list(argv)
    command = shlex.join([".venv/bin/python", "-m", module, *args])
    return Run(command, today(), load_average(), time.monotonic())


def existing_notes(path: Path) -> str:
    """The hand-written notes of a result file (between the markers), or "" if none."""
    try:
        match = _NOTES.search(path.read_text())
    except FileNotFoundError:
        return ""
    return match.group(1).strip() if match else ""


def write_result(name: str, title: str, run: Run, body: str) -> Path:
    """benchmarks/results/<name>.md: command, machine, date, load, `body`; keeps the notes section."""
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{name}.md"
    notes = existing_notes(path)
    wall = time.monotonic() - run.started
    text = (
        f"# {title}\n\n"
        "<!-- Written by the command below; rerun it to update. Edit only the notes at the end. -->\n\n"
        f"Command: `{run.command}`\n\n"
        f"Machine: {machine()}\n\n"
        f"Date: {run.date}; wall time {wall:.0f} s; load average (1 / 5 / 15 min) {run.load_at_start} "
        f"at the start, {load_average()} at the end (the machine is shared: other jobs add to it).\n\n"
        f"{body.strip()}\n\n"
        f"{NOTES_BEGIN}\n{notes + chr(10) if notes else ''}{NOTES_END}\n"
    )
    path.write_text(text)
    return path


ROOT = Path(__file__).resolve().parents[1]


def swarm_run(
    doc: dict[str, Any], output: Path, wrap: Callable[[list[str]], list[str]] = lambda argv: argv
) -> list[dict[str, Any]]:
    """`swarm run` of the manifest `doc` in `output` (as a subprocess, its argv through `wrap`: a
    network namespace, say), with this checkout's sources; the root's metrics.jsonl lines."""
    output.mkdir(parents=True, exist_ok=True)
    manifest = output / "manifest-in.yaml"
    manifest.write_text(yaml.safe_dump(doc))
    paths = [str(ROOT / "contract" / "src"), str(ROOT / "worker" / "src"), os.environ.get("PYTHONPATH", "")]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in paths if p)}
    argv = [
        sys.executable,
        "-m",
        "swarm_worker.cli",
        "run",
        str(manifest),
        "--output",
        str(output),
        "--quiet",
    ]
    done = subprocess.run(wrap(argv), env=env, capture_output=True, text=True, timeout=1800)
    if done.returncode != 0:
        raise RuntimeError(f"swarm run failed ({done.returncode}): {done.stderr[-2000:]}")
    return [json.loads(x) for x in (output / "metrics.jsonl").read_text().splitlines() if x.strip()]
