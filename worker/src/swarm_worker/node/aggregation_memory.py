"""How much memory one round's aggregation needs at a node, and the check at node start that refuses
a spec whose aggregation cannot fit (a one-line SpecError naming the fields to change), instead of
an out-of-memory kill in the middle of round 0.

The estimate follows node.combine's forms (n = the node's children, d = θ's length, k = the
compressed size, 4 bytes per fp32 value, 8 per int64 index):

    pending      what the round holds before it closes: n x k values and their indices (sparse; one
                 shared index set on a common support), n x d values (dense)
    rows         the matrix the rule runs on: (n, k) on a common support; (n, min(d, n k)) for own
                 supports (the union of the children's supports); (n, d) when an update may be dense
                 (compression.method none, or children that are aggregators without a common
                 support: their aggregates go up dense when mostly nonzero)
    working set  copies of the rows the rule and its pre-aggregation steps make (`RULE_COPIES`,
                 `STEP_COPIES`, counted from maths.robust), one more for the reputation signals
    vectors      a few (d,) vectors: the aggregate, the previous one, the mean's accumulator

The two means on own supports without pre-aggregation build no rows for the rule (one (d,)
accumulator), only for reputation when it is on. Available memory: on CUDA the device's free
memory (torch.cuda.mem_get_info); on the CPU what is left under the cgroup's memory limit when
there is one, else MemAvailable (`available_bytes`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from swarm_contract.spec import SpecError, SwarmSpec
from swarm_worker.maths.compression import k_for

FLOAT_BYTES = 4
INDEX_BYTES = 8
#: (n, c)-sized copies each rule makes beyond its input (maths.robust.rules and _kernels): the
#: centred copy of the pairwise distances; Bulyan's pool, its |pool - median| and the int64 top-k
#: indices and gather of its β rows; the selected rows that Multi-Krum, MDA and MoNNA average.
RULE_COPIES: dict[str, float] = {
    "mean": 0,
    "weighted-mean": 0,
    "median": 0.5,  # blocked sort or sorting network: a bounded block, counted generously
    "trimmed-mean": 0.5,
    "krum": 1,
    "multi-krum": 2,
    "bulyan": 5,
    "geometric-median": 0,
    "centered-clipping": 0,
    "mda": 2,
    "monna": 1.5,
}
#: (n, c)-sized outputs and temporaries of each pre-aggregation step (maths.robust.preaggregation).
STEP_COPIES: dict[str, float] = {"nnm": 2, "bucketing": 1, "clipping": 1, "arc": 1}
#: The (n, c) temporaries of the reputation signals (the unit rows of the duplicate check).
REPUTATION_COPIES = 1
#: (d,) vectors held besides the rows: the aggregate, the previous one, an accumulator.
DENSE_VECTORS = 3

CGROUP = Path("/sys/fs/cgroup")
MEMINFO = Path("/proc/meminfo")


@dataclass(frozen=True)
class AggregationNeed:
    inputs: int
    columns: int  # c: the rows' width
    form: str  # how the updates are combined, in words
    bytes: int


def aggregation_need(spec: SwarmSpec, numel: int, inputs: int, children_aggregate: bool) -> AggregationNeed:
    """Bytes one round's aggregation holds at its peak at a node with `inputs` children;
    `children_aggregate`: they are aggregators (whose aggregates may travel dense)."""
    n, d = inputs, numel
    rules = spec.robustness
    sparse = spec.compression.method == "topk"
    k = k_for(d, spec.compression.ratio) if sparse else d
    if spec.common_support:
        columns, form = k, f"common support: rows ({n}, k={k})"
    elif sparse and not children_aggregate:
        columns, form = min(d, n * k), f"own supports: rows ({n}, |union of supports| <= {min(d, n * k)})"
    else:
        columns, form = d, f"dense: rows ({n}, d={d})"
    dense_inputs = not sparse or (children_aggregate and not spec.common_support)
    # Sparse updates keep their int64 indices, except on the common support (one shared index set).
    index_bytes = 0 if spec.common_support else INDEX_BYTES
    pending = n * d * FLOAT_BYTES if dense_inputs else n * k * (FLOAT_BYTES + index_bytes)
    rule = rules.rule
    accumulated = rule in ("mean", "weighted-mean") and not rules.pre_aggregation and not spec.common_support
    copies = (
        0.0
        if accumulated
        else 1 + RULE_COPIES[rule] + sum(STEP_COPIES[p.name] for p in rules.pre_aggregation)
    )
    if rules.reputation.enabled:
        copies = max(copies, 1.0) + REPUTATION_COPIES
    if accumulated:
        form = f"own supports: one ({d},) accumulator" + (f", {form} for reputation" if copies else "")
    total = pending + int(copies * n * columns * FLOAT_BYTES) + DENSE_VECTORS * d * FLOAT_BYTES
    return AggregationNeed(n, columns, form, total)


def _read_int(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def cgroup_available(root: Path = CGROUP) -> int | None:
    """Bytes left under this process's cgroup memory limit (v2, else v1); None without a limit."""
    for limit_file, usage_file in (
        ("memory.max", "memory.current"),
        ("memory/memory.limit_in_bytes", "memory/memory.usage_in_bytes"),
    ):
        limit = _read_int(root / limit_file)
        # v1 writes "no limit" as a number near 2^63; v2 as "max" (not a number: None here).
        if limit is not None and limit < 1 << 60:
            return max(0, limit - (_read_int(root / usage_file) or 0))
    return None


def mem_available(meminfo: Path = MEMINFO) -> int | None:
    """MemAvailable of /proc/meminfo in bytes, None where there is none."""
    try:
        lines = meminfo.read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    return None


def available_bytes(device: torch.device) -> tuple[int | None, str]:
    """Memory the aggregation may use on `device`, and where the figure comes from."""
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0]), f"free memory of {device}"
    limited = cgroup_available()
    if limited is not None:
        return limited, "left under the cgroup memory limit"
    return mem_available(), "MemAvailable"


def check_fits(need: AggregationNeed, available: int | None, source: str, node: str) -> None:
    """Refuse with a one-line SpecError when `need` exceeds `available` (unknown: not refused)."""
    if available is None or need.bytes <= available:
        return
    gib = 1 << 30
    raise SpecError(
        f"aggregation at {node} needs about {need.bytes / gib:.2f} GiB ({need.form}, 4 bytes a value, "
        f"plus the rule's working set) but {available / gib:.2f} GiB is available ({source}): set "
        "compression.method: topk with compression.support: common, lower topology.branchingFactor, "
        "or raise topology.aggregatorResources.memory (or .gpus)"
    )
