"""eventsourcing's recorders over a chatledger store: every stored event is an ordinary chatledger event.

Each originator (aggregate) is a chatledger stream of its own, named after the
application and the originator id, of kind ``eventsourcing.events`` (snapshots:
``eventsourcing.snapshots``), never ``conversation``. Its events are
:class:`~chatledger.store.DomainEventRecorded` events appended through the store's
:class:`~chatledger.store.Writer`: hash-chained, tenant-scoped, encrypted when the
store encrypts, visible to subscriptions and projections.

* **Versions.** A chatledger stream counts 1, 2, 3... without gaps; an originator's
  versions may start anywhere. The first version is kept in the stream's fixed
  metadata, so originator version ``base + n - 1`` is chatledger version ``n``; an
  insert that would leave a gap or repeat a version is refused (``IntegrityError``).
  Snapshots are sparse: they are appended in any increasing order and found by scanning
  their (short) stream.
* **Notification ids** are chatledger's global positions: they increase in the order
  readers see events. An application's notification log is its own events among the
  store's (other applications', conversations', snapshots' and tracking events are
  passed over), so ids have gaps; readers use ``> last``, as eventsourcing does.
* **Tracking** is a :class:`~chatledger.store.PositionTracked` event in a stream per
  upstream application, appended in the same store transaction as the events it
  tracks; a position that does not move forward is refused.
"""

from __future__ import annotations

import base64
import json
import threading
import weakref
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Literal
from uuid import UUID

from eventsourcing.persistence import (
    AggregateRecorder,
    ApplicationRecorder,
    DatabaseError,
    DataError,
    IntegrityError,
    ListenNotifySubscription,
    Notification,
    OperationalError,
    ProcessRecorder,
    StoredEvent,
    Tracking,
    TrackingRecorder,
)

from chatledger.store import (
    BackendUnavailable,
    ChatledgerError,
    ConcurrencyError,
    ConflictError,
    DomainEventRecorded,
    Draft,
    PositionTracked,
    Store,
    ValidationError,
    Writer,
)
from chatledger.store.backends.recorder import CALL_SEPARATOR, Record, WriteTransaction
from chatledger.store.writer import check_id

__all__ = [
    "ChatledgerAggregateRecorder",
    "ChatledgerApplicationRecorder",
    "ChatledgerProcessRecorder",
    "ChatledgerSubscription",
    "ChatledgerTrackingRecorder",
    "stream_prefix",
]

OriginatorIdType = Literal["uuid", "text"]
_EVENT_TYPE = DomainEventRecorded.TYPE
_loads: Callable[[str], Any] = json.loads
try:  # the `fast` extra: 3-4x faster on these payloads
    import orjson

    _loads = orjson.loads
except ImportError:  # pragma: no cover
    pass
_POLL_SECONDS = 0.1
"""How often a subscription looks for events written by other processes (this process's wake it at once)."""


def stream_prefix(namespace: str, purpose: str) -> str:
    """The start of every stream id an application's recorder of ``purpose`` writes.

    The separator is a control character, which conversation ids cannot contain: these
    streams can never collide with a conversation.
    """
    return f"eventsourcing{CALL_SEPARATOR}{namespace}{CALL_SEPARATOR}{purpose}{CALL_SEPARATOR}"


def _translation(exc: ChatledgerError) -> DatabaseError:
    """chatledger's error as eventsourcing's: a refused version or position is its ``IntegrityError``."""
    if isinstance(exc, ConflictError | ConcurrencyError):
        return IntegrityError(str(exc))
    if isinstance(exc, ValidationError):
        return DataError(str(exc))
    if isinstance(exc, BackendUnavailable):
        return OperationalError(str(exc))
    return DatabaseError(str(exc))


@contextmanager
def _translated() -> Iterator[None]:
    """Raise chatledger's errors from the block as eventsourcing's (see :func:`_translation`)."""
    try:
        yield
    except ChatledgerError as exc:
        raise _translation(exc) from exc


class _StoreBound:
    """What every recorder here holds: the store, the application's namespace in it, the id type.

    Args:
        store: the chatledger store (its tenant scopes every read and write).
        namespace: the application's name; each application's streams are its own.
        purpose: ``events``, or ``snapshots`` (sparse versions).
        originator_id_type: ``uuid`` returns ids that parse as UUIDs as UUIDs; ``text`` as text.
    """

    def __init__(
        self,
        store: Store,
        namespace: str = "",
        *,
        purpose: str = "events",
        originator_id_type: OriginatorIdType = "uuid",
    ) -> None:
        if CALL_SEPARATOR in namespace or CALL_SEPARATOR in purpose:
            raise DataError("an application name cannot contain control characters")
        self.store = store
        self.namespace = namespace
        self.purpose = purpose
        self.originator_id_type = originator_id_type
        self._events_prefix = stream_prefix(namespace, purpose)
        self._tracking_prefix = stream_prefix(namespace, "tracking")
        self._ids: dict[str, UUID | str] = {}

    def _payload(self, record: Record) -> dict[str, Any]:
        payload: dict[str, Any] = _loads(self.store.codec.decode(record.conversation_id, record.payload))
        return payload

    def _originator_id(self, text: str) -> UUID | str:
        if self.originator_id_type != "uuid":
            return text
        found = self._ids.get(text)
        if found is None:
            try:
                found = UUID(text)
            except ValueError:
                found = text
            if len(self._ids) >= 4096:  # parsing a UUID costs more than reading its event: keep the recent ones
                self._ids.clear()
            self._ids[text] = found
        return found


def _state_text(state: bytes) -> tuple[str, bool]:
    """A stored state as text: its UTF-8 when it is that, else base64 (True)."""
    try:
        return state.decode("utf-8"), False
    except UnicodeDecodeError:
        return base64.b64encode(state).decode("ascii"), True


def _state_bytes(payload: dict[str, Any]) -> bytes:
    text: str = payload["state"]
    if payload.get("encoding") == "base64":
        return base64.b64decode(text)
    return text.encode("utf-8")


class ChatledgerAggregateRecorder(_StoreBound, AggregateRecorder):
    """Inserts and selects an application's stored events (or snapshots) as chatledger streams."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.sparse = self.purpose != "events"
        self._kind = f"eventsourcing.{self.purpose}"
        # The backend may send a lone append to one stream as one statement (SQLite, PostgreSQL).
        self._append_alone: Callable[[Callable[[WriteTransaction], list[int]]], list[int]] = (
            self.store.backend.append_alone
        )

    # -- writing ------------------------------------------------------------------------------

    def insert_events(self, stored_events: Sequence[StoredEvent], **kwargs: Any) -> Sequence[int] | None:
        """Append the events in one store transaction (all or none); None (see the application recorder)."""
        self._insert(stored_events, kwargs.get("tracking"))
        return None

    def _insert(self, stored_events: Sequence[StoredEvent], tracking: Tracking | None) -> list[int]:
        # Errors are translated with try/except rather than a context manager: this is the hot path.
        try:
            runs = self._runs(stored_events)
            if tracking is None and len(runs) == 1:
                append_alone = self._append_alone
                return append_alone(lambda tx: self._write(Writer(self.store, tx), runs))
            if not runs and tracking is None:
                return []
            with self.store.transaction() as w:
                if tracking is not None:
                    self._track(w, tracking)
                return self._write(w, runs)
        except ChatledgerError as exc:
            raise _translation(exc) from exc

    def _track(self, w: Writer, tracking: Tracking) -> None:
        raise DataError(f"{type(self).__name__} records no tracking")  # pragma: no cover

    def _runs(self, stored_events: Sequence[StoredEvent]) -> list[tuple[str, list[Draft]]]:
        """The events as consecutive runs of one stream each, as drafts, in the order given."""
        runs: list[tuple[str, list[Draft]]] = []
        prefix = self._events_prefix
        for event in stored_events:
            oid = check_id(str(event.originator_id), "originator_id")
            stream_id = prefix + oid
            text, encoded = _state_text(event.state)
            payload: dict[str, Any] = {
                "originator_id": oid,
                "originator_version": event.originator_version,
                "topic": event.topic,
                "state": text,
            }
            if encoded:
                payload["encoding"] = "base64"
            draft = Draft(DomainEventRecorded, payload, None, "state")
            if runs and runs[-1][0] == stream_id:
                runs[-1][1].append(draft)
            else:
                runs.append((stream_id, [draft]))
        return runs

    def _write(self, w: Writer, runs: list[tuple[str, list[Draft]]]) -> list[int]:
        positions: list[int] = []
        for stream_id, drafts in runs:
            first: int = drafts[0].payload["originator_version"]
            head = w.head(stream_id)
            last: int | None
            if head is None:
                meta = None if self.sparse else json.dumps({"base": first})
                head = w.create_stream(stream_id, stream_id, self._kind, metadata=meta)
                last = None
            elif self.sparse:
                newest = w.last_event(stream_id)
                last = newest.originator_version if isinstance(newest, DomainEventRecorded) else None
            else:
                last = _base(head.metadata) + head.version - 1
            for draft in drafts:
                version: int = draft.payload["originator_version"]
                if last is not None and (version <= last or (not self.sparse and version != last + 1)):
                    what = "is recorded already" if version <= last else f"would leave a gap after {last}"
                    raise ConflictError(f"version {version} of {stream_id.rsplit(CALL_SEPARATOR, 1)[-1]!r} {what}")
                last = version
            events = w.append(stream_id, drafts, expected_version=head.version)
            positions += [e.position for e in events]
        return positions

    # -- reading ------------------------------------------------------------------------------

    def select_events(
        self,
        originator_id: UUID | str,
        *,
        gt: int | None = None,
        lte: int | None = None,
        desc: bool = False,
        limit: int | None = None,
    ) -> Sequence[StoredEvent]:
        """An originator's stored events with versions in (``gt``, ``lte``], in version order (or reversed)."""
        stream_id = self._events_prefix + str(originator_id)
        recorder = self.store.recorder
        with _translated():
            head = recorder.get_head(stream_id)
            if head is None or head.tenant != self.store.tenant or head.version == 0:
                return []
            oid = self._returned_id(originator_id)
            if self.sparse:
                return _window(self._events(oid, recorder.read_stream(stream_id)), gt, lte, desc, limit)
            base = _base(head.metadata)
            after, upto = 0, head.version
            if gt is not None:
                after = max(after, gt - base + 1)
            if lte is not None:
                upto = min(upto, lte - base + 1)
            if upto <= after:
                return []
            if desc and limit is not None:
                after = max(after, upto - limit)
            elif limit is not None:
                upto = min(upto, after + limit)
            if after == 0:
                # A whole history (or its start): the payloads alone, in one indexed range read.
                texts = recorder.read_payloads(stream_id, _EVENT_TYPE, upto)
            else:
                texts = [r.payload for r in recorder.read_stream(stream_id, after, upto - after)]
            events = self._decoded(oid, stream_id, texts)
            if desc:
                events.reverse()
            return events

    def _returned_id(self, given: UUID | str) -> UUID | str:
        """The originator id as events return it: a given UUID as it is, text as the id type says."""
        return given if isinstance(given, UUID) else self._originator_id(given)

    def _decoded(self, oid: UUID | str, conversation_id: str, texts: Sequence[str]) -> list[StoredEvent]:
        decode, loads = self.store.codec.decode, _loads
        out = []
        for text in texts:
            payload = loads(decode(conversation_id, text))
            state = payload["state"]
            out.append(
                StoredEvent(
                    oid,
                    payload["originator_version"],
                    payload["topic"],
                    base64.b64decode(state) if payload.get("encoding") == "base64" else state.encode(),
                )
            )
        return out

    def _events(self, oid: UUID | str, records: list[Record]) -> list[StoredEvent]:
        tenant = self.store.tenant
        own = [r for r in records if r.tenant == tenant and r.type == _EVENT_TYPE]
        return self._decoded(oid, own[0].conversation_id, [r.payload for r in own]) if own else []


def _window(
    events: list[StoredEvent], gt: int | None, lte: int | None, desc: bool, limit: int | None
) -> list[StoredEvent]:
    """Sparse events (snapshots) with versions in (``gt``, ``lte``], in version order or reversed, at most ``limit``."""
    events.sort(key=lambda e: e.originator_version)
    found = [
        e for e in events if (gt is None or e.originator_version > gt) and (lte is None or e.originator_version <= lte)
    ]
    if desc:
        found.reverse()
    return found[:limit] if limit is not None else found


_BASES: dict[str | None, int] = {}


def _base(metadata: str | None) -> int:
    """An events stream's first originator version, kept in its fixed metadata (``{"base": N}``)."""
    base = _BASES.get(metadata)
    if base is None:
        base = int(json.loads(metadata or "{}").get("base", 1))
        if len(_BASES) < 1024:  # a handful of distinct first versions in practice (0, 1)
            _BASES[metadata] = base
    return base


class ChatledgerApplicationRecorder(ChatledgerAggregateRecorder, ApplicationRecorder):
    """An aggregate recorder that also reads the application's events in global order, and follows them."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._scan_lock = threading.Lock()
        self._scanned = 0  # every position up to here was looked at by max_notification_id()
        self._max: int | None = None
        self._subscriptions: weakref.WeakSet[ChatledgerSubscription] = weakref.WeakSet()

    def insert_events(self, stored_events: Sequence[StoredEvent], **kwargs: Any) -> Sequence[int] | None:
        """Append the events in one store transaction; return their notification ids (global positions)."""
        positions = self._insert(stored_events, kwargs.get("tracking"))
        if positions and self._subscriptions:
            for subscription in list(self._subscriptions):
                subscription.wake()
        return positions

    def select_notifications(
        self,
        start: int | None,
        limit: int,
        stop: int | None = None,
        topics: Sequence[str] = (),
        *,
        inclusive_of_start: bool = True,
    ) -> Sequence[Notification]:
        """This application's events with ids from ``start`` (or after it) up to ``stop``, at most ``limit``."""
        after = 0 if start is None else (start - 1 if inclusive_of_start else start)
        found: list[Notification] = []
        if limit <= 0:
            return found
        wanted = frozenset(topics)
        with _translated():
            for record in self._scan(max(after, 0), stop, max(min(limit, 1000), 100)):
                notification = self._notification(record)
                if wanted and notification.topic not in wanted:
                    continue
                found.append(notification)
                if len(found) >= limit:
                    break
        return found

    def _scan(self, after: int, stop: int | None, batch: int) -> Iterator[Record]:
        """This application's event records after ``after`` (up to ``stop``), in global order."""
        recorder, tenant, prefix = self.store.recorder, self.store.tenant, self._events_prefix
        while True:
            page = recorder.read_all(after, batch, tenant)
            for record in page:
                if stop is not None and record.position > stop:
                    return
                if record.type == _EVENT_TYPE and record.stream_id.startswith(prefix):
                    yield record
            if len(page) < batch:
                return
            after = page[-1].position

    def _notification(self, record: Record) -> Notification:
        payload = self._payload(record)
        return Notification(
            id=record.position,
            originator_id=self._originator_id(payload["originator_id"]),
            originator_version=payload["originator_version"],
            topic=payload["topic"],
            state=_state_bytes(payload),
        )

    def max_notification_id(self) -> int | None:
        """The id of this application's newest event, or None when it has none.

        The store's log holds other events too: the first call scans the log once, later calls
        only what was appended since (positions increase in the order readers see events, so
        nothing appears behind the point scanned to).
        """
        recorder, tenant, prefix = self.store.recorder, self.store.tenant, self._events_prefix
        with self._scan_lock, _translated():
            while True:
                page = recorder.read_all(self._scanned, 1000, tenant)
                for record in page:
                    if record.type == _EVENT_TYPE and record.stream_id.startswith(prefix):
                        self._max = record.position
                if page:
                    self._scanned = page[-1].position
                if len(page) < 1000:
                    return self._max

    def subscribe(self, gt: int | None = None, topics: Sequence[str] = ()) -> ChatledgerSubscription:
        """This application's events after ``gt`` as they are recorded, in any process.

        Events recorded by this recorder wake the subscription at once; other processes'
        are found by polling the store every 0.1 s.
        """
        subscription = ChatledgerSubscription(self, gt=gt, topics=topics)
        self._subscriptions.add(subscription)
        return subscription


class ChatledgerSubscription(ListenNotifySubscription[ChatledgerApplicationRecorder]):
    """eventsourcing's pulling subscription, woken by this process's inserts and by a poll for others'."""

    def __init__(
        self,
        recorder: ChatledgerApplicationRecorder,
        gt: int | None = None,
        topics: Sequence[str] = (),
        poll_seconds: float = _POLL_SECONDS,
    ) -> None:
        self._stopping = threading.Event()
        self._poll_seconds = poll_seconds
        super().__init__(recorder=recorder, gt=gt, topics=topics)
        self._ticker = threading.Thread(target=self._tick, daemon=True)
        self._ticker.start()

    def wake(self) -> None:
        """Look for new events now."""
        self._has_been_notified.set()

    def _tick(self) -> None:
        while not self._stopping.wait(self._poll_seconds):
            self._has_been_notified.set()

    def stop(self) -> None:
        """Stop the subscription (and its poll)."""
        self._stopping.set()
        super().stop()


class ChatledgerTrackingRecorder(_StoreBound, TrackingRecorder):
    """Records how far a consumer (view, process application) has processed each upstream application.

    A view that keeps its own state in the store records it and the tracking in one
    transaction with :meth:`tracked`.
    """

    def _tracking_stream(self, application_name: str) -> str:
        return self._tracking_prefix + application_name

    def _track(self, w: Writer, tracking: Tracking) -> None:
        name, position = tracking.application_name, tracking.notification_id
        stream_id = self._tracking_stream(name)
        head = w.head(stream_id)
        if head is None:
            w.create_stream(stream_id, stream_id, "eventsourcing.tracking")
        else:
            last = w.last_event(stream_id)
            if isinstance(last, PositionTracked) and last.position >= position:
                raise ConflictError(f"{name!r} is tracked at {last.position} already, not below or at it again")
        w.append(stream_id, [Draft(PositionTracked, {"name": name, "position": position})])

    @contextmanager
    def tracked(self, tracking: Tracking) -> Iterator[Writer]:
        """A store transaction that records ``tracking`` and whatever the block appends, or nothing.

        Raises:
            IntegrityError: the position does not move forward (processed already).
        """
        with _translated(), self.store.transaction() as w:
            self._track(w, tracking)
            yield w

    def insert_tracking(self, tracking: Tracking) -> None:
        """Record that ``tracking.notification_id`` of ``tracking.application_name`` was processed."""
        with self.tracked(tracking):
            pass

    def max_tracking_id(self, application_name: str) -> int | None:
        """The last position recorded for the upstream application, or None."""
        stream_id = self._tracking_stream(application_name)
        recorder = self.store.recorder
        with _translated():
            head = recorder.get_head(stream_id)
            if head is None or head.tenant != self.store.tenant or head.version == 0:
                return None
            for record in recorder.read_stream(stream_id, head.version - 1, 1):
                position: int = self._payload(record)["position"]
                return position
        return None  # pragma: no cover


class ChatledgerProcessRecorder(ChatledgerTrackingRecorder, ChatledgerApplicationRecorder, ProcessRecorder):
    """An application recorder whose inserts may carry ``tracking``, recorded in the same transaction."""
