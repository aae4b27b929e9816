"""Benchmark the robust aggregation rules: milliseconds per GB of input, CPU and CUDA.

    python -m benchmarks.bench_aggregation [--n 16 128] [--mib 64] [--f-fraction 0.2] [--repeats 3]
        [--threads 1] [--no-write]
    python -m benchmarks.bench_aggregation --device cuda [--threads 8] [--quick] [--no-write]

Input: n updates of d float32 coordinates, Gaussian; by default two tables, n=16 (d=2^20) and
n=128 (d=2^17), 64 MiB each, f = 0.2 n capped at (n-3)/4 for Bulyan (3 and 31). Each
entry is the best of --repeats timed calls after one warm-up; "ms/GB" divides by the input size
(n d 4 bytes), so rules are comparable across sizes. Baselines in the same run: `torch.median`
(dim 0, the lower median), `torch.quantile(q=0.5)` (what byzfl uses), `torch.sort` then mean of the
middle rows (the sort-based trimmed mean), and `torch.kthvalue` on the (n, d) layout. The default
run takes about two minutes on 2 CPU cores, with one thread (--threads). Writes
benchmarks/results/aggregation.md (not with --no-write).

With --device DEVICE (the aggregator's accelerator, e.g. cuda), the device arm instead: every rule
on DEVICE against the same rule on the CPU, on the same inputs, in one run: dense n x d for n = 8
and 32, d = 1 M and 10 M, then the common-support path of an aggregator (swarm_worker.node.combine:
the rule on (n, k) rows, k = 1% of d = 100 M, and the aggregate scattered into the (d,) change as
the root does). Timings synchronize the device around each call; "max |diff|" is the largest
difference between the two results; "work MiB" the call's peak device memory above what was
allocated before it (the inputs): its working set. CPU:
best of --repeats calls (the first pays the page faults), device: best of --repeats after one
warm-up. --quick: small sizes (n = 8, 16; d = 2^16; common support d = 2^20), for a CPU run
(`--device cpu --quick` compares the CPU with itself, to exercise every path without a GPU).
Writes benchmarks/results/aggregation_device.md (not with --no-write).
"""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Callable

import torch

from benchmarks.common import markdown_table, start_run, write_result
from swarm_worker.maths.compression import k_for
from swarm_worker.maths.robust import RULES, AggregationResult, _kernels, aggregate
from swarm_worker.maths.robust._kernels import ranked_mean
from swarm_worker.node.admission import ChildUpdate
from swarm_worker.node.combine import combine


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


def _synchronized(fn: Callable[[], object], device: torch.device) -> Callable[[], object]:
    def call() -> object:
        out = fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return out

    return call


def _timed(fn: Callable[[], object], device: torch.device, repeats: int) -> tuple[float, object, float]:
    """(best seconds, the last result, peak device MiB) of `repeats` calls; on an accelerator after
    one warm-up call (CUDA's kernels load and its caching allocator fills on the first)."""
    call = _synchronized(fn, device)
    resident = 0
    if device.type == "cuda":
        call()
        torch.cuda.reset_peak_memory_stats(device)
        resident = torch.cuda.memory_allocated(device)
    best, out = float("inf"), None
    for _ in range(repeats):
        out = None  # the last result is freed first, so it does not count in the next call's peak
        start = time.perf_counter()
        out = call()
        best = min(best, time.perf_counter() - start)
    # The call's working set: its peak above what was allocated before it (the inputs, mostly).
    peak = (torch.cuda.max_memory_allocated(device) - resident) / 2**20 if device.type == "cuda" else math.nan
    return best, out, peak


def _vector(out: object) -> torch.Tensor:
    if isinstance(out, AggregationResult):
        return out.vector
    assert isinstance(out, torch.Tensor)
    return out


def _compare_row(
    name: str,
    n: int,
    d: int,
    arms: tuple[tuple[torch.device, Callable[[], object]], tuple[torch.device, Callable[[], object]]],
    repeats: int,
) -> list[object]:
    (cpu, cpu_fn), (device, device_fn) = arms
    try:
        cpu_s, cpu_out, _ = _timed(cpu_fn, cpu, repeats)
        dev_s, dev_out, peak = _timed(device_fn, device, repeats)
    except ValueError as e:  # a rule refusing this n, f (MDA's subset limit)
        return [name, n, d, f"refused: {str(e).split(';')[0]}", "", "", "", ""]
    diff = float((_vector(dev_out).cpu() - _vector(cpu_out)).abs().max())
    return [
        name,
        n,
        d,
        f"{cpu_s * 1e3:.1f}",
        f"{dev_s * 1e3:.1f}",
        f"{cpu_s / dev_s:.1f}x",
        f"{diff:.1e}",
        f"{peak:.0f}" if device.type == "cuda" else "n/a",
    ]


def _dense_arm(rule: str, x: torch.Tensor, f: int) -> Callable[[], object]:
    return lambda: aggregate(rule, x, f=f)


def _common_support_arm(
    rule: str, f: int, support: torch.Tensor, values: torch.Tensor, d: int
) -> Callable[[], object]:
    """One aggregator's round on the common support, as node.combine runs it: the rule on the
    (n, k) rows `values` (on their device), then the aggregate scattered into θ's (d,) change (the
    root's step)."""
    updates = [ChildUpdate(row, support, d, 100, 1, 0.5, None, True) for row in values]
    weights = torch.full((values.shape[0],), 100.0)

    def run() -> torch.Tensor:
        combined = combine(
            updates, rule, f=f, weights=weights, previous=None, pre_aggregation=(), want_rows=False
        )
        return combined.aggregate.dense()

    return run


def _inputs(shape: tuple[int, int], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """The same Gaussian inputs on the CPU and on `device`: drawn on `device` (fast on a GPU), copied."""
    on_device = torch.randn(*shape, device=device, generator=torch.Generator(device).manual_seed(0))
    return on_device.cpu(), on_device


def device_arm(device: torch.device, quick: bool, repeats: int) -> str:
    cpu = torch.device("cpu")
    ns, dense_ds, support_d = ((8, 16), (1 << 16,), 1 << 20) if quick else ((8, 32), (10**6, 10**7), 10**8)
    header = ["rule", "n", "d", "cpu ms", f"{device.type} ms", "speed-up", "max abs diff", "work MiB"]
    dense_rows, support_rows = [], []
    for n in ns:
        f = min(int(0.2 * n), (n - 3) // 4)
        for d in dense_ds:
            x, on_device = _inputs((n, d), device)
            for rule in RULES:
                arms = ((cpu, _dense_arm(rule, x, f)), (device, _dense_arm(rule, on_device, f)))
                dense_rows.append(_compare_row(rule, n, d, arms, repeats))
                print(dense_rows[-1], flush=True)
        # The support's place does not change the work: every 100th coordinate.
        support = torch.arange(0, support_d, 100)[: k_for(support_d, 0.01)]
        cpu_values, device_values = _inputs((n, support.numel()), device)
        for rule in RULES:
            if rule == "mda" and n > 16:
                continue  # C(n, f) subsets: refused above already
            arms = (
                (cpu, _common_support_arm(rule, f, support, cpu_values, support_d)),
                (device, _common_support_arm(rule, f, support, device_values, support_d)),
            )
            support_rows.append(_compare_row(rule, n, support_d, arms, repeats))
            print(support_rows[-1], flush=True)
    k = k_for(support_d, 0.01)
    return (
        f"Dense inputs, n x d float32, rule on the CPU vs on {device}:\n\n"
        + markdown_table(header, dense_rows)
        + f"\n\nCommon support, d = {support_d}, k = {k} (1%): the rule on (n, k) rows and the aggregate "
        f"scattered into a ({support_d},) vector, as node.combine and the root do; the dense (n, d) "
        "matrix would be "
        + ", ".join(f"{n * support_d * 4 / 2**30:.2f} GiB at n = {n}" for n in ns)
        + ":\n\n"
        + markdown_table(header, support_rows)
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--n", type=int, nargs="+", default=[16, 128], help="numbers of updates, one table each"
    )
    parser.add_argument("--mib", type=int, default=64, help="input size per table; d = MiB * 2^18 / n")
    parser.add_argument(
        "--f-fraction", type=float, default=0.2, help="f = floor(fraction * n), capped for Bulyan"
    )
    parser.add_argument(
        "--repeats", type=int, help="timed calls per entry, the best is kept (default 3; with --device, 2)"
    )
    parser.add_argument(
        "--threads",
        type=int,
        help="torch CPU threads (default 1; with --device, all cores: an aggregator's pod)",
    )
    parser.add_argument("--no-write", action="store_true", help="print only, leave the results file")
    parser.add_argument("--device", help="the device arm: every rule on this device vs the CPU (see above)")
    parser.add_argument("--quick", action="store_true", help="device arm: small sizes, for a CPU run")
    args = parser.parse_args(argv)
    run_info = start_run("benchmarks.bench_aggregation", argv)
    if args.repeats is None and args.device is None:
        args.repeats = 3
    if args.threads is None:
        args.threads = 1 if args.device is None else torch.get_num_threads()
    torch.set_num_threads(args.threads)
    if args.device is not None:
        device = torch.device(args.device)
        # Two calls per arm by default: the CPU's first pays the page faults, the second is the figure.
        repeats = max(1, 2 if args.repeats is None else args.repeats)
        text = device_arm(device, args.quick, repeats)
        print(text)
        if not args.no_write:
            name = (
                torch.cuda.get_device_name(device) if device.type == "cuda" else "no accelerator: CPU vs CPU"
            )
            label = " (quick CPU run: both arms on the CPU, a check of the paths, not a GPU figure)"
            body = (
                f"Device: {name}; {args.threads} CPU thread(s) (CPU capability "
                f"{torch.backends.cpu.get_cpu_capability()}); f = 0.2 n capped at (n-3)/4; best of "
                f"{repeats} calls per arm.\n\n" + text
            )
            title = "Robust aggregation on the aggregator's device vs the CPU" + (
                label if device.type == "cpu" else ""
            )
            write_result("aggregation_device", title, run_info, body)
        return
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
