"""The key layout of a job: which key files exist, which a node needs, and their text form.

Every node has two key pairs: an X25519 pair for its ZeroMQ CURVE links and an ed25519 pair that
signs what must stay attributable after a relay (commit certificates, updates sent to the root's
replicas: swarm_worker.protocol.signing). The nodes are those of the planned tree plus the root's
extra replicas `root-1` ... `root-<R-1>` (swarm_contract.consensus; replica 0 is the tree's root).
A job's keys are one flat set of entries, a Kubernetes Secret's `stringData` or the files of a
local directory alike, each 32 raw bytes as Z85 text (40 characters):

    <node id>.public    the node's CURVE public key
    <node id>.secret    the node's CURVE secret key
    <node id>.verify    the node's ed25519 public key
    <node id>.sign      the node's ed25519 private key (its 32-byte seed)

A pod mounts the entries `keys_needed` names at KEYS_MOUNT, nothing else: its own four, the public
keys of the parents it may report to (to authenticate them as a CURVE client) and those of the
children it may hear from (the only clients its ZAP handler admits), and every replica's verify
key (to check a model's commit certificate). A replica also holds the other replicas' public keys
(their consensus port admits only each other) and its possible children's verify keys (it checks
the signed updates the leader relays). So a pod never holds another node's secret or signing key,
and a node's identity on the wire is the key it proves, never an id it states.

With several replicas every replica is the parent of the root's children: a top-level node's
possible parents are all R replicas, and each replica's possible children are the root's.

Z85 (ZeroMQ RFC 32) is written out here because the operator must not import zmq and Python 3.11
has no `base64.z85encode`; tests check it against `zmq.utils.z85`. Pure: no I/O, no zmq, no torch.
"""

from __future__ import annotations

from swarm_contract.consensus import replica_ids, replica_index
from swarm_contract.topology import ROOT_ID, Tree, measurers

#: Where a pod's keys are mounted (a Secret volume) and where `swarm node --keys` reads them.
KEYS_MOUNT = "/var/run/swarm/keys"
#: A CURVE or ed25519 key: 32 raw bytes, 40 characters of Z85.
KEY_BYTES = 32
KEY_TEXT_LENGTH = 40
PUBLIC_SUFFIX = ".public"
SECRET_SUFFIX = ".secret"
VERIFY_SUFFIX = ".verify"
SIGN_SUFFIX = ".sign"

Z85_ALPHABET = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ.-:+=^!/*?&<>()[]{}@%$#"
_Z85_VALUE = {c: i for i, c in enumerate(Z85_ALPHABET)}


class KeyTextError(ValueError):
    """A key's text is not a CURVE key (wrong length or a character outside Z85); one line."""


def public_entry(node_id: str) -> str:
    return f"{node_id}{PUBLIC_SUFFIX}"


def secret_entry(node_id: str) -> str:
    return f"{node_id}{SECRET_SUFFIX}"


def verify_entry(node_id: str) -> str:
    return f"{node_id}{VERIFY_SUFFIX}"


def sign_entry(node_id: str) -> str:
    return f"{node_id}{SIGN_SUFFIX}"


def own_entries(node_id: str) -> tuple[str, str, str, str]:
    """A node's four entries: its CURVE pair and its ed25519 pair."""
    return public_entry(node_id), secret_entry(node_id), verify_entry(node_id), sign_entry(node_id)


def z85_encode(data: bytes) -> str:
    """Z85 text of `data` (its length a multiple of 4): each 4 bytes, big-endian, as 5 base-85 digits."""
    if len(data) % 4:
        raise KeyTextError(f"Z85 encodes whole 4-byte groups; got {len(data)} bytes")
    out: list[str] = []
    for start in range(0, len(data), 4):
        value = int.from_bytes(data[start : start + 4], "big")
        digits = []
        for _ in range(5):
            value, digit = divmod(value, 85)
            digits.append(Z85_ALPHABET[digit])
        out.extend(reversed(digits))
    return "".join(out)


def z85_decode(text: str) -> bytes:
    """The bytes of Z85 `text` (its length a multiple of 5); KeyTextError for anything else."""
    if len(text) % 5:
        raise KeyTextError(f"Z85 text comes in groups of 5 characters; got {len(text)}")
    out = bytearray()
    for start in range(0, len(text), 5):
        value = 0
        for char in text[start : start + 5]:
            digit = _Z85_VALUE.get(char)
            if digit is None:
                raise KeyTextError(f"{char!r} is not a Z85 character")
            value = value * 85 + digit
        if value >= 1 << 32:  # "#####" is 85^5 - 1: five digits can exceed 32 bits
            raise KeyTextError(f"{text[start : start + 5]!r} is beyond a 4-byte Z85 group")
        out += value.to_bytes(4, "big")
    return bytes(out)


def validate_key_text(text: str, name: str, *, kind: str = "a CURVE key") -> bytes:
    """The 32 raw bytes of the key `text` (surrounding whitespace ignored: a file's final newline);
    KeyTextError naming `name` (an entry or a path) for anything that is not `kind` (its 40
    characters: a CURVE or an ed25519 key alike)."""
    key = text.strip()
    if len(key) != KEY_TEXT_LENGTH:
        raise KeyTextError(f"{name}: {kind} is {KEY_TEXT_LENGTH} Z85 characters, got {len(key)}")
    try:
        return z85_decode(key)
    except KeyTextError as e:
        raise KeyTextError(f"{name}: {e}") from e


def job_nodes(tree: Tree, replicas: int = 1) -> tuple[str, ...]:
    """Every node that holds keys, sorted: the tree's nodes and the root's extra replicas."""
    if replicas < 1:
        raise ValueError(f"replicas ({replicas}) must be >= 1")
    return tuple(sorted({*tree.nodes, *replica_ids(replicas)}))


def is_replica(node_id: str, replicas: int) -> bool:
    return replica_index(node_id, replicas) is not None


def _check_node(tree: Tree, node_id: str, replicas: int) -> None:
    """KeyError naming an id that is neither a node of the tree nor one of the `replicas`."""
    if not is_replica(node_id, replicas):
        tree.node(node_id)


def possible_parents(tree: Tree, node_id: str, *, reshuffle: bool, replicas: int = 1) -> frozenset[str]:
    """The nodes `node_id` may report to: its planned parent, or with `topology.reshuffle` (a
    worker under bottom aggregators) any bottom aggregator; the root stands for all its replicas.
    A replica has none."""
    _check_node(tree, node_id, replicas)
    if is_replica(node_id, replicas):
        return frozenset()
    parents = measurers(tree, reshuffle=reshuffle)[node_id]
    return (parents - {ROOT_ID}) | frozenset(replica_ids(replicas)) if ROOT_ID in parents else parents


def possible_children(tree: Tree, node_id: str, *, reshuffle: bool, replicas: int = 1) -> frozenset[str]:
    """The nodes that may report to `node_id` (its planned children, or with `reshuffle`, for a
    bottom aggregator, every worker; for any replica, the root's): the only clients its data port
    admits."""
    _check_node(tree, node_id, replicas)
    own = ROOT_ID if is_replica(node_id, replicas) else node_id
    return frozenset(n for n, parents in measurers(tree, reshuffle=reshuffle).items() if own in parents)


def replica_peers(tree: Tree, node_id: str, replicas: int = 1) -> frozenset[str]:
    """The other replicas, for a replica (the only clients its consensus port admits); else none."""
    _check_node(tree, node_id, replicas)
    if not is_replica(node_id, replicas):
        return frozenset()
    return frozenset(replica_ids(replicas)) - {node_id}


def keys_needed(tree: Tree, node_id: str, *, reshuffle: bool, replicas: int = 1) -> frozenset[str]:
    """The entries a node mounts (see the module docstring): its own four, the public keys of its
    possible parents and children, every replica's verify key, and for a replica the other
    replicas' public keys and its possible children's verify keys."""
    parents = possible_parents(tree, node_id, reshuffle=reshuffle, replicas=replicas)
    children = possible_children(tree, node_id, reshuffle=reshuffle, replicas=replicas)
    peers = replica_peers(tree, node_id, replicas)
    signers = children if is_replica(node_id, replicas) else frozenset()
    return frozenset(
        {
            *own_entries(node_id),
            *(public_entry(p) for p in parents | children | peers),
            *(verify_entry(r) for r in replica_ids(replicas)),
            *(verify_entry(c) for c in signers),
        }
    )


def all_entries(tree: Tree, replicas: int = 1) -> frozenset[str]:
    """Every entry of the job's key set: four per node of `job_nodes`."""
    return frozenset(e for n in job_nodes(tree, replicas) for e in own_entries(n))
