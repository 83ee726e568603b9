"""Verifying the hash chains: has any stored event been changed, removed, inserted or reordered?

Every stream (a conversation, each of its tool calls, each side stream) carries
its own chain (see :mod:`chatledger.store.integrity.chain`). :func:`verify` walks each
stream in version order, recomputes every hash from what is stored and
compares it with the stored hash and with the stream's head, reporting the
first problem of each broken stream. It reads only stored text, never decodes a
payload, so it works on encrypted and erased conversations alike.

A conversation's first event also covers the metadata its head row keeps in
clear (chain rule 2, see :mod:`chatledger.store.integrity.chain`), so an edited
listing is named at version 1; conversations started before rule 2 are counted
in :attr:`VerifyReport.legacy`.

Where the head lives depends on the backend. PostgreSQL and memory keep a head
row (version and last hash) beside the events of every stream, and verify
lists every head row of every kind, so a deleted tail, a deleted head row, or
a tool-call or side stream whose events were all deleted shows inside the
database. SQLite keeps no head row: a stream's head is its last event, so from
inside the file alone a stream that lost its last events, or a stream whose
events and ``streams`` row are both gone, looks whole or absent (the file's
triggers refuse such deletes; only someone who drops them can do it). Heads
kept elsewhere (:func:`heads`, every stream's, passed back as ``kept=``) catch
those on every backend, for every stream that existed when they were kept.
Global positions are not covered by any chain: verify checks that a stream's
positions follow its versions, not how streams interleave in the global log.

What a report says, per broken stream (``kind``):

- ``changed``: a stored event (or the head row) no longer matches its hash, or
  the event at a kept head's version no longer has the kept hash.
- ``removed``: a version is missing, the head says there are more events than
  stored, or a kept conversation is gone or shorter than its kept head.
- ``inserted``: an event was added that the chain never linked (mid-stream or past the head).
- ``reordered``: versions no longer follow the order events were written in.

Without a signing key the chain detects accidents and careless edits; an
attacker with write access can recompute it. With a signing key (an HMAC) the
chain cannot be recomputed without the key, and :func:`heads` gives the
values to keep elsewhere so that even a whole deleted stream is noticed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from chatledger.store.backends.recorder import CALL_SEPARATOR, Record, StreamHead
from chatledger.store.errors import IntegrityError
from chatledger.store.integrity.chain import GENESIS, RULE, event_hash
from chatledger.store.integrity.substreams import difference, named_missing, record_of

if TYPE_CHECKING:
    from chatledger.store.handle import Store

__all__ = ["UNKNOWN_CONVERSATION", "ChainProblem", "Kept", "VerifyReport", "heads", "verify"]

Progress = Callable[[Sequence[str]], Iterable[str]]


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


@dataclass
class VerifyReport:
    """The outcome of :func:`verify`: how much was checked (streams, events, kept heads) and the problems found."""

    streams: int = 0
    events: int = 0
    signed: bool = False
    kept: int = 0
    legacy: int = 0
    """Conversations whose first event predates chain rule 2: their head row's metadata is not covered."""
    untracked: int = 0
    """Conversations whose head keeps no record of their tool-call and side streams (started before it
    was kept): one of those streams deleted whole is not seen."""
    unpositioned: int = 0
    """Events whose hash does not cover their global position (hashed before chain rule 3, or by a
    backend that learns positions only by inserting): moving them within the global log is not seen."""
    problems: list[ChainProblem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when every checked chain is intact."""
        return not self.problems

    def raise_if_broken(self) -> None:
        """Raise IntegrityError naming the first problem, when there is one."""
        if self.problems:
            more = f" (and {len(self.problems) - 1} more)" if len(self.problems) > 1 else ""
            raise IntegrityError(self.problems[0].describe() + more)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready form."""
        return {
            "ok": self.ok,
            "streams": self.streams,
            "events": self.events,
            "signed": self.signed,
            "kept": self.kept,
            "legacy": self.legacy,
            "unpositioned": self.unpositioned,
            "untracked": self.untracked,
            "problems": [asdict(p) for p in self.problems],
        }


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
        unpositioned: when given, the number of checked events whose hash does not cover
            their global position (hashed before chain rule 3) is appended to it.
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
    if unpositioned is not None:
        unpositioned.append(0)
    for n, rec in enumerate(records, 1):
        if unpositioned is not None:
            unpositioned[-1] = below
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
        unpositioned[-1] = below
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


def _stream_ids(store: Store, conversation_id: str | None) -> list[str]:
    seen: dict[str, None] = {}
    # Every kind: a tool-call or side stream whose events were all deleted still has its head row.
    for head in store.recorder.list_heads(None, store.tenant, conversation_id=conversation_id):
        seen[head.stream_id] = None
    for rec in store.recorder.iter_all(0, 5000, store.tenant):
        if conversation_id is None or rec.conversation_id == conversation_id:
            seen.setdefault(rec.stream_id, None)
    return list(seen)


Kept = Iterable[tuple[str, str, int]]
"""Heads kept elsewhere, as :func:`heads` returns them: ``(stream_id, head_hash, version)``."""


def _owner(stream_id: str) -> str:
    return stream_id.split(CALL_SEPARATOR, 1)[0]


def check_kept(stream_id: str, head_hash: str, version: int, records: Sequence[Record]) -> ChainProblem | None:
    """How a stream whose chain holds departs from a head kept earlier, or None when it still has it.

    A chain only grows: the kept version must still be stored, with the kept hash.

    Args:
        stream_id: the stream (a conversation's own, or one of its tool-call or side streams).
        head_hash: the hash its head had when it was kept.
        version: the version its head had when it was kept.
        records: its stored events in version order, already checked to form an intact chain.
    """
    conversation_id = _owner(stream_id)
    stored = len(records)
    if version > stored:
        return ChainProblem(
            stream_id,
            conversation_id,
            stored + 1,
            None,
            "removed",
            f"the kept head is version {version}, {stored} events are stored",
        )
    if version > 0 and records[version - 1].hash != head_hash:
        rec = records[version - 1]
        return ChainProblem(
            stream_id,
            conversation_id,
            version,
            rec.position,
            "changed",
            "the event at the kept head's version no longer has the kept hash: the stream was "
            "rewritten with a recomputed chain, or rolled back and written again",
        )
    return None


def _gone(stream_id: str, version: int) -> ChainProblem:
    what = "conversation" if _owner(stream_id) == stream_id else "stream"
    return ChainProblem(
        stream_id,
        _owner(stream_id),
        1,
        None,
        "removed",
        f"the {what} is gone (its kept head is version {version})",
    )


def verify(
    store: Store,
    conversation_id: str | None = None,
    *,
    progress: Progress | None = None,
    kept: Kept | None = None,
) -> VerifyReport:
    """Check the hash chains of this tenant's streams, or of one conversation's streams.

    Args:
        store: the store (its tenant and signing key are used).
        conversation_id: only this conversation (and its tool-call and side streams).
        progress: wraps the list of stream ids being checked (the CLI draws a bar with it).
        kept: heads of this tenant's streams kept earlier (what :func:`heads` returned).
            Each kept stream (only ``conversation_id``'s when given) must still exist,
            hold at least the kept version and have the kept hash there; a stream
            whose chain is already broken is reported once, for the break.

    Returns:
        A report with the first problem of each broken stream.

    Raises:
        NotFoundError: ``conversation_id`` does not exist for this tenant and is not
            among the kept heads (a kept one that is gone is reported as removed).
    """
    expected = {c: (h, v) for c, h, v in kept or () if conversation_id is None or _owner(c) == conversation_id}
    if conversation_id is not None and conversation_id not in expected:
        store.conversation(conversation_id)
    report = VerifyReport(signed=store.signing_key is not None, kept=len(expected))
    unpositioned: list[int] = []
    skipped: list[tuple[int, int]] = []  # (after, before): positions around versions a stream is missing
    owners: dict[str, StreamHead] = {}  # conversation heads that keep a record of their streams
    owned: dict[str, list[str]] = {}  # the streams found of each conversation, its own aside
    streams = _stream_ids(store, conversation_id)
    for stream_id in progress(streams) if progress else streams:
        head = store.recorder.get_head(stream_id)
        if head is not None and head.tenant != store.tenant:
            head = None
        if head is not None and head.stream_id == head.conversation_id:
            if head.kind == "conversation" and head.substreams is not None:
                owners[stream_id] = head
        elif head is not None:
            owned.setdefault(head.conversation_id, []).append(stream_id)
        records = [r for r in store.recorder.read_stream(stream_id) if r.tenant == store.tenant]
        report.streams += 1
        report.events += len(records)
        found = check_stream(stream_id, head, records, store.signing_key, unpositioned)
        after = 0
        for n, rec in enumerate(records, 1):
            if rec.version > n:
                skipped.append((after, rec.position))
            after = rec.position
        if found is None and is_legacy(head, records, store.signing_key):
            report.legacy += 1
        held = expected.pop(stream_id, None)
        if found is None and held is not None:
            found = check_kept(stream_id, *held, records)
        if found is not None:
            report.problems.append(found)
    report.problems += [_gone(c, v) for c, (_, v) in expected.items()]
    report.unpositioned = sum(unpositioned)
    report.untracked = sum(1 for h in _conversation_heads(store, conversation_id) if h.substreams is None)
    for owner, head in owners.items():
        found_record = record_of(owned.get(owner, ()), store.signing_key)
        if found_record != head.substreams:
            unrecorded = _unrecorded(store, head, difference(str(head.substreams), found_record))
            named = (unrecorded.stream_id, unrecorded.kind, unrecorded.version)
            if named not in {(p.stream_id, p.kind, p.version) for p in report.problems}:  # a kept head named it
                report.problems.append(unrecorded)
    if conversation_id is None:
        report.problems += [_missing(first, last) for first, last in store.backend.missing_streams()]
        # A gap inside the span of versions a stream is missing is that stream's problem, named already.
        gaps = store.backend.missing_positions()
        report.problems += [
            _missing_events(first, last)
            for first, last in gaps
            if not any(after < first and last < before for after, before in skipped)
        ]
    return report


def _conversation_heads(store: Store, conversation_id: str | None) -> list[StreamHead]:
    heads = store.recorder.list_heads("conversation", store.tenant, conversation_id=conversation_id)
    return [h for h in heads if h.stream_id == h.conversation_id]


def _unrecorded(store: Store, head: StreamHead, missing: str) -> ChainProblem:
    """A conversation whose streams disagree with the record its head keeps of them."""
    named = named_missing(store, head.conversation_id, missing)
    if named is not None:
        return ChainProblem(
            named,
            head.conversation_id,
            1,
            None,
            "removed",
            "the stream is gone: its conversation's head records it (the stream was deleted whole)",
        )
    return ChainProblem(
        head.stream_id,
        head.conversation_id,
        head.version,
        None,
        "removed",
        "the conversation's tool-call and side streams do not match the record its head keeps of them: "
        "a stream of it was deleted whole (or one was added, or the record edited)",
    )


UNKNOWN_CONVERSATION = ""
"""The ``conversation_id`` of a problem whose conversation the database no longer records."""


def _missing(first: int, last: int) -> ChainProblem:
    """A gap in a SQLite file's stream numbers: streams deleted whole, their conversation unknown."""
    numbers = f"#{first}" if first == last else f"#{first}-#{last}"
    return ChainProblem(
        numbers,
        UNKNOWN_CONVERSATION,
        1,
        None,
        "removed",
        f"stream number {numbers} of the file is missing: its streams row (and any events) was deleted; "
        "the file does not record which conversation or tenant it belonged to",
    )


def _missing_events(first: int, last: int) -> ChainProblem:
    """A gap in a SQLite file's positions: events deleted, whatever stream they were in."""
    numbers = f"{first}" if first == last else f"{first}-{last}"
    return ChainProblem(
        "",
        UNKNOWN_CONVERSATION,
        0,
        first,
        "removed",
        f"position {numbers} holds no event: deleted (positions are never skipped); "
        "its stream's chain also names it when that stream is still there",
    )


def heads(store: Store) -> list[tuple[str, str, int]]:
    """This tenant's streams (conversations, their tool calls and side streams) as ``(stream_id, head_hash, version)``.

    Keep these somewhere the database's writers cannot reach (a log, another
    system): a later :func:`verify` cannot notice a whole stream deleted, cut
    short or rewritten with a valid unsigned chain, but a comparison with kept heads can.
    """
    return [(h.stream_id, h.head_hash, h.version) for h in store.recorder.list_heads(None, store.tenant)]
