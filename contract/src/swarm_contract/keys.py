"""The CURVE key layout of a job: which key files exist, which a node needs, and their text form.

Every node of the planned tree has an X25519 key pair (ZeroMQ CURVE). A job's keys are one flat
set of entries, a Kubernetes Secret's `stringData` or the files of a local directory alike:

    <node id>.public    the node's public key, Z85 text (40 characters for 32 bytes)
    <node id>.secret    the node's secret key, Z85 text

A pod mounts the entries `keys_needed` names at KEYS_MOUNT, nothing else: its own pair, the public
keys of the parents it may report to (to authenticate them as a CURVE client) and those of the
children it may hear from (the only clients its ZAP handler admits). So a pod never holds another
node's secret key, and a node's identity on the wire is the key it proves, never an id it states.

Z85 (ZeroMQ RFC 32) is written out here because the operator must not import zmq and Python 3.11
has no `base64.z85encode`; tests check it against `zmq.utils.z85`. Pure: no I/O, no zmq, no torch.
"""

from __future__ import annotations

from swarm_contract.topology import Tree, measurers

#: Where a pod's keys are mounted (a Secret volume) and where `swarm node --keys` reads them.
KEYS_MOUNT = "/var/run/swarm/keys"
#: A CURVE key: 32 raw bytes, 40 characters of Z85.
KEY_BYTES = 32
KEY_TEXT_LENGTH = 40
PUBLIC_SUFFIX = ".public"
SECRET_SUFFIX = ".secret"

Z85_ALPHABET = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ.-:+=^!/*?&<>()[]{}@%$#"
_Z85_VALUE = {c: i for i, c in enumerate(Z85_ALPHABET)}


class KeyTextError(ValueError):
    """A key's text is not a CURVE key (wrong length or a character outside Z85); one line."""


def public_entry(node_id: str) -> str:
    return f"{node_id}{PUBLIC_SUFFIX}"


def secret_entry(node_id: str) -> str:
    return f"{node_id}{SECRET_SUFFIX}"


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


def validate_key_text(text: str, name: str) -> bytes:
    """The 32 raw bytes of the key `text` (surrounding whitespace ignored: a file's final newline);
    KeyTextError naming `name` (an entry or a path) for anything that is not a CURVE key."""
    key = text.strip()
    if len(key) != KEY_TEXT_LENGTH:
        raise KeyTextError(f"{name}: a CURVE key is {KEY_TEXT_LENGTH} Z85 characters, got {len(key)}")
    try:
        return z85_decode(key)
    except KeyTextError as e:
        raise KeyTextError(f"{name}: {e}") from e


def possible_parents(tree: Tree, node_id: str, *, reshuffle: bool) -> frozenset[str]:
    """The aggregators `node_id` may report to: its planned parent, or with `topology.reshuffle`
    (a worker under bottom aggregators) any bottom aggregator. The root has none."""
    tree.node(node_id)  # KeyError naming an id outside the tree
    return measurers(tree, reshuffle=reshuffle).get(node_id, frozenset())


def possible_children(tree: Tree, node_id: str, *, reshuffle: bool) -> frozenset[str]:
    """The nodes that may report to `node_id` (its planned children, or with `reshuffle`, for a
    bottom aggregator, every worker): the only clients its data port admits."""
    tree.node(node_id)
    return frozenset(n for n, parents in measurers(tree, reshuffle=reshuffle).items() if node_id in parents)


def keys_needed(tree: Tree, node_id: str, *, reshuffle: bool) -> frozenset[str]:
    """The entries a node mounts: its own secret and public key, and the public keys of every
    node it may talk to (possible parents and possible children)."""
    peers = possible_parents(tree, node_id, reshuffle=reshuffle) | possible_children(
        tree, node_id, reshuffle=reshuffle
    )
    return frozenset({secret_entry(node_id), public_entry(node_id), *(public_entry(p) for p in peers)})


def all_entries(tree: Tree) -> frozenset[str]:
    """Every entry of the job's key set: a pair per node of the tree."""
    return frozenset(e for n in tree.nodes for e in (public_entry(n), secret_entry(n)))
