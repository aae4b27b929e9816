"""A node's CURVE keys on disk and on its sockets (ZeroMQ CURVE, RFC 26: X25519 + XSalsa20-Poly1305).

A job's keys live in one directory, a file per entry of `swarm_contract.keys` (`<id>.public`,
`<id>.secret`, Z85 text): the pod's Secret volume (KEYS_MOUNT), or the directory `swarm run` writes
with `write_job_keys`. `load_node_keys` reads the entries a node needs and nothing else.

    keys = load_node_keys(directory, tree, node_id, reshuffle=spec.topology.reshuffle)
    gate = ChildGate(ctx, keys, on_refused=metrics.dropped)          # protocol.gate, before binding
    router = bind_router(ctx, host, port, max_bytes, gate=gate)     # CURVE server
    dealer = connect_dealer(ctx, node_id, parent_address, max_bytes, curve=keys.client(parent_id))

The server side: `curve_server` with this node's pair and a ZAP domain, so every handshake is
checked by the ZAP handler (protocol.gate), which admits only the keys of this node's possible
children. The client side: its own pair plus the parent's public key, so a child only talks to
the parent it expects (a man in the middle without the parent's secret key fails the handshake).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import zmq

from swarm_contract.keys import (
    KeyTextError,
    possible_children,
    possible_parents,
    public_entry,
    secret_entry,
    validate_key_text,
    z85_encode,
)
from swarm_contract.topology import Tree

#: The ZAP domain of every data port: the ZAP handler answers for this domain only.
ZAP_DOMAIN = "swarm"
#: Secret key files are private to the user that runs `swarm run`.
SECRET_FILE_MODE = 0o600


class KeyFileError(ValueError):
    """A key file is missing or is not a CURVE key; the one-line message names the file."""


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
    """A node's pair and the public keys of the peers it may talk to, by node id (Z85 bytes)."""

    node_id: str
    public: bytes
    secret: bytes
    #: Node id -> public key, for each possible parent.
    parents: dict[str, bytes]
    #: Node id -> public key, for each possible child: the only clients its ZAP handler admits.
    children: dict[str, bytes]

    def client(self, parent: str) -> ClientKeys:
        """The keys to dial `parent` with (KeyFileError if this node was given no key for it)."""
        try:
            server = self.parents[parent]
        except KeyError as e:
            raise KeyFileError(f"{self.node_id}: no public key for parent {parent!r}") from e
        return ClientKeys(public=self.public, secret=self.secret, server=server)

    def apply_server(self, sock: zmq.Socket[Any]) -> None:
        """Make `sock` a CURVE server whose handshakes go to the ZAP handler; before `bind`."""
        sock.setsockopt(zmq.CURVE_SERVER, 1)
        sock.setsockopt(zmq.CURVE_PUBLICKEY, self.public)
        sock.setsockopt(zmq.CURVE_SECRETKEY, self.secret)
        sock.setsockopt(zmq.ZAP_DOMAIN, ZAP_DOMAIN.encode())


def _read_key(directory: Path, entry: str) -> bytes:
    path = directory / entry
    try:
        text = path.read_text(encoding="ascii")
    except FileNotFoundError as e:
        raise KeyFileError(f"{path}: missing (the job's CURVE key set lacks {entry})") from e
    except (OSError, UnicodeDecodeError) as e:
        raise KeyFileError(f"{path}: unreadable: {e}") from e
    try:
        validate_key_text(text, str(path))
    except KeyTextError as e:
        raise KeyFileError(str(e)) from e
    return text.strip().encode("ascii")


def load_node_keys(directory: str | Path, tree: Tree, node_id: str, *, reshuffle: bool) -> NodeKeys:
    """`node_id`'s keys from `directory`: the entries `keys_needed` names, each checked."""
    folder = Path(directory)
    parents = possible_parents(tree, node_id, reshuffle=reshuffle)
    children = possible_children(tree, node_id, reshuffle=reshuffle)
    return NodeKeys(
        node_id=node_id,
        public=_read_key(folder, public_entry(node_id)),
        secret=_read_key(folder, secret_entry(node_id)),
        parents={p: _read_key(folder, public_entry(p)) for p in sorted(parents)},
        children={c: _read_key(folder, public_entry(c)) for c in sorted(children)},
    )


def write_job_keys(directory: str | Path, tree: Tree) -> Path:
    """Generate a key pair per node of `tree` into `directory` (made if missing), in the layout a
    pod mounts; secret keys readable by their owner only. Keys already there are kept, so a job
    resumed in the same output directory keeps its identities. Returns the directory."""
    folder = Path(directory)
    folder.mkdir(parents=True, exist_ok=True)
    for node_id in sorted(tree.nodes):
        public_path, secret_path = folder / public_entry(node_id), folder / secret_entry(node_id)
        if public_path.exists() and secret_path.exists():
            continue
        public, secret = zmq.curve_keypair()
        # Z85 round trip through our own codec: what the operator's keys look like, byte for byte.
        public_text = z85_encode(validate_key_text(public.decode("ascii"), public_path.name))
        fd = os.open(secret_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, SECRET_FILE_MODE)
        with os.fdopen(fd, "w", encoding="ascii") as f:
            f.write(secret.decode("ascii") + "\n")
        public_path.write_text(public_text + "\n", encoding="ascii")
    return folder
