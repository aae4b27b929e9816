"""The root with one replica (`consensus.replicas: 1`): an aggregating shell whose rounds go into
consensus.root_commit.RootCommit (the outer step, evaluation, checkpoints, status, the end), each
model signed by the root itself. Several replicas: roles.replica.
"""

from __future__ import annotations

from swarm_worker.consensus.outcome import held_certificate
from swarm_worker.consensus.root_commit import RootCommit
from swarm_worker.node.aggregating import AggregatorShell
from swarm_worker.node.runtime import NodeRuntime
from swarm_worker.protocol.certificate import certificate_to_wire


def run_root(rt: NodeRuntime) -> int:
    commit = RootCommit(rt)
    theta, round_index, state = commit.initial_state()
    shell = AggregatorShell(rt, theta, round_index)
    commit.restore(shell, state)
    if rt.keys is not None:
        held = held_certificate(rt.settings.job, round_index, theta, shell.state.support, rt.keys)
        shell.certificate = certificate_to_wire(held)
    commit.publish(shell)
    if round_index >= rt.settings.spec.training.rounds:
        commit.finish(shell)
    return shell.run(commit)
