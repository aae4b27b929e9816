"""CURVE in a real node process: the root of a 3-worker job (`swarm node --keys`), with the test's
peers in the workers' slots (tests/adversarial/rogue.py): the honest worker's HELLO from another
round gets the model; a peer without a key, one with a key outside the tree and one with worker-1's
key speaking as worker-2 get nothing, and the root's /metrics counts each by reason."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import zmq

from swarm_contract.topology import ROOT_ID, plan_tree
from swarm_worker.protocol.curve import ClientKeys, load_node_keys, write_job_keys
from tests.adversarial.nodes import NUMEL, Node, manifest_doc, node_process
from tests.adversarial.rogue import Rogue, dense_of
from tests.polling import poll

pytestmark = pytest.mark.integration
JOB = "curve"
SPEC = {"workers": {"replicas": 3}, "topology": {"branchingFactor": 4}, "training": {"rounds": 100}}
TREE = plan_tree(3, 4)


@pytest.fixture
def root(tmp_path: Path) -> Iterator[tuple[Node, Path]]:
    keys = write_job_keys(tmp_path / "keys", TREE)
    with node_process(tmp_path, manifest_doc(JOB, SPEC), ROOT_ID, keys=keys) as node:
        yield node, keys
        node.alive()


def client(keys: Path, node_id: str) -> ClientKeys:
    return load_node_keys(keys, TREE, node_id, reshuffle=False).client(ROOT_ID)


def counted(node: Node, reason: str) -> None:
    poll(
        lambda: f"a {reason!r} drop at the root, have {node.dropped()}",
        lambda: node.dropped().get(reason, 0) >= 1,
        timeout=60,
    )


def test_only_the_trees_keys_get_the_model(root: tuple[Node, Path]) -> None:
    node, keys = root
    with Rogue(node.address, "worker-0", JOB, curve=client(keys, "worker-0")) as honest:
        honest.hello(1)
        assert dense_of(honest.expect("model", timeout=60).tensors["theta"]).numel() == NUMEL
    with Rogue(node.address, "worker-1", JOB) as plain:
        plain.hello(1)
        counted(node, "unauthenticated")
        assert plain.receive(timeout=1) is None
    outsider_keys = ClientKeys(*zmq.curve_keypair(), server=client(keys, "worker-0").server)
    with Rogue(node.address, "worker-1", JOB, curve=outsider_keys) as outsider:
        outsider.hello(1)
        counted(node, "unknown-key")
        assert outsider.receive(timeout=1) is None
    with Rogue(node.address, "worker-2", JOB, curve=client(keys, "worker-1")) as impostor:
        impostor.hello(1)
        counted(node, "identity")
        assert impostor.receive(timeout=1) is None
