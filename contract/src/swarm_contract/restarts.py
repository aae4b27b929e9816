"""The restart policy of a job, one for the operator (pods) and `swarm run` (local processes).

A node failed; may it be replaced, when, or does its failure end the job?

    verdict = decide_restart(spec.restart_policy, "worker-3", "OOMKilled: exit code 137",
                             node_restarts=2, job_restarts=4, now=clock())
    verdict.action   "restart-now", "restart-later" (at verdict.not_before) or "fail"
    verdict.reason   for "fail": NodeRestartLimitExceeded or JobRestartLimitExceeded

The n-th replacement of one node (1-based) waits backoff = min(backoffSeconds * 2^(n-1),
maxBackoffSeconds). A node already replaced `perNodeLimit` times fails the job; so does any failure
once the job's nodes were replaced `perJobLimit` times in all; the per-node budget is checked first.

Pure, torch-free and kopf-free: the caller owns the counts (the operator keeps them in the job's
status, the launcher in memory) and passes its clock in as seconds (`now`; the verdict's
`not_before` is on the same clock).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from swarm_contract.operations import RestartPolicy

NODE_LIMIT_EXCEEDED = "NodeRestartLimitExceeded"
JOB_LIMIT_EXCEEDED = "JobRestartLimitExceeded"

Action = Literal["restart-now", "restart-later", "fail"]


def backoff_seconds(policy: RestartPolicy, restart_number: int) -> float:
    """Delay before the `restart_number`-th replacement of one node (1-based; 0 and below: none)."""
    if restart_number < 1:
        return 0.0
    # The exponent is capped so that a huge count cannot overflow the float before the min().
    delay = policy.backoff_seconds * 2.0 ** min(restart_number - 1, 62)
    return float(min(delay, policy.max_backoff_seconds))


@dataclass(frozen=True)
class RestartVerdict:
    """What to do about one failure of one node."""

    action: Action
    #: The node's replacement number if it is replaced (its earlier count + 1).
    restart_number: int
    #: For a restart: how long to wait, and `now + delay_seconds` on the caller's clock.
    delay_seconds: float = 0.0
    not_before: float = 0.0
    #: For "fail": a CamelCase reason (the job's status.reason).
    reason: str = ""
    #: One line for the log, an event or the job's status.message.
    message: str = ""


def decide_restart(
    policy: RestartPolicy,
    node_id: str,
    failure: str,
    *,
    node_restarts: int,
    job_restarts: int,
    now: float,
) -> RestartVerdict:
    """Decide about a failure of `node_id` (described by `failure`, e.g. "Error: exit code 3").

    `node_restarts` counts the replacements of this node so far, `job_restarts` those of all nodes.
    """
    n = node_restarts + 1
    if n > policy.per_node_limit:
        return RestartVerdict(
            "fail",
            n,
            reason=NODE_LIMIT_EXCEEDED,
            message=f"{node_id} failed ({failure}) after {node_restarts} replacements "
            f"(restartPolicy.perNodeLimit {policy.per_node_limit})",
        )
    if job_restarts + 1 > policy.per_job_limit:
        return RestartVerdict(
            "fail",
            n,
            reason=JOB_LIMIT_EXCEEDED,
            message=f"{node_id} failed ({failure}) after {job_restarts} replacements in the job "
            f"(restartPolicy.perJobLimit {policy.per_job_limit})",
        )
    delay = backoff_seconds(policy, n)
    return RestartVerdict(
        "restart-now" if delay == 0 else "restart-later",
        n,
        delay_seconds=delay,
        not_before=now + delay,
        message=f"{node_id} failed ({failure}); replacement {n}/{policy.per_node_limit} in {delay:g}s",
    )
