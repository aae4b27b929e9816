"""The `SwarmTraining` spec as typed, validated settings.

One manifest drives both `kubectl apply` and `swarm run`; this module turns its `spec` into a frozen
`SwarmSpec`. Field names in YAML are camelCase (`syncEvery`), in Python snake_case (`sync_every`).
Unknown fields are refused, like the CRD's structural schema (crds/ holds the same schema for the
apiserver; tests/unit/test_crd_schema.py keeps the two in step).

Pure: no torch, no zmq, no I/O beyond `load_manifest`, so the operator imports it too.
"""

from __future__ import annotations

import functools
import math
from typing import Annotated, Any, Final, Literal, get_args

from pydantic import Field, model_validator

from swarm_contract.consensus import tolerated_faults, valid_replica_count
from swarm_contract.operations import Consensus, Network, RestartPolicy
from swarm_contract.section import Section as _Section
from swarm_contract.simulation import Simulation
from swarm_contract.tolerance import guaranteed_workers
from swarm_contract.topology import plan_tree

API_GROUP = "swarm.ncrsh.io"
API_VERSION = "v1alpha1"
KIND = "SwarmTraining"

#: The robust aggregation rules: the one list; swarm_worker.maths.robust implements each (its tests run
#: every name here) and refuses any other.
RuleName = Literal[
    "mean", "weighted-mean", "median", "trimmed-mean", "krum", "multi-krum", "bulyan",
    "geometric-median", "centered-clipping", "mda", "monna",
]  # fmt: skip
RULE_NAMES: Final[tuple[str, ...]] = get_args(RuleName)
#: The pre-aggregation steps that may run before a rule, in the order given.
PreAggregationName = Literal["nnm", "bucketing", "clipping", "arc"]
PRE_AGGREGATION_NAMES: Final[tuple[str, ...]] = get_args(PreAggregationName)


#: Built-in tasks whose examples carry token sequences, not one class label: a Dirichlet split over
#: classes does not apply to them.
TOKEN_TASKS = frozenset({"lm"})


class SpecError(ValueError):
    """A user's manifest is wrong; the message is one line that names the field."""


class WorkerResources(_Section):
    """Kubernetes resources of one worker pod (ignored by `swarm run`)."""

    cpu: str = "1"
    memory: str = "2Gi"
    #: GPUs per worker; fractional values share a GPU (time-slicing) and request one whole device.
    gpus: Annotated[float, Field(ge=0)] = 0


class AggregatorResources(_Section):
    """Kubernetes resources of every aggregator pod and the root (ignored by `swarm run`, which runs
    them on CPU). With gpus > 0 they run the robust rules and the outer step on their GPU."""

    #: Empty: the same as `workers.resources.cpu`.
    cpu: str = ""
    #: Empty: the same as `workers.resources.memory`.
    memory: str = ""
    gpus: Annotated[float, Field(ge=0)] = 0


class Workers(_Section):
    replicas: Annotated[int, Field(ge=1, le=1024)] = 8
    resources: WorkerResources = WorkerResources()
    #: Where a worker trains: `cuda` (refused at start without a visible GPU), `cpu`, or `auto`:
    #: CUDA when the process sees a GPU, else CPU. Aggregators and the root follow the same rule
    #: with `topology.aggregatorResources` (without it they run on CPU).
    device: Literal["auto", "cuda", "cpu"] = "auto"


class Topology(_Section):
    #: Children per aggregator. Workers are leaves; aggregators are added until the root has at most
    #: this many children (8 workers with 4 make two interior aggregators under the root).
    branching_factor: Annotated[int, Field(ge=2, le=256)] = 4
    #: Reassign workers to the bottom aggregators at random every round (from the public seed), so
    #: no fixed group of children can be captured by colluding workers round after round.
    reshuffle: bool = False
    aggregator_resources: AggregatorResources = AggregatorResources()


class Task(_Section):
    #: A built-in task (`digits`, `mnist1d`) or `package.module:function` returning a `TaskBundle`.
    name: str = "digits"
    #: How training data is split across worker ranks.
    partition: Literal["iid", "dirichlet"] = "iid"
    #: Concentration of the Dirichlet label split; smaller is more skewed.
    dirichlet_alpha: Annotated[float, Field(gt=0)] = 0.5
    #: Free-form options passed to the task's builder.
    options: dict[str, Any] = Field(default_factory=dict)


class Optimizer(_Section):
    name: Literal["sgd", "nesterov", "adam"] = "sgd"
    lr: Annotated[float, Field(gt=0)] = 0.1
    momentum: Annotated[float, Field(ge=0, lt=1)] = 0.0
    weight_decay: Annotated[float, Field(ge=0)] = 0.0


class OuterOptimizer(_Section):
    """Applied by the root to the aggregated pseudo-gradient. SGD with lr 1 is FedAvg;
    `nesterov` with momentum 0.9 and lr 0.7 is DiLoCo's choice."""

    name: Literal["sgd", "nesterov"] = "sgd"
    lr: Annotated[float, Field(gt=0)] = 1.0
    momentum: Annotated[float, Field(ge=0, lt=1)] = 0.0
    #: Scale the momentum each round by the agreement of the round's updates (mean positive cosine
    #: with the aggregate, in [0, 1]): a round where updates disagree carries less old direction.
    adaptive_momentum: bool = False


class Training(_Section):
    rounds: Annotated[int, Field(ge=1, le=1_000_000)] = 30
    #: Local steps per round (H). 1 is plain gradient exchange.
    sync_every: Annotated[int, Field(ge=1, le=100_000)] = 50
    batch_size: Annotated[int, Field(ge=1, le=65_536)] = 32
    inner_optimizer: Optimizer = Optimizer()
    outer_optimizer: OuterOptimizer = OuterOptimizer()
    #: Cooperative SGD: a worker starts each round from (1 - alpha) * global + alpha * its own model.
    alpha: Annotated[float, Field(ge=0, lt=1)] = 0.0
    #: Workers whose updates must reach the root for a round to commit once the deadline passed.
    #: Default: three quarters of the workers, rounded up.
    min_peers: Annotated[int | None, Field(ge=1)] = None
    #: Seconds the root waits for a round before committing with a quorum.
    round_deadline_seconds: Annotated[float, Field(gt=0, le=86_400)] = 10.0
    seed: int = 0
    #: Evaluate test accuracy at the root every this many rounds (and always on the last).
    eval_every: Annotated[int, Field(ge=1)] = 1
    #: Overlap compute and exchange: a worker trains the next round's local steps while its update is
    #: in flight, and its update for round r+1 is computed from a model one round stale
    #: (swarm_worker.training.pipeline has the maths).
    pipeline: bool = False
    #: Size each round's local steps to this worker's measured step time, so that its training fits
    #: in half the round deadline (never more than `syncEvery`, never fewer than 1).
    adaptive_steps: bool = False


class Compression(_Section):
    #: `topk` sends the largest `ratio` of coordinates with error feedback; `none` sends dense fp32.
    method: Literal["topk", "none"] = "topk"
    ratio: Annotated[float, Field(gt=0, le=1)] = 0.01
    #: `exact` is torch.topk; `sampled` estimates the threshold from a sample (DGC), much faster.
    selector: Literal["exact", "sampled"] = "sampled"
    value_dtype: Literal["float16", "bfloat16", "float32"] = "float16"
    error_feedback: bool = True
    #: `own`: each worker sends its own top-k. `common`: all workers send the root-announced support
    #: (the most voted coordinates), so robust coordinate-wise rules compare like with like; `auto`
    #: is `common` for every rule but mean and weighted-mean. See swarm_worker.maths.support.
    support: Literal["auto", "own", "common"] = "auto"
    #: How the root sends the new model down: `delta` (only the changed coordinates) or `dense`.
    broadcast: Literal["delta", "dense"] = "delta"


class PreAggregation(_Section):
    name: PreAggregationName
    #: bucketing: bucket size s; clipping: the static threshold.
    param: float | None = None


class Reputation(_Section):
    enabled: bool = True
    #: Nodes whose reputation stays below this for `quarantine_rounds` rounds are quarantined.
    threshold: Annotated[float, Field(ge=0.1, le=1)] = 0.5
    quarantine_rounds: Annotated[int, Field(ge=1)] = 3
    #: EMA decay of reputation: new = decay * old + (1 - decay) * score.
    decay: Annotated[float, Field(ge=0, lt=1)] = 0.8


class Robustness(_Section):
    rule: RuleName = "mean"
    #: Number of Byzantine inputs each aggregator must tolerate.
    f: Annotated[int, Field(ge=0)] = 0
    pre_aggregation: Annotated[list[PreAggregation], Field(max_length=8)] = Field(default_factory=list)
    reputation: Reputation = Reputation()
    #: Largest |value| an aggregator accepts in an update, as a multiple of max(1, max |theta|) of the
    #: round's model; an update with a larger value is dropped (reason `magnitude`) before the rule
    #: sees it, at every level (an aggregate of bounded updates obeys the same bound). It stops absurd
    #: values (1e30, or float16's 65504 when theta is about 1); plausible attacks (sign-flip x10) are
    #: the rule's. Measured: honest workers sent at most 0.36 x max(1, max |theta|) (raw local update:
    #: 0.32) over whole runs of examples/digits.yaml and examples/robust.yaml (honest workers, top-1%
    #: with error feedback); the default is over 100x that.
    max_update_ratio: Annotated[float, Field(gt=0)] = 50.0


class Checkpoint(_Section):
    every_rounds: Annotated[int, Field(ge=1)] = 5
    #: Directory of the root's checkpoints. Empty: `<output>/checkpoints` for `swarm run`,
    #: `/var/lib/swarm/checkpoints` in a pod.
    path: str = ""
    #: An existing PersistentVolumeClaim in the job's namespace, mounted at `path` on the root pod, so
    #: a replaced root pod resumes from its last checkpoint (ReadWriteOnce is enough); empty uses an
    #: emptyDir, which survives container restarts but not pod replacement. Ignored by `swarm run`.
    claim_name: str = ""


class SwarmSpec(_Section):
    image: str = "ncrsh-swarm-worker:0.1.0"
    workers: Workers = Workers()
    topology: Topology = Topology()
    task: Task = Task()
    training: Training = Training()
    compression: Compression = Compression()
    robustness: Robustness = Robustness()
    checkpoint: Checkpoint = Checkpoint()
    consensus: Consensus = Consensus()
    restart_policy: RestartPolicy = RestartPolicy()
    simulation: Simulation = Simulation()
    network: Network = Network()
    ttl_seconds_after_finished: Annotated[int | None, Field(ge=0)] = None

    @model_validator(mode="after")
    def _cross_field_checks(self) -> SwarmSpec:
        n = self.workers.replicas
        if self.training.min_peers is not None and self.training.min_peers > n:
            raise ValueError(f"training.minPeers ({self.training.min_peers}) exceeds workers.replicas ({n})")
        if self.training.min_peers is not None and self.training.min_peers > self.guaranteed_workers:
            raise ValueError(
                f"training.minPeers ({self.training.min_peers}) exceeds the {self.guaranteed_workers} "
                f"workers a round is sure to hear from when up to robustness.f ({self.robustness.f}) "
                "children per aggregator misbehave: lower it, or raise topology.branchingFactor"
            )
        for b in self.simulation.byzantine:
            if b.worker >= n:
                raise ValueError(
                    f"simulation.byzantine worker {b.worker} is not a rank below workers.replicas ({n})"
                )
        if not valid_replica_count(r := self.consensus.replicas):
            raise ValueError(f"consensus.replicas ({r}) must be 1 or 3f + 1 (4, 7, ...)")
        liars = self.simulation.byzantine_replicas
        if any(b.replica >= r for b in liars) or len({b.replica for b in liars}) != len(liars):
            raise ValueError(f"simulation.byzantineReplicas: distinct indices below consensus.replicas ({r})")
        if len(liars) > tolerated_faults(r):
            f = tolerated_faults(r)
            raise ValueError(f"simulation.byzantineReplicas: {len(liars)} liars, {r} replicas tolerate {f}")
        if self.training.pipeline and self.training.alpha > 0:
            raise ValueError("training.pipeline cannot be combined with training.alpha > 0")
        if self.task.name in TOKEN_TASKS and self.task.partition == "dirichlet":
            raise ValueError(
                f"task.partition 'dirichlet' needs class labels; task {self.task.name!r} has none"
            )
        net = self.network
        if len({net.data_port, net.metrics_port, net.consensus_port}) != 3:
            raise ValueError("network: dataPort, metricsPort and consensusPort must differ")
        if len({b.worker for b in self.simulation.byzantine}) != len(self.simulation.byzantine):
            raise ValueError("simulation.byzantine lists a worker twice")
        return self

    @property
    def common_support(self) -> bool:
        """Whether updates travel on the root-announced common support (see swarm_worker.maths.support)."""
        if self.compression.method != "topk":
            return False
        if self.compression.support == "auto":
            return self.robustness.rule not in ("mean", "weighted-mean")
        return self.compression.support == "common"

    @property
    def bucket_size(self) -> int:
        """Inputs per bucket with the bucketing pre-aggregation (1 without it)."""
        return next((int(p.param or 2) for p in self.robustness.pre_aggregation if p.name == "bucketing"), 1)

    @functools.cached_property
    def guaranteed_workers(self) -> int:
        """Workers the root hears from per round with f misbehaving children at every aggregator
        (swarm_contract.tolerance): the most a quorum can ask without an attacker stalling rounds.
        Cached: the root's quorum check asks for it on every poll turn past the deadline."""
        tree = plan_tree(self.workers.replicas, self.topology.branching_factor)
        return guaranteed_workers(tree, self.robustness.rule, self.robustness.f, self.bucket_size)

    @property
    def quorum(self) -> int:
        """Workers needed at the root to commit a round after its deadline."""
        if self.training.min_peers is not None:
            return self.training.min_peers
        return max(1, math.ceil(0.75 * self.workers.replicas))
