"""The per-stream hash chain.

Each event's ``hash`` covers the previous event's hash and everything stored
about the event (envelope columns and the exact payload text), so changing,
removing, inserting or reordering any stored event breaks the chain from that
point on. With a signing key the hash is an HMAC, so forging a consistent
chain needs the key.
"""

from __future__ import annotations

import hashlib
import hmac

__all__ = ["GENESIS", "chain_hash", "event_hash"]

GENESIS = "0" * 64


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
) -> str:
    """The chain hash of one event (hex SHA-256, or HMAC-SHA-256 when a key is given)."""
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
) -> str:
    """:func:`event_hash` with positional arguments (the append path calls it once per event)."""
    data = "\x1e".join(
        (
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
    ).encode("utf-8", "surrogatepass")
    if signing_key is not None:
        return hmac.new(signing_key, data, hashlib.sha256).hexdigest()
    return hashlib.sha256(data).hexdigest()
