"""The key layout (swarm_contract.keys), the operator's key Secret (swarm_operator.keys) and a
node's key files (swarm_worker.protocol.curve), checked against ZeroMQ's own Z85 and X25519 and
against `cryptography`'s ed25519; with one root and with R = 4 root replicas."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
import zmq
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from hypothesis import given
from hypothesis import strategies as st
from zmq.utils import z85

from swarm_contract.keys import (
    KEYS_MOUNT,
    KeyTextError,
    all_entries,
    job_nodes,
    keys_needed,
    possible_children,
    possible_parents,
    replica_peers,
    validate_key_text,
    z85_decode,
    z85_encode,
)
from swarm_contract.topology import plan_tree
from swarm_operator.keys import (
    build_keys_secret,
    generate_pair,
    generate_signing_pair,
    keys_mount,
    keys_volume,
    secret_data,
    secret_items,
)
from swarm_worker.protocol.curve import KeyFileError, load_node_keys, write_job_keys

#: root <- agg-0 <- worker-0..3, root <- agg-1 <- worker-4..7
TREE = plan_tree(8, 4)
#: root, root-1, root-2, root-3: tolerates one faulty replica.
REPLICAS = ("root", "root-1", "root-2", "root-3")


@given(st.binary(max_size=64).map(lambda b: b[: len(b) - len(b) % 4]))
def test_z85_matches_zmq(data: bytes) -> None:
    assert z85_encode(data) == z85.encode(data).decode()
    assert z85_decode(z85_encode(data)) == data


def test_z85_of_the_rfc_example() -> None:
    # ZeroMQ RFC 32's test vector.
    raw = bytes([0x86, 0x4F, 0xD2, 0x6F, 0xB5, 0x59, 0xF7, 0x5B])
    assert z85_encode(raw) == "HelloWorld"
    assert z85_decode("HelloWorld") == raw


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("abc", "key.public: a CURVE key is 40 Z85 characters, got 3"),
        ("a" * 39 + '"', "key.public: '\"' is not a Z85 character"),
        ("#" * 40, "key.public: '#####' is beyond a 4-byte Z85 group"),
    ],
    ids=["short", "outside-the-alphabet", "overflow"],
)
def test_a_bad_key_text_is_a_one_line_error(text: str, message: str) -> None:
    with pytest.raises(KeyTextError) as e:
        validate_key_text(text, "key.public")
    assert str(e.value) == message


def test_a_key_text_with_a_final_newline_is_a_key() -> None:
    public, _ = zmq.curve_keypair()
    assert validate_key_text(public.decode() + "\n", "x") == z85.decode(public)


def own(node_id: str) -> set[str]:
    return {f"{node_id}{suffix}" for suffix in (".public", ".secret", ".verify", ".sign")}


def test_a_worker_needs_its_pairs_its_parents_public_key_and_the_roots_verify_key() -> None:
    assert keys_needed(TREE, "worker-5", reshuffle=False) == {*own("worker-5"), "agg-1.public", "root.verify"}


def test_an_aggregator_needs_its_parent_and_its_children() -> None:
    assert keys_needed(TREE, "agg-0", reshuffle=False) == {
        *own("agg-0"),
        "root.public",
        "root.verify",
        *(f"worker-{r}.public" for r in range(4)),
    }
    assert possible_children(TREE, "root", reshuffle=False) == {"agg-0", "agg-1"}
    assert possible_parents(TREE, "root", reshuffle=False) == frozenset()


def test_with_reshuffle_workers_and_bottom_aggregators_know_each_other() -> None:
    assert possible_parents(TREE, "worker-5", reshuffle=True) == {"agg-0", "agg-1"}
    assert possible_children(TREE, "agg-0", reshuffle=True) == {f"worker-{r}" for r in range(8)}
    # The root still hears only from the aggregators.
    assert possible_children(TREE, "root", reshuffle=True) == {"agg-0", "agg-1"}


@pytest.mark.parametrize("replicas", [1, 4])
@pytest.mark.parametrize("reshuffle", [False, True])
def test_no_node_needs_another_nodes_secret_or_signing_key(replicas: int, reshuffle: bool) -> None:
    for node_id in job_nodes(TREE, replicas):
        needed = keys_needed(TREE, node_id, reshuffle=reshuffle, replicas=replicas)
        assert {e for e in needed if e.endswith((".secret", ".sign"))} == {
            f"{node_id}.secret",
            f"{node_id}.sign",
        }
        # Every node checks commit certificates.
        assert {f"{r}.verify" for r in REPLICAS[:replicas]} <= needed


@pytest.mark.parametrize(
    ("node_id", "replicas"),
    [("worker-99", 1), ("root-1", 1), ("root-4", 4), ("agg-7", 4)],
    ids=["worker-outside-the-tree", "replica-of-a-single-root", "replica-beyond-R", "aggregator"],
)
def test_an_id_outside_the_job_is_refused(node_id: str, replicas: int) -> None:
    with pytest.raises(KeyError, match=f"no node '{node_id}'"):
        keys_needed(TREE, node_id, reshuffle=False, replicas=replicas)


def test_a_top_level_node_reports_to_every_replica() -> None:
    assert possible_parents(TREE, "agg-1", reshuffle=False, replicas=4) == set(REPLICAS)
    assert keys_needed(TREE, "agg-1", reshuffle=False, replicas=4) == {
        *own("agg-1"),
        *(f"{r}.public" for r in REPLICAS),
        *(f"{r}.verify" for r in REPLICAS),
        *(f"worker-{r}.public" for r in range(4, 8)),
    }
    # Below the top level nothing changes but the replicas' verify keys.
    assert keys_needed(TREE, "worker-5", reshuffle=True, replicas=4) == {
        *own("worker-5"),
        "agg-0.public",
        "agg-1.public",
        *(f"{r}.verify" for r in REPLICAS),
    }


def test_workers_under_the_root_report_to_every_replica() -> None:
    flat = plan_tree(3, 4)
    for reshuffle in (False, True):
        assert possible_parents(flat, "worker-2", reshuffle=reshuffle, replicas=4) == set(REPLICAS)
        assert possible_children(flat, "root-3", reshuffle=reshuffle, replicas=4) == {
            "worker-0",
            "worker-1",
            "worker-2",
        }


def test_a_replica_knows_its_children_and_the_other_replicas() -> None:
    assert possible_parents(TREE, "root-2", reshuffle=False, replicas=4) == frozenset()
    assert possible_children(TREE, "root-2", reshuffle=True, replicas=4) == {"agg-0", "agg-1"}
    assert replica_peers(TREE, "root-2", 4) == {"root", "root-1", "root-3"}
    assert replica_peers(TREE, "agg-0", 4) == frozenset()
    expected = {
        *own("root-2"),
        *(f"{r}.public" for r in ("root", "root-1", "root-3")),
        *(f"{r}.verify" for r in REPLICAS),
        # its children: as CURVE clients, and as the signers of the updates a leader relays
        "agg-0.public",
        "agg-1.public",
        "agg-0.verify",
        "agg-1.verify",
    }
    assert keys_needed(TREE, "root-2", reshuffle=False, replicas=4) == expected
    # Replica 0 is the tree's root and needs the same kind of set.
    assert keys_needed(TREE, "root", reshuffle=False, replicas=4) == {
        *own("root"),
        *(f"{r}.public" for r in ("root-1", "root-2", "root-3")),
        *(f"{r}.verify" for r in REPLICAS),
        "agg-0.public",
        "agg-1.public",
        "agg-0.verify",
        "agg-1.verify",
    }


def test_the_job_has_four_entries_per_node_and_replica() -> None:
    assert job_nodes(TREE, 4) == tuple(sorted([*TREE.nodes, "root-1", "root-2", "root-3"]))
    assert all_entries(TREE, 4) == {e for n in job_nodes(TREE, 4) for e in own(n)}
    assert all_entries(TREE) == {e for n in TREE.nodes for e in own(n)}


def test_an_operator_pair_is_a_curve_pair() -> None:
    public, secret = generate_pair()
    assert len(public) == len(secret) == 40
    assert zmq.curve_public(secret.encode()) == public.encode()


def test_an_operator_signing_pair_signs_and_verifies() -> None:
    verify, sign = generate_signing_pair()
    assert len(verify) == len(sign) == 40
    signer = Ed25519PrivateKey.from_private_bytes(z85_decode(sign))
    Ed25519PublicKey.from_public_bytes(z85_decode(verify)).verify(signer.sign(b"point"), b"point")


@pytest.mark.parametrize("replicas", [1, 4])
def test_the_secret_holds_distinct_pairs_per_node(replicas: int) -> None:
    data = secret_data(TREE, replicas)
    assert set(data) == all_entries(TREE, replicas)
    assert len(set(data.values())) == len(data)
    for node_id in job_nodes(TREE, replicas):
        assert zmq.curve_public(data[f"{node_id}.secret"].encode()) == data[f"{node_id}.public"].encode()
        signer = Ed25519PrivateKey.from_private_bytes(z85_decode(data[f"{node_id}.sign"]))
        assert signer.public_key().public_bytes_raw() == z85_decode(data[f"{node_id}.verify"])


def test_a_pod_mounts_only_the_entries_it_needs() -> None:
    items = secret_items(TREE, "agg-1", reshuffle=False)
    assert [i["key"] for i in items] == sorted(keys_needed(TREE, "agg-1", reshuffle=False))
    assert all(i["path"] == i["key"] for i in items)
    volume = keys_volume("digits", TREE, "agg-1", reshuffle=False)
    assert volume["secret"]["secretName"] == "digits-keys"
    assert volume["secret"]["items"] == items
    assert keys_mount() == {"name": "keys", "mountPath": KEYS_MOUNT, "readOnly": True}
    secret = build_keys_secret("digits", {"name": "digits-keys"}, TREE)
    assert (secret["kind"], secret["metadata"]["name"]) == ("Secret", "digits-keys")
    assert set(secret["stringData"]) == all_entries(TREE)
    replicated = keys_volume("digits", TREE, "root-3", reshuffle=False, replicas=4)["secret"]["items"]
    assert [i["key"] for i in replicated] == sorted(keys_needed(TREE, "root-3", reshuffle=False, replicas=4))
    assert set(build_keys_secret("digits", {}, TREE, 4)["stringData"]) == all_entries(TREE, 4)


def test_written_keys_load_for_each_node(tmp_path: Path) -> None:
    folder = write_job_keys(tmp_path / "keys", TREE)
    assert {p.name for p in folder.iterdir()} == all_entries(TREE)
    assert stat.S_IMODE(os.stat(folder / "root.secret").st_mode) == 0o600
    keys = load_node_keys(folder, TREE, "agg-0", reshuffle=False)
    assert zmq.curve_public(keys.secret) == keys.public
    assert set(keys.parents) == {"root"}
    assert set(keys.children) == {f"worker-{r}" for r in range(4)}
    assert keys.client("root").server == (folder / "root.public").read_text().strip().encode()
    with pytest.raises(KeyFileError, match="no public key for parent 'agg-1'"):
        keys.client("agg-1")


def test_writing_again_keeps_the_keys(tmp_path: Path) -> None:
    folder = write_job_keys(tmp_path, TREE)
    before = (folder / "worker-3.secret").read_text()
    write_job_keys(folder, TREE)
    assert (folder / "worker-3.secret").read_text() == before


def test_a_missing_key_file_is_named(tmp_path: Path) -> None:
    folder = write_job_keys(tmp_path, TREE)
    (folder / "worker-2.public").unlink()
    with pytest.raises(KeyFileError, match=r"worker-2\.public: missing"):
        load_node_keys(folder, TREE, "agg-0", reshuffle=False)
    load_node_keys(folder, TREE, "agg-1", reshuffle=False)  # agg-1 does not need it


def test_a_corrupt_key_file_is_named(tmp_path: Path) -> None:
    folder = write_job_keys(tmp_path, TREE)
    (folder / "root.public").write_text("not a key\n")
    with pytest.raises(KeyFileError, match=r"root\.public: a CURVE key is 40 Z85 characters, got 9"):
        load_node_keys(folder, TREE, "agg-0", reshuffle=False)


def test_replica_keys_load_for_each_role(tmp_path: Path) -> None:
    folder = write_job_keys(tmp_path / "keys", TREE, 4)
    assert {p.name for p in folder.iterdir()} == all_entries(TREE, 4)
    for private in ("root-3.secret", "root-3.sign", "worker-0.sign"):
        assert stat.S_IMODE(os.stat(folder / private).st_mode) == 0o600
    agg = load_node_keys(folder, TREE, "agg-0", reshuffle=False, replicas=4)
    assert set(agg.parents) == set(REPLICAS)
    assert set(agg.replica_verify) == set(REPLICAS)
    assert agg.replica_peers == {}
    assert agg.child_verify == {}
    for r in REPLICAS:
        assert agg.client(r).server == (folder / f"{r}.public").read_text().strip().encode()
    replica = load_node_keys(folder, TREE, "root-1", reshuffle=False, replicas=4)
    assert zmq.curve_public(replica.secret) == replica.public
    assert set(replica.children) == set(replica.child_verify) == {"agg-0", "agg-1"}
    assert set(replica.replica_peers) == {"root", "root-2", "root-3"}
    assert replica.peer_client("root").server == (folder / "root.public").read_text().strip().encode()
    with pytest.raises(KeyFileError, match="no public key for replica 'agg-0'"):
        replica.peer_client("agg-0")
    # What a replica signs, every node verifies with the key it loaded for that replica.
    agg.replica_verify["root-1"].verify(replica.signer.sign(b"commit"), b"commit")
    replica.child_verify["agg-0"].verify(agg.signer.sign(b"update"), b"update")


def test_a_key_directory_without_signing_keys_gains_them_and_keeps_its_curve_keys(tmp_path: Path) -> None:
    folder = write_job_keys(tmp_path, TREE)
    for sign in folder.glob("*.sign"):
        sign.unlink()
    (folder / "agg-0.verify").unlink()
    curve_before = {p.name: p.read_text() for p in folder.glob("*.secret")}
    verify_before = (folder / "worker-3.verify").read_text()
    write_job_keys(folder, TREE, 4)
    assert {p.name: p.read_text() for p in folder.glob("*.secret") if p.name in curve_before} == curve_before
    assert (folder / "worker-3.verify").read_text() != verify_before  # a pair missing its half is redone
    load_node_keys(folder, TREE, "worker-3", reshuffle=False, replicas=4)


def test_a_signing_key_that_does_not_match_its_verify_key_is_refused(tmp_path: Path) -> None:
    folder = write_job_keys(tmp_path, TREE)
    (folder / "agg-1.sign").write_text((folder / "agg-0.sign").read_text())
    with pytest.raises(KeyFileError, match=r"agg-1\.verify: not the key of agg-1\.sign"):
        load_node_keys(folder, TREE, "agg-1", reshuffle=False)


def test_a_corrupt_verify_key_file_is_named(tmp_path: Path) -> None:
    folder = write_job_keys(tmp_path, TREE, 4)
    (folder / "root-2.verify").write_text("short\n")
    with pytest.raises(KeyFileError, match=r"root-2\.verify: an ed25519 key is 40 Z85 characters, got 5"):
        load_node_keys(folder, TREE, "worker-0", reshuffle=False, replicas=4)
