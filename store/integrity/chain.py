"""The per-stream hash chain.

Each event's ``hash`` covers the previous event's hash and everything stored
about the event (envelope columns and the exact payload text), so changing,
removing, inserting or reordering any stored event breaks the chain from that
point on. With a signing key the hash is an HMAC, so forging a consistent
chain needs the key.

Rule versions. Rule 1 covers the fields above. Rule 2 (:data:`RULE`) adds,
to the first event of a conversation's own stream, the conversation metadata
kept in clear on its head row (what listings and filters read), so that an
edit of that copy breaks the chain too. Every other event hashes alike under
both rules. The rule 2 input has two more fields than any rule 1 input (a
stored payload never holds the separator: JSON escapes it), so a hash written
under one rule never verifies under the other; events written before rule 2
keep verifying under rule 1.
"""

from __future__ import annotations

import hashlib
import hmac

__all__ = ["GENESIS", "RULE", "chain_hash", "event_hash"]

GENESIS = "0" * 64
RULE = 2
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
) -> str:
    """The chain hash of one event (hex SHA-256, or HMAC-SHA-256 when a key is given).

    ``metadata`` is given for the first event of a conversation's stream under rule 2
    (the head row's metadata text); None hashes by rule 1.
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
) -> str:
    """:func:`event_hash` with positional arguments (the append path calls it once per event)."""
    fields: tuple[str, ...] = (
        prev_hash,
        stream_id,
        str(version),
        event_id,
        type_name,
        str(schema_version),
        "" if key is None else "k:" + key,
        recorded_at,
        tenant,
        payload,
    )
    if metadata is not None:
        fields += ("rule:2", "m:" + metadata)
    data = "\x1e".join(fields).encode("utf-8", "surrogatepass")
    if signing_key is not None:
        return hmac.new(signing_key, data, hashlib.sha256).hexdigest()
    return hashlib.sha256(data).hexdigest()
