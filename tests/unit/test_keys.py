"""The CURVE key layout (swarm_contract.keys), the operator's key Secret (swarm_operator.keys) and
a node's key files (swarm_worker.protocol.curve), checked against ZeroMQ's own Z85 and X25519."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
import zmq
from hypothesis import given
from hypothesis import strategies as st
from zmq.utils import z85

from swarm_contract.keys import (
    KEYS_MOUNT,
    KeyTextError,
    all_entries,
    keys_needed,
    possible_children,
    possible_parents,
    validate_key_text,
    z85_decode,
    z85_encode,
)
from swarm_contract.topology import plan_tree
from swarm_operator.keys import (
    build_keys_secret,
    generate_pair,
    keys_mount,
    keys_volume,
    secret_data,
    secret_items,
)
from swarm_worker.protocol.curve import KeyFileError, load_node_keys, write_job_keys

#: root <- agg-0 <- worker-0..3, root <- agg-1 <- worker-4..7
TREE = plan_tree(8, 4)


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


def test_a_worker_needs_its_pair_and_its_parents_public_key() -> None:
    assert keys_needed(TREE, "worker-5", reshuffle=False) == {
        "worker-5.secret",
        "worker-5.public",
        "agg-1.public",
    }


def test_an_aggregator_needs_its_parent_and_its_children() -> None:
    assert keys_needed(TREE, "agg-0", reshuffle=False) == {
        "agg-0.secret",
        "agg-0.public",
        "root.public",
        *(f"worker-{r}.public" for r in range(4)),
    }
    assert possible_children(TREE, "root", reshuffle=False) == {"agg-0", "agg-1"}
    assert possible_parents(TREE, "root", reshuffle=False) == frozenset()


def test_with_reshuffle_workers_and_bottom_aggregators_know_each_other() -> None:
    assert possible_parents(TREE, "worker-5", reshuffle=True) == {"agg-0", "agg-1"}
    assert possible_children(TREE, "agg-0", reshuffle=True) == {f"worker-{r}" for r in range(8)}
    # The root still hears only from the aggregators.
    assert possible_children(TREE, "root", reshuffle=True) == {"agg-0", "agg-1"}


def test_no_node_needs_another_nodes_secret_key() -> None:
    for node_id in TREE.nodes:
        for reshuffle in (False, True):
            secrets = {e for e in keys_needed(TREE, node_id, reshuffle=reshuffle) if e.endswith(".secret")}
            assert secrets == {f"{node_id}.secret"}


def test_an_id_outside_the_tree_is_refused() -> None:
    with pytest.raises(KeyError, match="no node 'worker-99'"):
        keys_needed(TREE, "worker-99", reshuffle=False)


def test_an_operator_pair_is_a_curve_pair() -> None:
    public, secret = generate_pair()
    assert len(public) == len(secret) == 40
    assert zmq.curve_public(secret.encode()) == public.encode()


def test_the_secret_holds_a_distinct_pair_per_node() -> None:
    data = secret_data(TREE)
    assert set(data) == all_entries(TREE)
    assert len(set(data.values())) == len(data)
    for node_id in TREE.nodes:
        assert zmq.curve_public(data[f"{node_id}.secret"].encode()) == data[f"{node_id}.public"].encode()


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
