"""Top-k selection: `topk_sampled` (swarm_worker.maths.compression) vs torch.topk(|v|, k) on CPU.

    python -m benchmarks.bench_topk [--sizes 1e6 1e7 1e8] [--ratio 0.01] [--threads 1] [--repeats 7]

Both run in the same process, interleaved, with the same torch thread count; the table gives
medians, the speed ratio (torch.topk / sampled) and the L1 mass of the true top-k that the sampled
selector captured (1.0 = the same coordinates). Gaussian and heavy-tailed (Student t, 2 dof) vectors.
"""

from __future__ import annotations

import argparse
import sys

import torch

from benchmarks.common import interleaved, markdown_table, median, write_result
from swarm_worker.maths.compression import k_for, topk_sampled


def student_t2(d: int, g: torch.Generator) -> torch.Tensor:
    z = torch.randn(d, generator=g)
    chi2 = torch.randn(d, generator=g) ** 2 + torch.randn(d, generator=g) ** 2
    return z / torch.sqrt(chi2 / 2)


def bench(d: int, ratio: float, dist: str, repeats: int, seed: int = 0) -> dict[str, float]:
    g = torch.Generator().manual_seed(seed)
    vec = torch.randn(d, generator=g) if dist == "gaussian" else student_t2(d, g)
    k = k_for(d, ratio)
    sel_gen = torch.Generator().manual_seed(seed + 1)
    times = interleaved(
        {
            "torch.topk": lambda: torch.topk(vec.abs(), k, sorted=False),
            "sampled": lambda: topk_sampled(vec, k, generator=sel_gen),
        },
        repeats,
    )
    true_mass = float(torch.topk(vec.abs(), k, sorted=False).values.double().sum())
    masses = [
        float(vec[topk_sampled(vec, k, generator=sel_gen)].abs().double().sum()) / true_mass for _ in range(5)
    ]
    return {
        "d": d,
        "k": k,
        "topk_s": median(times["torch.topk"]),
        "sampled_s": median(times["sampled"]),
        "speedup": median(times["torch.topk"]) / median(times["sampled"]),
        "min_ratio": min(a / b for a, b in zip(times["torch.topk"], times["sampled"], strict=True)),
        "mass_min": min(masses),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", type=float, nargs="+", default=[1e6, 1e7, 1e8])
    parser.add_argument("--ratio", type=float, default=0.01)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--no-write", action="store_true", help="print only, leave results/topk.md alone")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    rows = []
    for size in args.sizes:
        d = int(size)
        for dist in ("gaussian", "student_t2"):
            r = bench(d, args.ratio, dist, args.repeats if d <= 10_000_000 else max(3, args.repeats // 2))
            row = [
                f"{d:,}", f"{r['k']:,}", dist, f"{r['topk_s'] * 1e3:.1f}", f"{r['sampled_s'] * 1e3:.1f}",
                f"{r['speedup']:.1f}x", f"{r['min_ratio']:.1f}x", f"{r['mass_min']:.4f}",
            ]  # fmt: skip
            rows.append(row)
            print(" | ".join(row), flush=True)
    table = markdown_table(
        [
            "d",
            "k",
            "vector",
            "torch.topk ms",
            "sampled ms",
            "speedup (medians)",
            "worst paired ratio",
            "mass",
        ],
        rows,
    )
    print(table)
    if not args.no_write:
        command = "python -m benchmarks.bench_topk " + " ".join(sys.argv[1:] if argv is None else argv)
        write_result(
            "topk",
            f"Top-k selection, ratio {args.ratio}, {args.threads} torch thread(s)",
            command.strip(),
            table,
            "Medians of interleaved runs in one process. speedup = torch.topk(|v|, k) time / topk_sampled "
            "time; worst paired ratio = the smallest ratio of one round's pair. mass = the smallest, over 5 "
            "draws of the sample, L1 mass of the chosen coordinates over that of the true top-k "
            "(1.0000 means the exact top-k: the sampled selector trims its candidates exactly).",
        )


if __name__ == "__main__":
    main()
