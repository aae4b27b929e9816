"""Which torch device a node process computes on, and its share of a shared GPU.

A worker follows `workers.device`; an aggregator or the root uses a GPU only when
`topology.aggregatorResources.gpus` > 0 gives its pod one (then `auto` rules for it too).
A fractional GPU (`gpus: 0.5`) is a time-sliced device shared by several processes: the operator
sets SWARM_GPU_FRACTION (and `swarm run` does the same for the processes it places on one local GPU),
and the process caps its CUDA caching allocator at that share of the device's memory, so one
worker running out of memory fails alone instead of starving its neighbours.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping

import torch

from swarm_contract.spec import SpecError, SwarmSpec

log = logging.getLogger("swarm")
#: Environment variable with this process's share of its GPU, in (0, 1].
GPU_FRACTION_ENV = "SWARM_GPU_FRACTION"


def requested_device(spec: SwarmSpec, role: str) -> str:
    """`auto`, `cuda` or `cpu` for a node of `role`: workers follow `workers.device`; aggregators and
    the root use a GPU only when their pods are given one."""
    if role == "worker":
        return spec.workers.device
    return "auto" if spec.topology.aggregator_resources.gpus > 0 else "cpu"


def gpu_fraction(environ: Mapping[str, str]) -> float | None:
    """The GPU share from SWARM_GPU_FRACTION; None when unset; a bad value is a one-line error."""
    raw = environ.get(GPU_FRACTION_ENV, "").strip()
    if not raw:
        return None
    try:
        value = float(raw)
    except ValueError:
        raise SpecError(f"{GPU_FRACTION_ENV}: {raw!r} is not a number") from None
    if not 0 < value <= 1:
        raise SpecError(f"{GPU_FRACTION_ENV}: {value:g} is not in (0, 1]")
    return value


def select_device(requested: str, fraction: float | None = None) -> torch.device:
    """The device to compute on. `cuda` without a visible GPU is a one-line error, not a silent CPU
    run; with a fraction below 1 the process's CUDA memory is capped at that share."""
    if requested not in ("auto", "cuda", "cpu"):
        raise SpecError(f"workers.device: {requested!r} is not one of auto, cuda, cpu")
    if requested == "cpu" or (requested == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise SpecError("workers.device: cuda, but this process sees no GPU (CUDA_VISIBLE_DEVICES, drivers)")
    device = torch.device("cuda", torch.cuda.current_device())
    if fraction is not None and fraction < 1:
        torch.cuda.set_per_process_memory_fraction(fraction, device)
        log.info("GPU %s: this process keeps to %.0f%% of its memory", device, 100 * fraction)
    return device


def node_device(spec: SwarmSpec, role: str, environ: Mapping[str, str] | None = None) -> torch.device:
    """The device of a node process of `role`, from the spec and its environment."""
    env = os.environ if environ is None else environ
    return select_device(requested_device(spec, role), gpu_fraction(env))
