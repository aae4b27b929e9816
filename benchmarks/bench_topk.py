"""Top-k selection: `topk_sampled` (swarm_worker.maths.compression) vs torch.topk(|v|, k) and
np.argpartition(|v|, d - k) on CPU.

    python -m benchmarks.bench_topk [--sizes 1e6 1e7 1e8] [--ratio 0.01] [--threads 1] [--repeats 7]

All three run in the same process, interleaved, with the same torch thread count (numpy's
argpartition is single-threaded); the table gives medians, the speed ratio of each baseline over
the sampled selector and the L1 mass of the true top-k that the sampled selector captured (1.0 = the
same coordinates). Gaussian and heavy-tailed (Student t, 2 dof) vectors. torch.topk keeps a heap of
k items (O(d log k)); argpartition is introselect (O(d) on average), the stronger baseline for one
selection on the CPU. Writes benchmarks/results/topk.md (not with --no-write).
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from benchmarks.common import interleaved, markdown_table, median, start_run, write_result
from swarm_worker.maths.compression import k_for, topk_sampled


def student_t2(d: int, g: torch.Generator) -> torch.Tensor:
    z = torch.randn(d, generator=g)
    chi2 = torch.randn(d, generator=g) ** 2 + torch.randn(d, generator=g) ** 2
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
    args = parser.parse_args(argv)
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
