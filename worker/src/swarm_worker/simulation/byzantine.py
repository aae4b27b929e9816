"""Simulated Byzantine workers: what `spec.simulation.byzantine` makes a worker process do.

Each entry `{worker: rank, attack, scale}` turns that rank's `swarm node` process into an attacker;
every other rank is honest. `plan_for(spec, rank)` reads the spec once at start and returns the
rank's `AttackPlan` (None for an honest rank); the worker loop asks the plan what to do:

    label-flip   train on the shard with y -> C - 1 - y (`attacks.flip_labels`), then behave honestly
    sign-flip, gaussian, alie, ipm, mimic
                 compute the honest local update Δ = θ_r - θ_local, then send
                 `attacks.craft_update(attack, Δ, estimates, n=replicas, f=len(byzantine), scale)`,
                 compressed like an honest update (top-k with error feedback)
    nan          the same, but the crafted vector (NaN, or `scale`, e.g. inf) is sent dense fp32:
                 the codec does not validate on send, so it reaches the aggregator, whose decoder
                 drops it as `nonfinite` (the defence under test is input validation)
    crash        `os._exit(3)` when about to train its 3rd round of the process's life (after two
                 updates sent: round 2 for the first incarnation); restarted, it crashes again
    silent       stays alive and connected but sends nothing at all (no HELLO, no UPDATE); it still
                 exits 0 on STOP

Omniscience replaced by simulation from public data. The attacks of the literature (ALIE, IPM,
mimic) assume the attacker sees the honest updates of the round. A real worker process cannot: it
only sees θ_r. But every input of an honest update is public in this system: θ_r (broadcast to all
workers), the task and its data (built from the spec), the shard of every rank
(`tasks.shard_indices` is deterministic from the spec's seed) and each rank's batch order (its
generator is seeded with `seed * 1_000_003 + rank`). So an attacker that needs `honest_estimates`
rebuilds the shards of `ESTIMATED_RANKS` honest ranks (the lowest honest ranks, so every attacker
estimates, and `mimic` copies, the same workers) and runs the same H local steps from θ_r on each,
with its own model and optimizer copy per estimate. When the attacker and the estimated ranks train
the same rounds the estimates equal the honest updates exactly; after a restart of either side
their batch streams drift apart and the estimates become honest-distributed samples instead. The
cost is H extra local steps per estimate per round, paid only by attacks that use estimates.

Devices: an attacker computes where its model lives. Its estimates train deep copies of that model
(on its device, with shards moved there by `training.shards`), and its noise generator is made on
that device, so a worker on CUDA attacks on CUDA exactly as one on the CPU does (the gaussian noise
itself differs between devices: CUDA's generator draws other numbers).

Pure apart from torch: no sockets, no files; `roles.worker.Worker` does the I/O. The honest
training path (shards, batch order, the local trainer) lives in `swarm_worker.training.shards`.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import nn

from swarm_contract.spec import SpecError, SwarmSpec
from swarm_worker.simulation.attacks import DATA_ATTACKS, UPDATE_ATTACKS, alie_z, craft_update, flip_labels
from swarm_worker.training.shards import batch_generator, honest_trainer, model_device, rank_batches
from swarm_worker.training.steps import LocalTrainer
from swarm_worker.training.tasks import TaskBundle

#: Honest ranks an attacker simulates to estimate the round's honest updates (more for `mimic`
#: when its `scale` names a later index).
ESTIMATED_RANKS = 3
#: Rounds a `crash` worker trains (and sends) in each incarnation before it exits.
CRASH_AFTER_ROUNDS = 2
#: Exit status of a `crash` worker: non-zero, so the launcher or the kubelet restarts it.
CRASH_EXIT_CODE = 3
PROCESS_ATTACKS: tuple[str, ...] = ("crash", "silent")
#: Rows of `honest_estimates` each attack needs at least (attacks not listed need none).
_ESTIMATES_NEEDED: dict[str, int] = {"alie": 2, "ipm": 1}


@dataclass(frozen=True)
class AttackPlan:
    """What one Byzantine rank does; built once from the spec by `plan_for`."""

    rank: int
    attack: str
    #: The attack's strength (see `attacks`); None uses the attack's default.
    scale: float | None
    #: Workers in the swarm (n of the attack formulas).
    world: int
    #: Byzantine workers listed in the spec (f of the attack formulas).
    byzantine: int
    #: Honest ranks whose updates this attacker simulates, in order; empty if the attack needs none.
    estimated_ranks: tuple[int, ...]

    @property
    def flips_labels(self) -> bool:
        return self.attack in DATA_ATTACKS

    @property
    def crafts_update(self) -> bool:
        return self.attack in UPDATE_ATTACKS

    @property
    def crashes(self) -> bool:
        return self.attack == "crash"

    @property
    def silent(self) -> bool:
        return self.attack == "silent"

    @property
    def sends_dense(self) -> bool:
        """A crafted update that skips compression: top-k of NaN is meaningless (the point is that
        the aggregator sees every non-finite value), and top-k would strip most of Gaussian noise,
        which an attacker is not bound to do. Its parent refuses the dense form from a worker under
        top-k (`node.admission`: dropped as `dtype`), so the attack tests that refusal."""
        return self.attack in ("nan", "gaussian")


def estimates_required(attack: str, scale: float | None) -> int:
    """Fewest honest estimates `attack` can run with: 0 for attacks that use none."""
    if attack == "mimic":
        return (0 if scale is None else int(scale)) + 1
    return _ESTIMATES_NEEDED.get(attack, 0)


def honest_ranks(spec: SwarmSpec) -> list[int]:
    """Ranks of the workers the spec does not list as Byzantine, ascending."""
    byzantine = {b.worker for b in spec.simulation.byzantine}
    return [r for r in range(spec.workers.replicas) if r not in byzantine]


def plan_for(spec: SwarmSpec, rank: int) -> AttackPlan | None:
    """The attack plan of worker `rank`, or None if it is honest.

    Raises SpecError (one line naming the entry) when the attack cannot run in this swarm: too few
    honest ranks to estimate from, a negative mimic index, or ALIE's default z undefined for n, f.
    """
    entries = spec.simulation.byzantine
    for i, entry in enumerate(entries):
        if entry.worker != rank:
            continue
        where = f"spec.simulation.byzantine[{i}]"
        if entry.attack == "mimic" and entry.scale is not None and int(entry.scale) < 0:
            raise SpecError(f"{where}.scale: mimic copies honest estimate int(scale), which must be >= 0")
        required = estimates_required(entry.attack, entry.scale)
        honest = honest_ranks(spec)
        if len(honest) < required:
            raise SpecError(
                f"{where}: attack {entry.attack!r} needs {required} honest workers to estimate from, "
                f"the swarm has {len(honest)}"
            )
        if entry.attack == "alie" and entry.scale is None:
            try:
                alie_z(spec.workers.replicas, len(entries))
            except ValueError as e:
                raise SpecError(f"{where}.scale: {e}") from e
        wanted = max(required, ESTIMATED_RANKS) if required else 0
        return AttackPlan(
            rank=rank,
            attack=entry.attack,
            scale=entry.scale,
            world=spec.workers.replicas,
            byzantine=len(entries),
            estimated_ranks=tuple(honest[:wanted]),
        )
    return None


def make_trainer(
    spec: SwarmSpec, bundle: TaskBundle, model: nn.Module, rank: int, *, flip: bool = False
) -> LocalTrainer:
    """Rank's local trainer, exactly as that rank's worker trains; with `flip`, on its shard with
    the labels flipped (the label-flip attack)."""
    num_classes = bundle.num_classes
    return honest_trainer(
        spec, bundle, model, rank, relabel=(lambda y: flip_labels(y, num_classes)) if flip else None
    )


def shard_batches(
    spec: SwarmSpec,
    bundle: TaskBundle,
    rank: int,
    *,
    flip: bool = False,
    device: torch.device | None = None,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Rank's batch stream as its worker draws it (labels flipped first with `flip`), on `device`."""
    num_classes = bundle.num_classes
    relabel = (lambda y: flip_labels(y, num_classes)) if flip else None
    return rank_batches(spec, bundle, rank, relabel=relabel, device=device)


class HonestEstimator:
    """Simulates honest ranks' local rounds from public data (see the module docstring).

    One trainer per estimated rank, each on its own copy of `model` (the caller's model is never
    touched), so the simulated optimizers and batch streams advance like the real ones.
    """

    def __init__(self, spec: SwarmSpec, bundle: TaskBundle, model: nn.Module, ranks: tuple[int, ...]) -> None:
        self.ranks = ranks
        self.trainers = [make_trainer(spec, bundle, copy.deepcopy(model), r) for r in ranks]

    def estimate(self, theta: torch.Tensor) -> torch.Tensor:
        """(m, d): the update each estimated rank would send from θ_r = `theta` (d,), uncompressed."""
        return torch.stack([t.run_round(theta).delta for t in self.trainers])


class Attacker:
    """The update side of a plan: turns the attacker's honest Δ into the update it sends."""

    def __init__(self, plan: AttackPlan, spec: SwarmSpec, bundle: TaskBundle, model: nn.Module) -> None:
        self.plan = plan
        self.estimator = (
            HonestEstimator(spec, bundle, model, plan.estimated_ranks) if plan.estimated_ranks else None
        )
        # Seeded apart from the batch generators (the gaussian attack's noise); on the model's device,
        # where the updates it perturbs are.
        self.generator = torch.Generator(device=model_device(model)).manual_seed(
            spec.training.seed * 1_000_003 + plan.rank + 7_919
        )

    def craft(self, own: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
        """(d,) the malicious update, from the attacker's honest Δ `own` (d,) and θ_r `theta` (d,)."""
        estimates = self.estimator.estimate(theta) if self.estimator is not None else None
        return craft_update(
            self.plan.attack,
            own,
            estimates,
            n=self.plan.world,
            f=self.plan.byzantine,
            scale=self.plan.scale,
            generator=self.generator,
        )


__all__ = [
    "CRASH_AFTER_ROUNDS",
    "CRASH_EXIT_CODE",
    "ESTIMATED_RANKS",
    "PROCESS_ATTACKS",
    "AttackPlan",
    "Attacker",
    "HonestEstimator",
    "batch_generator",
    "estimates_required",
    "honest_ranks",
    "make_trainer",
    "plan_for",
    "shard_batches",
]
