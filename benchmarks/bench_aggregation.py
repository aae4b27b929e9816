"""Benchmark the robust aggregation rules: milliseconds per GB of input, CPU and CUDA.

    python -m benchmarks.bench_aggregation [--n 16 128] [--mib 64] [--f-fraction 0.2] [--repeats 3]
        [--threads 1] [--no-write]

Input: n updates of d float32 coordinates, Gaussian; by default two tables, n=16 (d=2^20) and
n=128 (d=2^17), 64 MiB each, f = 0.2 n capped at (n-3)/4 for Bulyan (3 and 31). Each
entry is the best of --repeats timed calls after one warm-up; "ms/GB" divides by the input size
(n d 4 bytes), so rules are comparable across sizes. Baselines in the same run: `torch.median`
(dim 0, the lower median), `torch.quantile(q=0.5)` (what byzfl uses), `torch.sort` then mean of the
middle rows (the sort-based trimmed mean), and `torch.kthvalue` on the (n, d) layout. The default
run takes about two minutes on 2 CPU cores, with one thread (--threads). Writes
benchmarks/results/aggregation.md (not with --no-write).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import torch

from benchmarks.common import start_run, write_result
from swarm_worker.maths.robust import RULES, _kernels, aggregate
from swarm_worker.maths.robust._kernels import ranked_mean


def best_seconds(fn: Callable[[], object], repeats: int, device: torch.device) -> float:
    fn()
    best = float("inf")
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return best


def cases(x: torch.Tensor, f: int) -> list[tuple[str, Callable[[], object]]]:
    n = x.shape[0]
    generator = torch.Generator().manual_seed(0)
    coordinate_major = x.t().contiguous()
    entries: list[tuple[str, Callable[[], object]]] = [
        ("baseline: torch.median(dim=0)", lambda: torch.median(x, dim=0)),
        ("baseline: torch.quantile(0.5, dim=0)", lambda: torch.quantile(x, 0.5, dim=0)),
        ("baseline: torch.sort(dim=0) trimmed mean", lambda: torch.sort(x, dim=0).values[f : n - f].mean(0)),
        ("baseline: torch.kthvalue(dim=0)", lambda: torch.kthvalue(x, n // 2 + 1, dim=0)),
        ("baseline: kthvalue on (d, n) copy", lambda: torch.kthvalue(coordinate_major, n // 2 + 1, dim=1)),
        ("baseline: mean(dim=0)", lambda: x.mean(0)),
    ]
    if x.device.type == "cpu":
        entries.append(("kernel: trimmed range, sorting network", lambda: ranked_mean(x, f, n - f - 1)))
        entries.append(("kernel: trimmed range, (d, n) sort path", lambda: _sort_path(x, f)))
    for rule in RULES:
        entries.append((rule, lambda rule=rule: aggregate(rule, x, f=f)))  # type: ignore[misc]
    for step, param in (("nnm", None), ("bucketing", 2.0), ("clipping", 100.0), ("arc", None)):
        entries.append(
            (
                f"pre: {step} + mean",
                lambda step=step, param=param: aggregate(  # type: ignore[misc]
                    "mean", x, f=f, pre_aggregation=[(step, param)], generator=generator
                ),
            )
        )
    return entries


def _sort_path(x: torch.Tensor, f: int) -> object:
    """The coordinate-major sort path of `ranked_mean` (used for n > NETWORK_MAX_N on CPU)."""
    saved = _kernels.NETWORK_MAX_N
    _kernels.NETWORK_MAX_N = 0
    try:
        return ranked_mean(x, f, x.shape[0] - f - 1)
    finally:
        _kernels.NETWORK_MAX_N = saved


def run(n: int, d: int, f: int, repeats: int, devices: list[torch.device]) -> str:
    gigabytes = n * d * 4 / 1e9
    rows = [f"n={n}, d={d}, f={f}:", "", "| entry | device | ms | ms/GB |", "|---|---|---:|---:|"]
    for device in devices:
        x = torch.randn(n, d, generator=torch.Generator().manual_seed(0)).to(device)
        for name, fn in cases(x, f):
            try:
                seconds = best_seconds(fn, repeats, device)
            except ValueError as e:  # a rule refusing this n, f (MDA's subset limit)
                rows.append(f"| {name} | {device.type} | refused: {e} | |")
            else:
                rows.append(
                    f"| {name} | {device.type} | {seconds * 1e3:.1f} | {seconds * 1e3 / gigabytes:.0f} |"
                )
            print(rows[-1], flush=True)
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--n", type=int, nargs="+", default=[16, 128], help="numbers of updates, one table each"
    )
    parser.add_argument("--mib", type=int, default=64, help="input size per table; d = MiB * 2^18 / n")
    parser.add_argument(
        "--f-fraction", type=float, default=0.2, help="f = floor(fraction * n), capped for Bulyan"
    )
    parser.add_argument("--repeats", type=int, default=3, help="timed calls per entry (best is kept)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--no-write", action="store_true", help="print only, leave results/aggregation.md")
    args = parser.parse_args(argv)
    run_info = start_run("benchmarks.bench_aggregation", argv)
    torch.set_num_threads(args.threads)
    devices = [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])
    tables = []
    for n in args.n:
        d = args.mib * (1 << 18) // n
        f = min(int(args.f_fraction * n), (n - 3) // 4)  # Bulyan needs n >= 4f + 3
        tables.append(run(n, d, f, args.repeats, devices))
    text = "\n\n".join(tables)
    print(text)
    if args.no_write:
        return
    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else "no GPU"
    body = (
        f"{args.mib} MiB of float32 input per table, best of {args.repeats} timed calls after one warm-up, "
        f"{args.threads} CPU thread(s) (CPU capability {torch.backends.cpu.get_cpu_capability()}), {gpu}. "
        "ms/GB = ms / (n d 4 bytes / 1e9). A rule that refuses n and f says why in the ms column.\n\n" + text
    )
    write_result("aggregation", "Robust aggregation: time per GB of input", run_info, body)


if __name__ == "__main__":
    main()
