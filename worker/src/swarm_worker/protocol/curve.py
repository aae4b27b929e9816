"""A node's keys on disk and on its sockets (ZeroMQ CURVE, RFC 26: X25519 + XSalsa20-Poly1305), and
its ed25519 signing keys (protocol.signing).

A job's keys live in one directory, a file per entry of `swarm_contract.keys` (`<id>.public`,
`<id>.secret`, `<id>.verify`, `<id>.sign`, Z85 text): the pod's Secret volume (KEYS_MOUNT), or the
directory `swarm run` writes with `write_job_keys`. `load_node_keys` reads the entries a node needs
and nothing else.

    keys = load_node_keys(directory, tree, node_id, reshuffle=spec.topology.reshuffle,
                          replicas=spec.consensus.replicas)
    gate = ChildGate(ctx, keys, on_refused=metrics.dropped)          # protocol.gate, before binding
    router = bind_router(ctx, host, port, max_bytes, gate=gate)     # CURVE server
    dealer = connect_dealer(ctx, node_id, parent_address, max_bytes, curve=keys.client(parent_id))

The server side: `curve_server` with this node's pair and a ZAP domain, so every handshake is
checked by the ZAP handler (protocol.gate), which admits only the keys of this node's possible
children. The client side: its own pair plus the parent's public key, so a child only talks to
the parent it expects (a man in the middle without the parent's secret key fails the handshake).
With root replicas, a top-level node has a client for each replica (`client(replica id)`), and a
replica's consensus port is a second server behind a gate admitting `replica_peers`, which it
dials with `peer_client(replica id)`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import zmq
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from swarm_contract.consensus import replica_ids
from swarm_contract.keys import (
    KeyTextError,
    is_replica,
    job_nodes,
    possible_children,
    possible_parents,
    public_entry,
    replica_peers,
    secret_entry,
    sign_entry,
    validate_key_text,
    verify_entry,
    z85_encode,
)
from swarm_contract.topology import Tree
from swarm_worker.protocol.signing import generate_signing_pair, signer_from_text, verify_key_from_text

#: The ZAP domain of every data port: the ZAP handler answers for this domain only.
ZAP_DOMAIN = "swarm"
#: Secret key files are private to the user that runs `swarm run`.
SECRET_FILE_MODE = 0o600


class KeyFileError(ValueError):
    """A key file is missing or is not a key of its kind; the one-line message names the file."""


@dataclass(frozen=True)
class ClientKeys:
    """What a DEALER needs to dial one parent over CURVE: its own pair and the parent's public key
    (all Z85 bytes, as zmq's socket options take them)."""

    public: bytes
    secret: bytes
    server: bytes

    def apply(self, sock: zmq.Socket[Any]) -> None:
        """Make `sock` a CURVE client; before `connect`."""
        sock.setsockopt(zmq.CURVE_SERVERKEY, self.server)
        sock.setsockopt(zmq.CURVE_PUBLICKEY, self.public)
        sock.setsockopt(zmq.CURVE_SECRETKEY, self.secret)


@dataclass(frozen=True)
class NodeKeys:
    """A node's pairs and the keys of the peers it may talk to or check, by node id (CURVE keys as
    Z85 bytes, as zmq's socket options take them; ed25519 keys as `cryptography` objects)."""

    node_id: str
    public: bytes
    secret: bytes
    #: Node id -> public key, for each possible parent (every replica, for a top-level node).
    parents: dict[str, bytes]
    #: Node id -> public key, for each possible child: the only clients its ZAP handler admits.
    children: dict[str, bytes]
    #: This node's ed25519 key: signs its updates to the replicas, and a replica's commit votes.
    signer: Ed25519PrivateKey
    #: Replica id -> verify key, for every replica: checks a model's commit certificate.
    replica_verify: dict[str, Ed25519PublicKey]
    #: A replica's: the other replicas' public keys, the only clients its consensus port admits.
    replica_peers: dict[str, bytes]
    #: A replica's: possible child id -> verify key, to check the signed updates a leader relays.
    child_verify: dict[str, Ed25519PublicKey]

    def client(self, parent: str) -> ClientKeys:
        """The keys to dial `parent` with (KeyFileError if this node was given no key for it)."""
        try:
            server = self.parents[parent]
        except KeyError as e:
            raise KeyFileError(f"{self.node_id}: no public key for parent {parent!r}") from e
        return ClientKeys(public=self.public, secret=self.secret, server=server)

    def peer_client(self, replica: str) -> ClientKeys:
        """The keys to dial another replica's consensus port with (KeyFileError for any other id)."""
        try:
            server = self.replica_peers[replica]
        except KeyError as e:
            raise KeyFileError(f"{self.node_id}: no public key for replica {replica!r}") from e
        return ClientKeys(public=self.public, secret=self.secret, server=server)

    def apply_server(self, sock: zmq.Socket[Any]) -> None:
        """Make `sock` a CURVE server whose handshakes go to the ZAP handler; before `bind`."""
        sock.setsockopt(zmq.CURVE_SERVER, 1)
        sock.setsockopt(zmq.CURVE_PUBLICKEY, self.public)
        sock.setsockopt(zmq.CURVE_SECRETKEY, self.secret)
        sock.setsockopt(zmq.ZAP_DOMAIN, ZAP_DOMAIN.encode())


def _read_text(directory: Path, entry: str) -> tuple[str, str]:
    """(the entry's text, its path as a name for errors)."""
    path = directory / entry
    try:
        return path.read_text(encoding="ascii"), str(path)
    except FileNotFoundError as e:
        raise KeyFileError(f"{path}: missing (the job's key set lacks {entry})") from e
    except (OSError, UnicodeDecodeError) as e:
        raise KeyFileError(f"{path}: unreadable: {e}") from e


def _read_key(directory: Path, entry: str) -> bytes:
    text, name = _read_text(directory, entry)
    try:
        validate_key_text(text, name)
    except KeyTextError as e:
        raise KeyFileError(str(e)) from e
    return text.strip().encode("ascii")


def _read_verify_key(directory: Path, node_id: str) -> Ed25519PublicKey:
    try:
        return verify_key_from_text(*_read_text(directory, verify_entry(node_id)))
    except KeyTextError as e:
        raise KeyFileError(str(e)) from e


def _read_signer(directory: Path, node_id: str) -> Ed25519PrivateKey:
    """`node_id`'s signing key, checked against its own verify key (a pair mixed up on disk would
    sign what nobody can verify)."""
    try:
        signer = signer_from_text(*_read_text(directory, sign_entry(node_id)))
    except KeyTextError as e:
        raise KeyFileError(str(e)) from e
    verify = _read_verify_key(directory, node_id).public_bytes_raw()
    if signer.public_key().public_bytes_raw() != verify:
        raise KeyFileError(f"{directory / verify_entry(node_id)}: not the key of {sign_entry(node_id)}")
    return signer


def load_node_keys(
    directory: str | Path, tree: Tree, node_id: str, *, reshuffle: bool, replicas: int = 1
) -> NodeKeys:
    """`node_id`'s keys from `directory`: the entries `keys_needed` names, each checked."""
    folder = Path(directory)
    parents = possible_parents(tree, node_id, reshuffle=reshuffle, replicas=replicas)
    children = possible_children(tree, node_id, reshuffle=reshuffle, replicas=replicas)
    replica = is_replica(node_id, replicas)
    return NodeKeys(
        node_id=node_id,
        public=_read_key(folder, public_entry(node_id)),
        secret=_read_key(folder, secret_entry(node_id)),
        parents={p: _read_key(folder, public_entry(p)) for p in sorted(parents)},
        children={c: _read_key(folder, public_entry(c)) for c in sorted(children)},
        signer=_read_signer(folder, node_id),
        replica_verify={r: _read_verify_key(folder, r) for r in replica_ids(replicas)},
        replica_peers={
            r: _read_key(folder, public_entry(r)) for r in sorted(replica_peers(tree, node_id, replicas))
        },
        child_verify={c: _read_verify_key(folder, c) for c in sorted(children)} if replica else {},
    )


def _write_pair(folder: Path, public_entry_: str, secret_entry_: str, pair: tuple[str, str]) -> None:
    """Write (public, secret) Z85 texts: the secret one private to this user, created so (never a
    moment world-readable), the public one last so that a crash between leaves a pair redone."""
    public, secret = pair
    fd = os.open(folder / secret_entry_, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, SECRET_FILE_MODE)
    with os.fdopen(fd, "w", encoding="ascii") as f:
        f.write(secret + "\n")
    (folder / public_entry_).write_text(public + "\n", encoding="ascii")


def _curve_pair() -> tuple[str, str]:
    public, secret = zmq.curve_keypair()
    # Z85 round trip through our own codec: what the operator's keys look like, byte for byte.
    return z85_encode(validate_key_text(public.decode("ascii"), "public")), secret.decode("ascii")


def write_job_keys(directory: str | Path, tree: Tree, replicas: int = 1) -> Path:
    """Generate a CURVE and an ed25519 pair per node of `tree` and per extra root replica into
    `directory` (made if missing), in the layout a pod mounts; secret and signing keys readable by
    their owner only. Pairs already there are kept, so a job resumed in the same output directory
    keeps its identities (and a directory from before signing keys gains them). Returns it."""
    folder = Path(directory)
    folder.mkdir(parents=True, exist_ok=True)
    for node_id in job_nodes(tree, replicas):
        for public, secret, make in (
            (public_entry(node_id), secret_entry(node_id), _curve_pair),
            (verify_entry(node_id), sign_entry(node_id), generate_signing_pair),
        ):
            if not ((folder / public).exists() and (folder / secret).exists()):
                _write_pair(folder, public, secret, make())
    return folder
