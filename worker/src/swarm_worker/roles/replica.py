"""A root replica's process (`consensus.replicas` R > 1): consensus.replica's shell and agreement
around the root's commit (consensus.root_commit), with its own consensus port (consensus.mesh).
"""

from __future__ import annotations

import zmq

from swarm_worker.consensus.replica import Replica
from swarm_worker.consensus.replica_shell import ReplicaShell
from swarm_worker.consensus.root_commit import RootCommit
from swarm_worker.node.runtime import NodeRuntime


def run_replica(rt: NodeRuntime) -> int:
    commit = RootCommit(rt)
    theta, round_index, state = commit.initial_state()
    shell = ReplicaShell(rt, theta, round_index)
    commit.restore(shell, state)
    replica = Replica(rt, shell, commit)
    shell.replica = replica
    shell.poller.register(replica.mesh.router, zmq.POLLIN)  # the loop wakes for the other replicas
    commit.consensus = replica.status
    commit.publish(shell)
    if round_index >= rt.settings.spec.training.rounds:
        commit.finish(shell)
    try:
        return shell.run(replica)
    finally:
        replica.mesh.close()
