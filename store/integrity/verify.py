"""Verifying the hash chains: has any stored event been changed, removed, inserted or reordered?

Every stream (a conversation, each of its tool calls, each side stream) carries
its own chain (see :mod:`chatledger.store.integrity.chain`). :func:`verify` walks each
stream in version order, recomputes every hash from what is stored and
compares it with the stored hash and with the stream's head, reporting the
first problem of each broken stream. It reads only stored text, never decodes a
payload, so it works on encrypted and erased conversations alike.

Where the head lives depends on the backend. PostgreSQL and memory keep a head
row (version and last hash) beside the events, so a deleted tail or a deleted
head row shows inside the database. SQLite keeps no head row: a stream's head
is its last event, so from inside the file alone a stream that lost its last
events, or whose ``streams`` row is gone, looks whole (the file's triggers
refuse such deletes; only someone who drops them can do it). Heads kept
elsewhere (:func:`heads`, passed back as ``kept=``) catch those on every backend.

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
from chatledger.store.integrity.chain import GENESIS, event_hash

if TYPE_CHECKING:
    from chatledger.store.handle import Store

__all__ = ["ChainProblem", "Kept", "VerifyReport", "heads", "verify"]

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
            "problems": [asdict(p) for p in self.problems],
        }


def _hash(prev: str, rec: Record, signing_key: bytes | None, *, version: int | None = None) -> str:
    return event_hash(
        prev,
        stream_id=rec.stream_id,
        version=rec.version if version is None else version,
        event_id=rec.event_id,
        type_name=rec.type,
        schema_version=rec.schema_version,
        key=rec.key,
        recorded_at=rec.recorded_at,
        tenant=rec.tenant,
        payload=rec.payload,
        signing_key=signing_key,
    )


def _chain_holds(records: Sequence[Record], key: bytes | None) -> bool:
    prev = GENESIS
    for n, rec in enumerate(records, 1):
        if rec.version != n or _hash(prev, rec, key) != rec.hash:
            return False
        prev = rec.hash
    return True


def check_stream(
    stream_id: str, head: StreamHead | None, records: Sequence[Record], signing_key: bytes | None
) -> ChainProblem | None:
    """The first problem of one stream's chain, or None when it is intact.

    Args:
        stream_id: the stream checked.
        head: its head row (None when the row is missing).
        records: its stored events in version order.
        signing_key: the HMAC key the chain was written with, if any.
    """
    conv = head.conversation_id if head else (records[0].conversation_id if records else stream_id)

    def problem(version: int, position: int | None, kind: str, detail: str) -> ChainProblem:
        return ChainProblem(stream_id, conv, version, position, kind, detail)

    unsigned = signing_key is not None and records and not _chain_holds(records, signing_key)
    if unsigned and _chain_holds(records, None):
        first = records[0]
        return problem(
            first.version,
            first.position,
            "changed",
            "the chain is a plain SHA-256 chain, not signed with the signing key: "
            "it was written without the key or recomputed by someone who does not have it",
        )
    prev = GENESIS
    last_position = 0
    for n, rec in enumerate(records, 1):
        if rec.version > n:
            return problem(n, rec.position, "removed", f"version {n} is missing; the next stored is {rec.version}")
        if rec.version < n:
            return problem(rec.version, rec.position, "inserted", f"version {rec.version} is stored twice")
        if not rec.stream_id.startswith(rec.conversation_id) or rec.conversation_id != conv:
            return problem(n, rec.position, "changed", f"conversation column says {rec.conversation_id!r}")
        if head is not None and n > head.version:
            return problem(n, rec.position, "inserted", f"events past the head (version {head.version}) were added")
        if _hash(prev, rec, signing_key) != rec.hash:
            return _classify_mismatch(problem, prev, records, n - 1, signing_key)
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
) -> ChainProblem:
    """Name a hash mismatch at ``records[i]``: inserted, reordered or changed."""
    rec = records[i]
    nxt = records[i + 1] if i + 1 < len(records) else None
    if nxt is not None:
        # The two events chain in the other order: their versions were swapped.
        if (
            _hash(prev, nxt, signing_key, version=rec.version) == nxt.hash
            and _hash(nxt.hash, rec, signing_key, version=nxt.version) == rec.hash
        ):
            return problem(
                rec.version, rec.position, "reordered", f"versions {rec.version} and {nxt.version} were swapped"
            )
        # The chain continues past this event as if it were not there: it was inserted
        # (possibly with the later versions renumbered to make room).
        for version in (nxt.version - 1, nxt.version):
            if _hash(prev, nxt, signing_key, version=version) == nxt.hash:
                return problem(rec.version, rec.position, "inserted", "this event is not part of the chain")
    return problem(rec.version, rec.position, "changed", "the stored event does not match its hash")


def _stream_ids(store: Store, conversation_id: str | None) -> list[str]:
    seen: dict[str, None] = {}
    for head in store.recorder.list_heads("conversation", store.tenant, conversation_id=conversation_id):
        seen[head.stream_id] = None
    for rec in store.recorder.iter_all(0, 5000, store.tenant):
        if conversation_id is None or rec.conversation_id == conversation_id:
            seen.setdefault(rec.stream_id, None)
    return list(seen)


Kept = Iterable[tuple[str, str, int]]
"""Heads kept elsewhere, as :func:`heads` returns them: ``(conversation_id, head_hash, version)``."""


def check_kept(conversation_id: str, head_hash: str, version: int, records: Sequence[Record]) -> ChainProblem | None:
    """How a conversation whose chain holds departs from a head kept earlier, or None when it still has it.

    A chain only grows: the kept version must still be stored, with the kept hash.

    Args:
        conversation_id: the conversation (its own stream).
        head_hash: the hash its head had when it was kept.
        version: the version its head had when it was kept.
        records: its stored events in version order, already checked to form an intact chain.
    """
    stored = len(records)
    if version > stored:
        return ChainProblem(
            conversation_id,
            conversation_id,
            stored + 1,
            None,
            "removed",
            f"the kept head is version {version}, {stored} events are stored",
        )
    if version > 0 and records[version - 1].hash != head_hash:
        rec = records[version - 1]
        return ChainProblem(
            conversation_id,
            conversation_id,
            version,
            rec.position,
            "changed",
            "the event at the kept head's version no longer has the kept hash: the conversation was "
            "rewritten with a recomputed chain, or rolled back and written again",
        )
    return None


def _gone(conversation_id: str, version: int) -> ChainProblem:
    return ChainProblem(
        conversation_id,
        conversation_id,
        1,
        None,
        "removed",
        f"the conversation is gone (its kept head is version {version})",
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
        kept: heads of this tenant's conversations kept earlier (what :func:`heads` returned).
            Each kept conversation (only ``conversation_id`` when given) must still exist,
            hold at least the kept version and have the kept hash there; a conversation
            whose chain is already broken is reported once, for the break.

    Returns:
        A report with the first problem of each broken stream.

    Raises:
        NotFoundError: ``conversation_id`` does not exist for this tenant and is not
            among the kept heads (a kept one that is gone is reported as removed).
    """
    expected = {c: (h, v) for c, h, v in kept or () if conversation_id is None or c == conversation_id}
    if conversation_id is not None and conversation_id not in expected:
        store.conversation(conversation_id)
    report = VerifyReport(signed=store.signing_key is not None, kept=len(expected))
    streams = _stream_ids(store, conversation_id)
    for stream_id in progress(streams) if progress else streams:
        head = store.recorder.get_head(stream_id)
        if head is not None and head.tenant != store.tenant:
            head = None
        records = [r for r in store.recorder.read_stream(stream_id) if r.tenant == store.tenant]
        report.streams += 1
        report.events += len(records)
        found = check_stream(stream_id, head, records, store.signing_key)
        held = expected.pop(stream_id, None)
        if found is None and held is not None:
            found = check_kept(stream_id, *held, records)
        if found is not None:
            report.problems.append(found)
    report.problems += [_gone(c, v) for c, (_, v) in expected.items()]
    return report


def heads(store: Store) -> list[tuple[str, str, int]]:
    """This tenant's conversations as ``(conversation_id, head_hash, version)``.

    Keep these somewhere the database's writers cannot reach (a log, another
    system): a later :func:`verify` cannot notice a whole conversation deleted
    or rewritten with a valid unsigned chain, but a comparison with kept heads can.
    """
    return [
        (h.conversation_id, h.head_hash, h.version) for h in store.recorder.list_heads("conversation", store.tenant)
    ]
