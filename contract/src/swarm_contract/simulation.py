"""`spec.simulation`: attackers a run plays on purpose, for experiments and tests.

Byzantine workers (`byzantine`) attack with their updates (swarm_worker.simulation.attacks). Byzantine
root replicas (`byzantineReplicas`, with `consensus.replicas` R > 1) attack the replicas' agreement
(swarm_worker.roles.replica): `wrong-model` proposes, as leader, a result its inputs do not give and
sends the children a model of its own; `wrong-hash` signs its votes for digests nobody computed;
`equivocate` sends, as leader, different proposals to different replicas.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from swarm_contract.section import Section


class ByzantineWorker(Section):
    worker: Annotated[int, Field(ge=0)]
    attack: Literal["sign-flip", "gaussian", "alie", "ipm", "label-flip", "mimic", "nan", "crash", "silent"]
    #: Attack strength (sign-flip scale, gaussian std, IPM epsilon, ALIE z); None uses the attack's default.
    scale: float | None = None


class ByzantineReplica(Section):
    #: The replica's index (1 ... R-1 is `root-<i>`, 0 is `root`).
    replica: Annotated[int, Field(ge=0)]
    attack: Literal["wrong-model", "wrong-hash", "equivocate"]


class Simulation(Section):
    byzantine: Annotated[list[ByzantineWorker], Field(max_length=1024)] = Field(default_factory=list)
    byzantine_replicas: Annotated[list[ByzantineReplica], Field(max_length=31)] = Field(default_factory=list)
