"""The exit line of every `swarm node` (node/peak_memory.py): its format, which benchmarks and
tests/gpu parse, and what a CPU process reports."""

from __future__ import annotations

import pytest

from swarm_worker.node.peak_memory import (
    MIB,
    GpuPeak,
    format_peak_line,
    parse_peak_line,
    peak_memory_line,
)

H200 = 150_754_820_096  # bytes, as torch reports an H200's total memory


@pytest.mark.parametrize(
    ("gpu", "line"),
    [
        (None, "swarm node worker-0: peak RSS 412 MiB"),
        (
            GpuPeak(device=0, allocated=802 * MIB + 5, reserved=1024 * MIB, total=H200, fraction=0.5),
            "swarm node worker-0: peak RSS 412 MiB, cuda:0 peak allocated 802 MiB, "
            "peak reserved 1024 MiB, cap 71885 MiB (0.5 x 143771 MiB)",
        ),
        (
            GpuPeak(device=1, allocated=0, reserved=0, total=H200, fraction=1.0),
            "swarm node worker-0: peak RSS 412 MiB, cuda:1 peak allocated 0 MiB, "
            "peak reserved 0 MiB, cap 143771 MiB (1 x 143771 MiB)",
        ),
    ],
    ids=["cpu", "half-gpu", "whole-gpu"],
)
def test_format_and_parse_are_inverse(gpu: GpuPeak | None, line: str) -> None:
    assert format_peak_line("worker-0", 412, gpu) == line
    fields = parse_peak_line(f"2026-11-27 12:00:00,000 swarm INFO {line}")
    assert fields is not None
    assert (fields["node"], fields["rss"]) == ("worker-0", "412")
    if gpu is None:
        assert fields["reserved"] is None
        assert fields["cap"] is None
    else:
        assert fields["device"] == f"cuda:{gpu.device}"
        assert int(fields["reserved"] or -1) == gpu.reserved // MIB
        assert float(fields["fraction"] or -1) == gpu.fraction


def test_a_reserve_at_the_cap_stays_within_it_in_the_line() -> None:
    """MiB are floored on both sides, so `reserved <= cap` in bytes holds in the printed numbers."""
    for total in (H200, 85_899_345_920, 3 * MIB + 1):
        cap = int(0.5 * total)
        fields = parse_peak_line(
            format_peak_line(
                "w", 1, GpuPeak(device=0, allocated=cap, reserved=cap, total=total, fraction=0.5)
            )
        )
        assert fields is not None
        assert int(fields["reserved"] or 0) <= int(fields["cap"] or 0) <= 0.5 * int(fields["total"] or 0) + 1


def test_the_last_line_of_a_log_wins() -> None:
    log = "swarm node worker-2: peak RSS 100 MiB\nrestarted\nswarm node worker-2: peak RSS 300 MiB\n"
    fields = parse_peak_line(log)
    assert fields is not None
    assert fields["rss"] == "300"
    assert parse_peak_line("worker-2: round 1: loss 0.3\n") is None


def test_a_cpu_process_reports_its_resident_memory_only() -> None:
    fields = parse_peak_line(peak_memory_line("root"))
    assert fields is not None
    assert int(fields["rss"] or 0) > 10  # this interpreter with torch loaded
    assert fields["device"] is None
