"""Top-k selection: `topk_sampled` (swarm_worker.maths.compression) vs torch.topk(|v|, k) and
np.argpartition(|v|, d - k) on CPU; with --device, top-k with error feedback on that device.

    python -m benchmarks.bench_topk [--sizes 1e6 1e7 1e8] [--ratio 0.01] [--threads 1] [--repeats 7]
    python -m benchmarks.bench_topk --device cuda [--sizes 1e7 1e8]     (writes results/topk_device.md)
    python -m benchmarks.bench_topk --device cpu --quick                (every code path, small sizes)

All three run in the same process, interleaved, with the same torch thread count (numpy's
argpartition is single-threaded); the table gives medians, the speed ratio of each baseline over
the sampled selector and the L1 mass of the true top-k that the sampled selector captured (1.0 = the
same coordinates). Gaussian and heavy-tailed (Student t, 2 dof) vectors. torch.topk keeps a heap of
k items (O(d log k)); argpartition is introselect (O(d) on average), the stronger baseline for one
selection on the CPU. Writes benchmarks/results/topk.md (not with --no-write).

--device: what a worker does per round on its device (`ErrorFeedbackCompressor.compress`: a = Δ + e,
select, gather and cast the k values, subtract them from a, copy the k values and indices to the
host), with the exact and the sampled selector, against plain `torch.topk(|v|, k)` on the same
device; torch.cuda.synchronize() ends every timed call on CUDA. Vectors are drawn on the device.
Writes benchmarks/results/topk_device.md.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

import numpy as np
import torch

from benchmarks.common import interleaved, markdown_table, median, start_run, write_result
from swarm_worker.maths.compression import ErrorFeedbackCompressor, k_for, topk_sampled


def student_t2(d: int, g: torch.Generator) -> torch.Tensor:
    def draw() -> torch.Tensor:
        return torch.randn(d, generator=g, device=g.device)

    z = draw()
    chi2 = draw() ** 2 + draw() ** 2
    return z / torch.sqrt(chi2 / 2)


def argpartition_topk(vec: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k largest |vec|, unordered: numpy's introselect on a copy of |vec|."""
    return np.argpartition(np.abs(vec), vec.size - k)[vec.size - k :]


def bench(d: int, ratio: float, dist: str, repeats: int, seed: int = 0) -> dict[str, float]:
    g = torch.Generator().manual_seed(seed)
    vec = torch.randn(d, generator=g) if dist == "gaussian" else student_t2(d, g)
    as_numpy = vec.numpy()  # shares vec's memory
    k = k_for(d, ratio)
    sel_gen = torch.Generator().manual_seed(seed + 1)
    times = interleaved(
        {
            "torch.topk": lambda: torch.topk(vec.abs(), k, sorted=False),
            "argpartition": lambda: argpartition_topk(as_numpy, k),
            "sampled": lambda: topk_sampled(vec, k, generator=sel_gen),
        },
        repeats,
    )
    true_mass = float(torch.topk(vec.abs(), k, sorted=False).values.double().sum())
    argpartition_mass = float(np.abs(as_numpy[argpartition_topk(as_numpy, k)]).astype(np.float64).sum())
    masses = [
        float(vec[topk_sampled(vec, k, generator=sel_gen)].abs().double().sum()) / true_mass for _ in range(5)
    ]
    sampled_s = median(times["sampled"])
    return {
        "d": d,
        "k": k,
        "topk_s": median(times["torch.topk"]),
        "argpartition_s": median(times["argpartition"]),
        "sampled_s": sampled_s,
        "vs_topk": median(times["torch.topk"]) / sampled_s,
        "vs_argpartition": median(times["argpartition"]) / sampled_s,
        "min_ratio_argpartition": min(
            a / b for a, b in zip(times["argpartition"], times["sampled"], strict=True)
        ),
        "mass_min": min(masses),
        "argpartition_mass": argpartition_mass / true_mass,
    }


def synchronized(device: torch.device, fn: Callable[[], object]) -> Callable[[], object]:
    """`fn`, then wait for the device to finish what it queued (CUDA runs asynchronously)."""

    def run() -> object:
        out = fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return out

    return run


def bench_device(d: int, ratio: float, dist: str, repeats: int, device: torch.device) -> dict[str, float]:
    """Error-feedback top-k (exact and sampled) vs torch.topk, all on `device`."""
    g = torch.Generator(device=device).manual_seed(0)
    vec = torch.randn(d, generator=g, device=device) if dist == "gaussian" else student_t2(d, g)
    k = k_for(d, ratio)
    compressors = {
        selector: ErrorFeedbackCompressor(d, ratio=ratio, value_dtype=torch.float16, selector=selector)
        for selector in ("exact", "sampled")
    }
    sel_gen = torch.Generator().manual_seed(1)
    fns = {
        "torch.topk": lambda: torch.topk(vec.abs(), k, sorted=False),
        "ef exact": lambda: compressors["exact"].compress(vec),
        "ef sampled": lambda: compressors["sampled"].compress(vec),
        "sampled select": lambda: topk_sampled(vec, k, generator=sel_gen),
    }
    times = interleaved({name: synchronized(device, fn) for name, fn in fns.items()}, repeats)
    true_mass = float(torch.topk(vec.abs(), k, sorted=False).values.double().sum())
    masses = [
        float(vec[topk_sampled(vec, k, generator=sel_gen)].abs().double().sum()) / true_mass for _ in range(5)
    ]
    out = {name: median(ts) for name, ts in times.items()}
    return {"d": d, "k": k, **out, "mass_min": min(masses)}


def main_device(args: argparse.Namespace, argv: list[str] | None) -> None:
    run = start_run("benchmarks.bench_topk", argv)
    device = torch.device(args.device)
    torch.set_num_threads(args.threads)
    sizes = [1e5, 1e6] if args.quick else args.sizes
    repeats = 3 if args.quick else args.repeats
    rows = []
    for size in sizes:
        for dist in ("gaussian", "student_t2"):
            r = bench_device(int(size), args.ratio, dist, repeats, device)
            base = r["torch.topk"]
            row = [
                f"{int(r['d']):,}", f"{int(r['k']):,}", dist, f"{base * 1e3:.2f}",
                f"{r['ef exact'] * 1e3:.2f}", f"{r['ef sampled'] * 1e3:.2f}",
                f"{r['sampled select'] * 1e3:.2f}",
                f"{r['ef exact'] / base:.2f}", f"{r['ef sampled'] / base:.2f}", f"{r['mass_min']:.4f}",
            ]  # fmt: skip
            rows.append(row)
            print(" | ".join(row), flush=True)
    header = [
        "d", "k", "vector", "torch.topk ms", "EF exact ms", "EF sampled ms", "sampled select ms",
        "EF exact / torch.topk", "EF sampled / torch.topk", "sampled mass",
    ]  # fmt: skip
    table = markdown_table(header, rows)
    print(table)
    if args.no_write:
        return
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU (no GPU)"
    cpu_label = "**CPU run**: it shows that every code path runs; the device figures need --device cuda.\n\n"
    body = (
        (cpu_label if device.type == "cpu" else "")
        + f"Device: **{device}** ({name}). Ratio {args.ratio}, {args.threads} torch thread(s); "
        f"{repeats} timed rounds per size after one warm-up round; torch.cuda.synchronize() after "
        "every timed call on CUDA.\n\n"
        + table
        + "\n\nMedians of interleaved runs in one process, all on the device. torch.topk = "
        "`torch.topk(v.abs(), k, sorted=False)` (selection only, the baseline); EF = one call of "
        "`ErrorFeedbackCompressor.compress(v)`, a worker's whole per-round compression: a = v + e, "
        "select k, gather and cast the values to fp16, e = a - sent, and the copy of the k values "
        "and int32 indices to the host for the wire; sampled select = `topk_sampled(v, k)` alone "
        "(the sample is drawn on the CPU and copied). Ratios above 1 are the cost of error feedback "
        "and the host copy over a bare selection. sampled mass as in topk.md (1.0000: the exact top-k)."
    )
    write_result("topk_device", "Top-k with error feedback on the device vs torch.topk", run, body)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", type=float, nargs="+", default=[1e6, 1e7, 1e8])
    parser.add_argument("--ratio", type=float, default=0.01)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--repeats", type=int, default=7, help="timed rounds (half, at least 3, above d = 1e7)"
    )
    parser.add_argument("--no-write", action="store_true", help="print only, leave results/topk.md alone")
    parser.add_argument(
        "--device", help="time error-feedback top-k on this device (cuda, cpu): results/topk_device.md"
    )
    parser.add_argument("--quick", action="store_true", help="with --device: d = 1e5 and 1e6, 3 rounds")
    args = parser.parse_args(argv)
    if args.device:
        main_device(args, argv)
        return
    run = start_run("benchmarks.bench_topk", argv)
    torch.set_num_threads(args.threads)
    rows = []
    for size in args.sizes:
        d = int(size)
        for dist in ("gaussian", "student_t2"):
            r = bench(d, args.ratio, dist, args.repeats if d <= 10_000_000 else max(3, args.repeats // 2))
            row = [
                f"{d:,}", f"{r['k']:,}", dist, f"{r['topk_s'] * 1e3:.1f}", f"{r['argpartition_s'] * 1e3:.1f}",
                f"{r['sampled_s'] * 1e3:.1f}", f"{r['vs_topk']:.1f}x", f"{r['vs_argpartition']:.1f}x",
                f"{r['min_ratio_argpartition']:.1f}x", f"{r['mass_min']:.4f}",
                f"{r['argpartition_mass']:.4f}",
            ]  # fmt: skip
            rows.append(row)
            print(" | ".join(row), flush=True)
    header = [
        "d", "k", "vector", "torch.topk ms", "np.argpartition ms", "sampled ms",
        "speedup vs torch.topk", "speedup vs argpartition", "worst paired ratio vs argpartition",
        "sampled mass", "argpartition mass",
    ]  # fmt: skip
    table = markdown_table(header, rows)
    print(table)
    if args.no_write:
        return
    body = (
        f"Ratio {args.ratio}, {args.threads} torch thread(s); {args.repeats} timed rounds per size up to "
        f"d = 10M, {max(3, args.repeats // 2)} above, after one warm-up round.\n\n"
        + table
        + "\n\nMedians of interleaved runs in one process. torch.topk = `torch.topk(v.abs(), k, "
        "sorted=False)`; np.argpartition = `np.argpartition(np.abs(v), d - k)[d - k:]` on the same "
        "memory (both pay for one |v| copy); sampled = `topk_sampled(v, k)`. speedup = baseline "
        "median / sampled median; worst paired ratio = the smallest argpartition / sampled ratio of one "
        "round's pair. mass = the L1 mass of the chosen coordinates over that of the true top-k "
        "(torch.topk's); for sampled the smallest over 5 draws of the sample (1.0000: the exact top-k, "
        "the sampled selector trims its candidates exactly)."
    )
    write_result("topk", "Top-k selection: sampled vs torch.topk and np.argpartition", run, body)


if __name__ == "__main__":
    main()
