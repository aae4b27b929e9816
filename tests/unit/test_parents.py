"""A node's parent side (swarm_worker.node.parents) over real ZeroMQ CURVE sockets on loopback: four
ROUTERs stand in for the root's replicas (R = 4, f = 1) and speak with the replicas' own keys; models
carry real commit certificates (tests.unit.test_certified). Also the `--replicas` addresses every
child of the root gets from the one command-line builder."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import zmq

from swarm_contract.command import node_argv, process_ids
from swarm_contract.consensus import replica_ids
from swarm_contract.manifest import Manifest
from swarm_contract.spec import SpecError, SwarmSpec
from swarm_contract.topology import plan_tree
from swarm_worker.cli import build_parser
from swarm_worker.node.parents import Heard, ParentLinks, parent_addresses
from swarm_worker.node.runtime import NodeSettings
from swarm_worker.node.telemetry import NodeMetrics
from swarm_worker.node.traffic import Traffic
from swarm_worker.protocol.certificate import tensors_digest
from swarm_worker.protocol.codec import Message, decode, encode
from swarm_worker.protocol.signing import verify_update
from swarm_worker.protocol.transport import encode_message
from tests.unit.test_certified import (
    JOB,
    QUORUM,
    Job,
    R,
    certified,
    delta_message,
    dense_message,
    forged_value,
    job_keys,
)

TIMEOUT_MS = 5_000


class Replicas:
    """CURVE ROUTERs with the replicas' keys (no ZAP handler: any client is let in)."""

    def __init__(self, ctx: zmq.Context[Any], job: Job) -> None:
        self.routers: dict[str, zmq.Socket[Any]] = {}
        self.addresses: dict[str, str] = {}
        self.child: dict[str, bytes] = {}  # replica -> the routing id the child's DEALER uses
        for replica, keys in job.replicas.items():
            sock = ctx.socket(zmq.ROUTER)
            sock.setsockopt(zmq.LINGER, 0)
            sock.setsockopt(zmq.CURVE_SERVER, 1)
            sock.setsockopt(zmq.CURVE_PUBLICKEY, keys.public)
            sock.setsockopt(zmq.CURVE_SECRETKEY, keys.secret)
            port = sock.bind_to_random_port("tcp://127.0.0.1")
            self.routers[replica], self.addresses[replica] = sock, f"127.0.0.1:{port}"

    def recv(self, replica: str) -> Message:
        sock = self.routers[replica]
        assert sock.poll(TIMEOUT_MS), f"{replica} heard nothing"
        identity, *frames = sock.recv_multipart()
        self.child[replica] = identity
        return decode(frames)

    def send(self, replica: str, msg: Message) -> None:
        self.routers[replica].send_multipart([self.child[replica], *encode(msg)])


def stop_message() -> Message:
    return Message("stop", JOB, 8, "root", {"reason": "training finished"}, {})


def hello_message() -> Message:
    return Message("hello", JOB, 0, "agg-0", {"role": "aggregator", "answered": False}, {})


def same(heard: Message | None, sent: Message) -> bool:
    """Whether the node acts on exactly the model a replica sent."""
    return (
        heard is not None
        and (heard.type, heard.round, heard.meta) == (sent.type, sent.round, sent.meta)
        and tensors_digest(heard.tensors) == tensors_digest(sent.tensors)
    )


def hear(links: ParentLinks, held_round: int) -> Heard:
    """The next message the node hears from any parent."""
    poller = zmq.Poller()
    links.register(poller)
    events = dict(poller.poll(TIMEOUT_MS))
    ready = links.ready(events)
    assert ready, "the node heard nothing"
    heard = links.receive(ready[0], held_round)
    assert heard is not None
    return heard


@dataclasses.dataclass
class Setup:
    job: Job
    replicas: Replicas
    links: ParentLinks
    metrics: NodeMetrics

    def said_hello(self) -> None:
        """Each replica learns where the child is (a ROUTER can only answer)."""
        self.links.send(encode_message(hello_message()))
        for replica in self.replicas.routers:
            assert self.replicas.recv(replica).type == "hello"

    def from_(self, replica: str, msg: Message, held_round: int) -> Message | None:
        self.replicas.send(replica, msg)
        heard = hear(self.links, held_round)
        assert heard.sender == replica
        return heard.message


@pytest.fixture(scope="module")
def job(tmp_path_factory: pytest.TempPathFactory) -> Job:
    return job_keys(tmp_path_factory.mktemp("keys"))


@pytest.fixture
def setup(job: Job) -> Iterator[Setup]:
    ctx: zmq.Context[Any] = zmq.Context()
    replicas = Replicas(ctx, job)
    metrics = NodeMetrics("agg-0", "aggregator")
    links = ParentLinks(
        ctx, "agg-0", JOB, replicas.addresses, 1 << 20,
        home="root", keys=job.node, replicas=R, metrics=metrics, traffic=Traffic("agg-0"),
    )  # fmt: skip
    s = Setup(job, replicas, links, metrics)
    s.said_hello()
    yield s
    links.close()
    for sock in replicas.routers.values():
        sock.close(0)
    ctx.term()


def test_every_update_and_hello_reaches_all_four_replicas_and_updates_are_signed(setup: Setup) -> None:
    update = Message(
        "update", JOB, 0, "agg-0",
        {"samples": 8, "workers": 2, "loss": 0.5, "nodes": [], "traffic": []}, {},
    )  # fmt: skip
    setup.links.send(setup.links.seal(update))
    for replica, keys in setup.job.replicas.items():
        got = setup.replicas.recv(replica)
        assert got.type == "update"
        assert verify_update(got, keys.child_verify["agg-0"])  # what each replica checks
    setup.links.send(encode_message(hello_message()))
    assert {r: setup.replicas.recv(r).type for r in setup.replicas.routers} == dict.fromkeys(
        replica_ids(R), "hello"
    )


def test_a_model_from_any_replica_is_applied_once_per_round(setup: Setup) -> None:
    model = certified(delta_message(1), setup.job, QUORUM)
    assert same(setup.from_("root-2", model, held_round=0), model)  # the first one applies
    for other in ("root", "root-1", "root-3"):  # the others' copies of the round now held
        assert setup.from_(other, model, held_round=1) is None
    # root-2 sending the round it already sent: it lost this node's update (the role re-sends it).
    assert same(setup.from_("root-2", model, held_round=1), model)
    assert setup.metrics.dropped_by_reason == {}


def test_a_refused_model_leaves_the_round_to_the_next_replica(setup: Setup) -> None:
    model = certified(delta_message(1), setup.job, QUORUM)
    assert setup.from_("root-3", forged_value(model), held_round=0) is None
    assert setup.metrics.dropped_by_reason == {"certificate": 1}
    assert same(setup.from_("root-1", model, held_round=0), model)


def test_stop_needs_f_plus_one_distinct_replicas(setup: Setup) -> None:
    assert setup.from_("root-3", stop_message(), held_round=5) is None
    assert setup.from_("root-3", stop_message(), held_round=5) is None  # the same liar twice
    assert setup.from_("root", stop_message(), held_round=5) == stop_message()


def test_a_rollback_needs_f_plus_one_replicas_and_a_certificate(setup: Setup) -> None:
    old = certified(dense_message(3), setup.job, QUORUM)
    assert setup.from_("root-2", old, held_round=8) is None  # one replica alone: maybe a replay
    assert setup.from_("root-2", old, held_round=8) is None
    uncertified = certified(dense_message(3), setup.job, ["root"])
    assert setup.from_("root-1", uncertified, held_round=8) is None  # two offers, but no quorum cert
    assert setup.metrics.dropped_by_reason == {"certificate": 1}
    assert same(setup.from_("root", old, held_round=8), old)


def test_one_parent_keeps_todays_rules(tmp_path: Path) -> None:
    single = job_keys(tmp_path, replicas=1)
    ctx: zmq.Context[Any] = zmq.Context()
    replicas = Replicas(ctx, single)
    links = ParentLinks(
        ctx, "agg-0", JOB, replicas.addresses, 1 << 20,
        home="root", keys=single.node, replicas=1, metrics=NodeMetrics("agg-0", "aggregator"),
        traffic=Traffic("agg-0"),
    )  # fmt: skip
    s = Setup(single, replicas, links, links.metrics)
    try:
        s.said_hello()
        update = Message(
            "update", JOB, 0, "agg-0", {"samples": 8, "workers": 2, "loss": 0.5, "nodes": [], "traffic": []}
        )
        links.send(links.seal(update))
        assert "sig" not in replicas.recv("root").meta  # nobody relays it: no signature
        model = certified(dense_message(2), single, ["root"])
        assert same(s.from_("root", model, held_round=1), model)
        assert same(s.from_("root", model, held_round=2), model)  # the parent lost the update
        assert s.from_("root", certified(dense_message(1), single, ["root"]), held_round=2) is not None
        assert s.from_("root", stop_message(), held_round=2) == stop_message()
    finally:
        links.close()
        replicas.routers["root"].close(0)
        ctx.term()


# -- addresses ----------------------------------------------------------------------------------

SPEC4 = SwarmSpec.model_validate(
    {"workers": {"replicas": 4}, "topology": {"branchingFactor": 2}, "consensus": {"replicas": 4}}
)


def settings(**fields: Any) -> NodeSettings:
    manifest = Manifest(name=JOB, namespace="default", spec=SPEC4)
    return NodeSettings(manifest, "agg-0", "h:1", "0.0.0.0", 1, "0.0.0.0", 2, Path("w"), **fields)


ALL = {r: f"{r}:5555" for r in replica_ids(4)}


@pytest.mark.parametrize(
    ("parent", "replicas", "fields", "expected"),
    [
        ("root", 4, {"replicas": ALL}, ALL),
        ("root", 1, {}, {"root": "h:1"}),
        ("agg-4", 4, {}, {"agg-4": "h:1"}),
        ("agg-4", 4, {"peers": {"agg-0": "a:1", "agg-1": "b:1"}}, {"agg-0": "a:1", "agg-1": "b:1"}),
    ],
    ids=["root-replicas", "one-root", "under-an-aggregator", "reshuffled"],
)
def test_parent_addresses(
    parent: str, replicas: int, fields: dict[str, Any], expected: dict[str, str]
) -> None:
    assert parent_addresses(settings(**fields), parent, replicas) == expected


@pytest.mark.parametrize(
    ("parent", "replicas", "given", "message"),
    [
        ("root", 4, {}, "--replicas: a child of the root needs the address of each of root, root-1"),
        ("root", 4, {"root": "h:1", "root-1": "h:2"}, "got root, root-1"),
        ("root", 1, ALL, "--replicas: only for a child of the root with consensus.replicas > 1"),
        ("agg-4", 4, ALL, "--replicas: only for a child of the root"),
    ],
    ids=["missing", "too-few", "one-root", "not-a-child-of-the-root"],
)
def test_wrong_replica_addresses_are_a_one_line_error(
    parent: str, replicas: int, given: dict[str, str], message: str
) -> None:
    with pytest.raises(SpecError, match=message):
        parent_addresses(settings(replicas=given), parent, replicas)


def test_every_child_of_the_root_is_given_every_replicas_address() -> None:
    def argv(node: str, spec: SwarmSpec = SPEC4) -> list[str]:
        return node_argv(
            spec, node, address=lambda n: f"{n}:1", manifest="m", bind_port=1, metrics_port=2, workdir="w"
        )

    for top in ("agg-0", "agg-1"):
        line = argv(top)
        assert (
            line[line.index("--replicas") + 1]
            == "root=root:1,root-1=root-1:1,root-2=root-2:1,root-3=root-3:1"
        )
        args = build_parser().parse_args(line[1:])
        assert args.replicas == {r: f"{r}:1" for r in replica_ids(4)}
    assert "--replicas" not in argv("worker-0")  # reports to agg-0
    one_root = SwarmSpec.model_validate({"workers": {"replicas": 4}, "topology": {"branchingFactor": 2}})
    assert "--replicas" not in argv("agg-0", one_root)
    assert process_ids(SPEC4)[-3:] == ["root-1", "root-2", "root-3"]
    assert process_ids(one_root) == list(plan_tree(4, 2).nodes)
