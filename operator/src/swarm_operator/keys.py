"""A job's keys as Kubernetes objects: the Secret that holds them and each pod's view of it.

The operator creates one Secret per SwarmTraining, owned by it (garbage-collected with it), whose
`stringData` is `secret_data(tree, replicas)`: an X25519 (CURVE) and an ed25519 (signing) key pair
per node of the planned tree and per extra root replica, Z85 text, in the layout of
`swarm_contract.keys`. The keys are made once, when the Secret is created: a replaced pod mounts
the same Secret and keeps its node's identity. Each pod's Secret volume projects only the entries
`keys_needed` names (its own pairs, its peers' public keys, the replicas' verify keys), so a pod
never holds another node's secret or signing key.

The keys come from `cryptography` because the operator never imports zmq; a CURVE key pair is a
raw X25519 pair, which the tests check against `zmq.curve_public`. Pure apart from the random keys.
"""

from __future__ import annotations

from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from swarm_contract.keys import (
    KEYS_MOUNT,
    job_nodes,
    keys_needed,
    public_entry,
    secret_entry,
    sign_entry,
    verify_entry,
    z85_encode,
)
from swarm_contract.topology import Tree

#: The keys volume's name in a pod.
KEYS_VOLUME = "keys"
#: Read-only to the node's user and group (the pod's fsGroup owns the projected files).
KEY_FILE_MODE = 0o440


def keys_secret_name(job: str) -> str:
    return f"{job}-keys"


def generate_pair() -> tuple[str, str]:
    """A fresh CURVE key pair as (public, secret) Z85 text, 40 characters each."""
    private = X25519PrivateKey.generate()
    public = z85_encode(private.public_key().public_bytes_raw())
    return public, z85_encode(private.private_bytes_raw())


def generate_signing_pair() -> tuple[str, str]:
    """A fresh ed25519 pair as (verify, sign) Z85 text: the raw public key and the 32-byte seed."""
    private = Ed25519PrivateKey.generate()
    verify = z85_encode(private.public_key().public_bytes_raw())
    return verify, z85_encode(private.private_bytes_raw())


def secret_data(tree: Tree, replicas: int = 1) -> dict[str, str]:
    """The Secret's `stringData`: `<id>.public`, `.secret`, `.verify` and `.sign` for every node of
    the tree and every extra root replica (`swarm_contract.keys.job_nodes`)."""
    data: dict[str, str] = {}
    for node_id in job_nodes(tree, replicas):
        data[public_entry(node_id)], data[secret_entry(node_id)] = generate_pair()
        data[verify_entry(node_id)], data[sign_entry(node_id)] = generate_signing_pair()
    return data


def secret_items(tree: Tree, node_id: str, *, reshuffle: bool, replicas: int = 1) -> list[dict[str, str]]:
    """The Secret volume's `items` for `node_id`'s pod: only the entries it needs, each at its
    own name under KEYS_MOUNT."""
    needed = keys_needed(tree, node_id, reshuffle=reshuffle, replicas=replicas)
    return [{"key": e, "path": e} for e in sorted(needed)]


def keys_volume(job: str, tree: Tree, node_id: str, *, reshuffle: bool, replicas: int = 1) -> dict[str, Any]:
    """The pod's keys volume (append to `spec.volumes`)."""
    return {
        "name": KEYS_VOLUME,
        "secret": {
            "secretName": keys_secret_name(job),
            "items": secret_items(tree, node_id, reshuffle=reshuffle, replicas=replicas),
            "defaultMode": KEY_FILE_MODE,
        },
    }


def keys_mount() -> dict[str, Any]:
    """The container's mount of the keys volume (append to `volumeMounts`)."""
    return {"name": KEYS_VOLUME, "mountPath": KEYS_MOUNT, "readOnly": True}


def build_keys_secret(job: str, metadata: dict[str, Any], tree: Tree, replicas: int = 1) -> dict[str, Any]:
    """The job's Secret; `metadata` is the builders' `object_metadata(owner, keys_secret_name(job))`
    (namespace, labels, the controller owner reference that lets GC remove it)."""
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "Opaque",
        "metadata": metadata,
        "stringData": secret_data(tree, replicas),
    }
