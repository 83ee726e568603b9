"""The per-stream hash chain.

Each event's ``hash`` covers the previous event's hash and everything stored
about the event (envelope columns and the exact payload text), so changing,
removing, inserting or reordering any stored event breaks the chain from that
point on. With a signing key the hash is an HMAC, so forging a consistent
chain needs the key.

Rule versions. Rule 1 covers the fields above. Rule 2 adds,
to the first event of a conversation's own stream, the conversation metadata
kept in clear on its head row (what listings and filters read), so that an
edit of that copy breaks the chain too. Every other event hashes alike under
both rules. The rule 2 input has two more fields than any rule 1 input (a
stored payload never holds the separator: JSON escapes it), so a hash written
under one rule never verifies under the other; events written before rule 2
keep verifying under rule 1.

Rule 3 (:data:`RULE`) adds the event's global position, so that moving
events within the global log (positions swapped across conversations, an
event renumbered) breaks the chain of every stream it touches. It hashes in
two steps: the *inner* hash covers what rule 2 covers (HMAC when keyed, with
the field ``rule:3``), and the stored hash is the plain SHA-256 of the inner
hash and the position (:func:`with_position`). The second step needs no key,
so a backend that learns a position only as it inserts can finish the hash in
the database (PostgreSQL's one-statement append does); it cannot be redone
for another position without the inner hash, which is never stored, and the
inner hash cannot be made without the key.
"""

from __future__ import annotations

import hashlib
import hmac

__all__ = [
    "GENESIS",
    "NO_SUBSTREAMS",
    "RULE",
    "chain_hash",
    "event_hash",
    "inner_hash",
    "is_record",
    "substream_mark",
    "with_position",
    "with_substream",
    "xor_records",
]

GENESIS = "0" * 64
NO_SUBSTREAMS = "0" * 64
"""A new conversation's record of its tool-call and side streams: none yet."""
RULE = 3
"""The rule new events are hashed with (see the module docstring)."""


def event_hash(
    prev_hash: str,
    *,
    stream_id: str,
    version: int,
    event_id: str,
    type_name: str,
    schema_version: int,
    key: str | None,
    recorded_at: str,
    tenant: str,
    payload: str,
    signing_key: bytes | None = None,
    metadata: str | None = None,
    position: int | None = None,
) -> str:
    """The chain hash of one event (hex SHA-256, or HMAC-SHA-256 when a key is given).

    ``metadata`` is given for the first event of a conversation's stream from rule 2
    on (the head row's metadata text); ``position`` from rule 3 on. With neither, the
    event is hashed by rule 1; with ``metadata`` alone, by rule 2.
    """
    return chain_hash(
        prev_hash,
        stream_id,
        version,
        event_id,
        type_name,
        schema_version,
        key,
        recorded_at,
        tenant,
        payload,
        signing_key,
        metadata,
        position,
    )


def chain_hash(
    prev_hash: str,
    stream_id: str,
    version: int,
    event_id: str,
    type_name: str,
    schema_version: int,
    key: str | None,
    recorded_at: str,
    tenant: str,
    payload: str,
    signing_key: bytes | None,
    metadata: str | None = None,
    position: int | None = None,
) -> str:
    """:func:`event_hash` with positional arguments (the append path calls it once per event)."""
    fields = _fields(prev_hash, stream_id, version, event_id, type_name, schema_version, key, recorded_at, tenant)
    if position is not None:
        return with_position(_digest(_rule3(fields, payload, metadata), signing_key), position)
    fields += (payload,)
    if metadata is not None:
        fields += ("rule:2", "m:" + metadata)
    return _digest(fields, signing_key)


def inner_hash(
    prev_hash: str,
    stream_id: str,
    version: int,
    event_id: str,
    type_name: str,
    schema_version: int,
    key: str | None,
    recorded_at: str,
    tenant: str,
    payload: str,
    signing_key: bytes | None,
    metadata: str | None = None,
) -> str:
    """The first step of rule 3: everything but the position (``metadata`` as in :func:`event_hash`)."""
    fields = _fields(prev_hash, stream_id, version, event_id, type_name, schema_version, key, recorded_at, tenant)
    return _digest(_rule3(fields, payload, metadata), signing_key)


def _rule3(fields: tuple[str, ...], payload: str, metadata: str | None) -> tuple[str, ...]:
    """What rule 3's inner hash covers: the fields of every rule, the payload, its tag and any metadata."""
    return (*fields, payload, "rule:3") if metadata is None else (*fields, payload, "rule:3", "m:" + metadata)


def with_position(inner: str, position: int) -> str:
    """The second step of rule 3: the stored hash of an event with inner hash ``inner`` at ``position``.

    The same text PostgreSQL's one-statement append hashes:
    ``encode(sha256(convert_to(inner || chr(30) || 'p:' || position, 'UTF8')), 'hex')``.
    """
    return hashlib.sha256(f"{inner}\x1ep:{position}".encode("ascii")).hexdigest()


def substream_mark(stream_id: str, signing_key: bytes | None) -> str:
    """What a tool-call or side stream adds to its conversation's record of them (HMAC with a key)."""
    data = ("substream\x1e" + stream_id).encode("utf-8", "surrogatepass")
    if signing_key is not None:
        return hmac.new(signing_key, data, hashlib.sha256).hexdigest()
    return hashlib.sha256(data).hexdigest()


def is_record(text: object) -> bool:
    """Whether ``text`` has the form of a conversation's record of its streams (64 lowercase hex digits)."""
    return isinstance(text, str) and len(text) == 64 and all(c in _HEX for c in text)


_HEX = frozenset("0123456789abcdef")


def with_substream(record: str, stream_id: str, signing_key: bytes | None) -> str:
    """A conversation's record of its streams once ``stream_id`` is added (or taken out: XOR is its own inverse).

    The record is a set, order does not matter: streams are created by concurrent transactions.
    Deleting a stream without changing the record, or changing the record without the key
    (it needs the deleted stream's mark), leaves it wrong.
    """
    return xor_records(record, substream_mark(stream_id, signing_key))


def xor_records(one: str, other: str) -> str:
    """The XOR of two records (or marks): adds a mark to a record, or tells what separates two records."""
    return f"{int(one, 16) ^ int(other, 16):064x}"


def _fields(
    prev_hash: str,
    stream_id: str,
    version: int,
    event_id: str,
    type_name: str,
    schema_version: int,
    key: str | None,
    recorded_at: str,
    tenant: str,
) -> tuple[str, ...]:
    return (
        prev_hash,
        stream_id,
        str(version),
        event_id,
        type_name,
        str(schema_version),
        "" if key is None else "k:" + key,
        recorded_at,
        tenant,
    )


def _digest(fields: tuple[str, ...], signing_key: bytes | None) -> str:
    data = "\x1e".join(fields).encode("utf-8", "surrogatepass")
    if signing_key is not None:
        return hmac.new(signing_key, data, hashlib.sha256).hexdigest()
    return hashlib.sha256(data).hexdigest()
