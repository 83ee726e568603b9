"""Verifying the log: has any stored event been changed, removed, inserted, reordered or moved?

Every stream (a conversation, each of its tool calls, each side stream) carries
its own chain (see :mod:`chatledger.store.integrity.chain`). :func:`verify` checks
each stream's chain (:mod:`chatledger.store.integrity.check`: every hash recomputed
from what is stored, the end compared with the head), reporting the first problem
of each broken stream. It reads stored text only (it decodes a conversation's
messages only to name a tool-call stream missing from its record), so it works
on encrypted and erased conversations alike.

What the chains cover: every event's fields and payload, its global position
(chain rule 3: events moved within the global log break their chains), and at a
conversation's first event the metadata its head row keeps in clear (rule 2).
Events hashed before rule 3 are counted in :attr:`VerifyReport.unpositioned`,
conversations started before rule 2 in :attr:`VerifyReport.legacy`.

What no single chain shows, verify adds:

- a tool-call or side stream deleted whole: each conversation's head keeps a
  record of its streams (:mod:`chatledger.store.integrity.substreams`), recomputed
  here (conversations started before it was kept count in :attr:`VerifyReport.untracked`);
- where the backend keeps a head row per stream (PostgreSQL, memory), a deleted
  tail, a deleted head row, a stream whose events were all deleted;
- on SQLite, which keeps no head row (a stream's head is its last event), stream
  numbers and positions the file issued and no longer holds: both are never
  skipped, so a gap is a deletion (the file's triggers refuse deletes; only
  someone who drops them can make one). Events cut from the very end of the log
  leave no gap.

Heads kept elsewhere (:func:`heads`, every stream's, passed back as ``kept=``)
catch the rest on every backend, for every stream that existed when they were kept.

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
from chatledger.store.integrity.chain import is_record, xor_records
from chatledger.store.integrity.check import ChainProblem, check_stream, is_legacy
from chatledger.store.integrity.substreams import named_missing, record_of

if TYPE_CHECKING:
    from chatledger.store.handle import Store

__all__ = ["UNKNOWN_CONVERSATION", "ChainProblem", "Kept", "VerifyReport", "heads", "verify"]

Progress = Callable[[Sequence[str]], Iterable[str]]


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
            elif head.kind == "conversation":
                report.untracked += 1
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
    for owner, head in owners.items():
        found_record = record_of(owned.get(owner, ()), store.signing_key)
        if not is_record(head.substreams):
            detail = "the record its head keeps of its tool-call and side streams is not a record: it was edited"
            report.problems.append(ChainProblem(owner, owner, head.version, None, "changed", detail))
        elif found_record != head.substreams:
            # What separates the two records: the XOR of the marks of the streams in one and not the other.
            unrecorded = _unrecorded(store, head, xor_records(str(head.substreams), found_record))
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
