"""Checking one stream's hash chain: the first thing wrong with it, and what kind of edit it looks like.

:func:`check_stream` walks a stream's stored events in version order, recomputes every hash
from what is stored (chain rule 3 first, then the older rules for events written before
them, see :mod:`chatledger.store.integrity.chain`) and compares the end with the stream's
head. A mismatch is classified (:func:`_classify_mismatch`): two versions swapped, an event
the chain never linked, or a changed event, its position or its conversation's metadata.
:mod:`chatledger.store.integrity.verify` runs it over every stream and adds what no single
chain can show.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from chatledger.store.backends.recorder import CALL_SEPARATOR, Record, StreamHead
from chatledger.store.integrity.chain import GENESIS, RULE, event_hash

__all__ = ["ChainProblem", "check_stream", "is_legacy"]


@dataclass(frozen=True)
class ChainProblem:
    """The first thing wrong with one stream: where it is and what kind of tampering it looks like."""

    stream_id: str
    conversation_id: str
    version: int
    position: int | None
    kind: str
    detail: str

    def describe(self) -> str:
        """One line for humans: stream, version, position and what is wrong."""
        if not self.stream_id:  # a gap in the global log: no stream is known
            return f"the log at position {self.position}: {self.kind}: {self.detail}"
        where = f" (position {self.position})" if self.position is not None else ""
        stream = self.stream_id.replace(CALL_SEPARATOR, "/")
        return f"{stream} version {self.version}{where}: {self.kind}: {self.detail}"


def _hash(
    prev: str,
    rec: Record,
    signing_key: bytes | None,
    *,
    version: int | None = None,
    metadata: str | None = None,
    positioned: bool = False,
) -> str:
    """``rec``'s hash after ``prev``: by rule 3 when ``positioned``, else by rule 2 (at version 1 of a
    conversation, when ``metadata`` is given) or 1."""
    at = rec.version if version is None else version
    return event_hash(
        prev,
        stream_id=rec.stream_id,
        version=at,
        event_id=rec.event_id,
        type_name=rec.type,
        schema_version=rec.schema_version,
        key=rec.key,
        recorded_at=rec.recorded_at,
        tenant=rec.tenant,
        payload=rec.payload,
        signing_key=signing_key,
        metadata=metadata if at == 1 else None,
        position=rec.position if positioned else None,
    )


def _links(
    prev: str,
    rec: Record,
    signing_key: bytes | None,
    metadata: str | None,
    *,
    version: int | None = None,
) -> int:
    """By which chain rule ``rec`` chains after ``prev`` (3, or 2 or 1 for an event hashed without its
    position), or 0 when it does not."""
    at = rec.version if version is None else version
    if metadata is _UNKNOWN and at == 1:
        return RULE  # the head row is gone: that is the problem reported, not this event
    if _hash(prev, rec, signing_key, version=version, metadata=metadata, positioned=True) == rec.hash:
        return RULE
    if _hash(prev, rec, signing_key, version=version, metadata=metadata) == rec.hash:
        return 2
    if metadata is not None and at == 1 and _hash(prev, rec, signing_key, version=version) == rec.hash:
        return 1
    return 0


_UNKNOWN = "\x00unknown"
"""The metadata of a conversation stream whose head row is gone (its first event cannot be checked)."""


def _metadata(stream_id: str, head: StreamHead | None) -> str | None:
    """What rule 2 hashes into a stream's first event: a conversation head's metadata text, else None."""
    if head is None:
        return None if CALL_SEPARATOR in stream_id else _UNKNOWN
    if head.kind != "conversation" or head.stream_id != stream_id:
        return None
    return head.metadata or ""


def is_legacy(head: StreamHead | None, records: Sequence[Record], signing_key: bytes | None) -> bool:
    """True when a conversation's first event was hashed by rule 1 (before metadata was covered)."""
    metadata = _metadata(records[0].stream_id, head) if records else None
    if metadata is None or metadata is _UNKNOWN or records[0].version != 1:
        return False
    first = records[0]
    return _hash(GENESIS, first, signing_key, metadata=metadata) != first.hash and (
        _hash(GENESIS, first, signing_key) == first.hash
    )


def _chain_holds(records: Sequence[Record], key: bytes | None, metadata: str | None) -> bool:
    prev = GENESIS
    for n, rec in enumerate(records, 1):
        if rec.version != n or not _links(prev, rec, key, metadata):
            return False
        prev = rec.hash
    return True


def check_stream(
    stream_id: str,
    head: StreamHead | None,
    records: Sequence[Record],
    signing_key: bytes | None,
    unpositioned: list[int] | None = None,
) -> ChainProblem | None:
    """The first problem of one stream's chain, or None when it is intact.

    Args:
        stream_id: the stream checked.
        head: its head row (None when the row is missing).
        records: its stored events in version order.
        signing_key: the HMAC key the chain was written with, if any.
        unpositioned: when given and every event chains, the number of events whose hash
            does not cover their global position (hashed before chain rule 3) is appended to it.
    """
    conv = head.conversation_id if head else (records[0].conversation_id if records else stream_id)

    def problem(version: int, position: int | None, kind: str, detail: str) -> ChainProblem:
        return ChainProblem(stream_id, conv, version, position, kind, detail)

    metadata = _metadata(stream_id, head)
    unsigned = signing_key is not None and records and not _chain_holds(records, signing_key, metadata)
    if unsigned and _chain_holds(records, None, metadata):
        first = records[0]
        return problem(
            first.version,
            first.position,
            "changed",
            "the chain is a plain SHA-256 chain, not signed with the signing key: "
            "it was written without the key or recomputed by someone who does not have it",
        )
    prev = GENESIS
    last_position = below = 0
    for n, rec in enumerate(records, 1):
        if rec.version > n:
            return problem(n, rec.position, "removed", f"version {n} is missing; the next stored is {rec.version}")
        if rec.version < n:
            return problem(rec.version, rec.position, "inserted", f"version {rec.version} is stored twice")
        if not rec.stream_id.startswith(rec.conversation_id) or rec.conversation_id != conv:
            return problem(n, rec.position, "changed", f"conversation column says {rec.conversation_id!r}")
        if head is not None and n > head.version:
            return problem(n, rec.position, "inserted", f"events past the head (version {head.version}) were added")
        rule = _links(prev, rec, signing_key, metadata)
        if not rule:
            return _classify_mismatch(problem, prev, records, n - 1, signing_key, metadata)
        below += rule < RULE
        if rec.position < last_position:
            # A consistent chain whose positions disagree: renumbered and re-hashed.
            return problem(
                n - 1,
                rec.position,
                "reordered",
                f"version {n} was written before version {n - 1} (position {rec.position} < {last_position})",
            )
        prev = rec.hash
        last_position = rec.position
    if unpositioned is not None:
        unpositioned.append(below)
    stored = len(records)
    if head is None:
        last = records[-1] if records else None
        return problem(
            stored,
            last.position if last else None,
            "removed",
            "the stream has events but no head row (the head was deleted or the events were inserted)",
        )
    if head.version > stored:
        return problem(stored + 1, None, "removed", f"the head says {head.version} events, {stored} are stored")
    if not records:
        # Every stream is created with its first event, in one transaction: an empty one lost its events
        # (in SQLite, where the head is the last event, this row is what is left of them).
        return problem(1, None, "removed", "the stream exists but has no events: they were deleted")
    if head.head_hash != prev:
        return problem(head.version, None, "changed", "the head row's hash does not match the last event")
    if head.tenant != (records[-1].tenant if records else head.tenant):
        return problem(head.version, None, "changed", f"the head row's tenant is {head.tenant!r}")
    return None


def _classify_mismatch(
    problem: Callable[[int, int | None, str, str], ChainProblem],
    prev: str,
    records: Sequence[Record],
    i: int,
    signing_key: bytes | None,
    metadata: str | None,
) -> ChainProblem:
    """Name a hash mismatch at ``records[i]``: inserted, reordered or changed."""
    rec = records[i]
    nxt = records[i + 1] if i + 1 < len(records) else None
    if nxt is not None:
        # The two events chain in the other order: their versions were swapped.
        if _links(prev, nxt, signing_key, metadata, version=rec.version) and _links(
            nxt.hash, rec, signing_key, metadata, version=nxt.version
        ):
            return problem(
                rec.version, rec.position, "reordered", f"versions {rec.version} and {nxt.version} were swapped"
            )
        # The chain continues past this event as if it were not there: it was inserted
        # (possibly with the later versions renumbered to make room).
        for version in (nxt.version - 1, nxt.version):
            if _links(prev, nxt, signing_key, metadata, version=version):
                return problem(rec.version, rec.position, "inserted", "this event is not part of the chain")
    if rec.version == 1 and metadata is not None:
        detail = (
            "the stored event, its global position or the conversation metadata on its head row does not match its hash"
        )
        return problem(rec.version, rec.position, "changed", detail)
    detail = "the stored event or its global position does not match its hash"
    return problem(rec.version, rec.position, "changed", detail)
