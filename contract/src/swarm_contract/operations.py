"""How a job runs rather than what it trains: the root's replicas (`spec.consensus`), the restart
budget (`spec.restartPolicy`) and the ports and frame bound of its nodes (`spec.network`). Sections
of `swarm_contract.spec.SwarmSpec`, which checks them against the rest of the spec.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from swarm_contract.section import Section as _Section


class Consensus(_Section):
    #: Root replicas: 1, or 3f + 1 to tolerate f crashed or lying ones (docs/consensus.md).
    replicas: Annotated[int, Field(ge=1, le=31)] = 1
    #: Seconds without a commit, once the round is ready (all reported or deadline), before a view change.
    view_timeout_seconds: Annotated[float, Field(gt=0, le=3600)] = 10.0


class RestartPolicy(_Section):
    per_node_limit: Annotated[int, Field(ge=0)] = 3
    per_job_limit: Annotated[int, Field(ge=0)] = 20
    backoff_seconds: Annotated[float, Field(ge=0)] = 1.0
    max_backoff_seconds: Annotated[float, Field(ge=0)] = 60.0


class Network(_Section):
    data_port: Annotated[int, Field(ge=1024, le=65535)] = 5555
    metrics_port: Annotated[int, Field(ge=1024, le=65535)] = 9090
    #: A root replica's port for the other replicas (prepare, commit, view change, state transfer);
    #: only opened with `consensus.replicas` > 1.
    consensus_port: Annotated[int, Field(ge=1024, le=65535)] = 5556
    #: Largest frame any node accepts; ZeroMQ drops a bigger message (and the peer's connection)
    #: before it is read. Unset: derived from the model, 4 x its dense fp32 size + 4 MiB for the
    #: header frame (swarm_worker.protocol.transport.effective_max_message_bytes).
    max_message_bytes: Annotated[int | None, Field(ge=1024)] = None
