"""The conversation log: the public write and read API over a backend.

:class:`Store` appends batches of chat messages atomically, idempotently (by
``message_id``) and under optimistic concurrency (``expected_version``), and
reads conversations, the global log and chat histories back. Lower layers (the
tool-call executor, adapters) use :meth:`Store.transaction` to append to
several streams in one atomic unit through a :class:`Writer`, which owns the
rules every append obeys: tenant scoping, idempotency keys, version checks,
size limits and the hash chain.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from chatledger.store.backends.backend import Backend
from chatledger.store.backends.recorder import Record, Recorder, StreamHead, WriteTransaction
from chatledger.store.errors import (
    ConflictError,
    ErasedError,
    NotFoundError,
    ValidationError,
)
from chatledger.store.events import ConversationStarted, ErasedEvent, Event, MessageAppended, event_class
from chatledger.store.integrity.redaction import Redactor
from chatledger.store.integrity.verify import Kept, Progress, VerifyReport, verify
from chatledger.store.message_reads import MessageReads
from chatledger.store.messages import check_reserved_id, validate_message
from chatledger.store.payloads import (
    DEFAULT_MAX_EVENT_BYTES,
    JSON_PARTS,
    MAX_NESTING,
    PayloadCodec,
    PlainCodec,
    check_nesting,
    not_json,
    payload_label,
)
from chatledger.store.writer import (
    FORBIDDEN_IN_IDS,
    UNCHANGED,
    Draft,
    Writer,
    check_count,
    check_id,
    new_id,
    now_iso,
)

if TYPE_CHECKING:
    from chatledger.store.subscriptions import Subscription

__all__ = [
    "DEFAULT_MAX_EVENT_BYTES",
    "MAX_NESTING",
    "ConversationInfo",
    "Draft",
    "PayloadCodec",
    "Store",
    "Writer",
    "check_id",
    "new_id",
    "now_iso",
]


@dataclass(frozen=True)
class ConversationInfo:
    """One conversation as listed: its id, tenant, version, times and metadata."""

    conversation_id: str
    tenant: str
    version: int
    created_at: str
    updated_at: str
    metadata: dict[str, Any] = field(default_factory=dict)


class Store(MessageReads):
    """An event-sourced conversation store over one backend, scoped to one tenant.

    Build it with :func:`chatledger.store.open_store`, or over an opened
    :class:`~chatledger.store.backends.Backend` (stores on one backend object share its log).
    """

    def __init__(
        self,
        backend: Backend,
        *,
        tenant: str = "default",
        max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES,
        codec: PayloadCodec | None = None,
        signing_key: bytes | None = None,
        url: str = "",
        redactor: Redactor | None = None,
    ) -> None:
        self.backend = backend
        self.recorder: Recorder = backend.recorder
        self.tenant = check_id(tenant, "tenant")
        self.max_event_bytes = max_event_bytes
        self.codec: PayloadCodec = codec or PlainCodec()
        self.signing_key = signing_key
        self.url = url
        self.redactor = redactor
        # A backend may run a lone append in fewer round trips (SQLite, PostgreSQL: one statement).
        self._append_alone: Callable[[Callable[[WriteTransaction], list[Event]]], list[Event]] = backend.append_alone

    # -- context management -------------------------------------------------------------------

    def close(self) -> None:
        """Release the backend's connections."""
        self.backend.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- writing ------------------------------------------------------------------------------

    @contextmanager
    def transaction(self) -> Iterator[Writer]:
        """An atomic unit of appends to one or more streams: all are stored, or none."""
        with self.recorder.write() as tx:
            yield Writer(self, tx)

    def start_conversation(
        self,
        conversation_id: str | None = None,
        *,
        metadata: Mapping[str, Any] | None = None,
        forked_from: Mapping[str, Any] | None = None,
        exist_ok: bool = False,
        messages: Sequence[Mapping[str, Any]] = (),
        message_ids: Sequence[str | None] | None = None,
    ) -> str:
        """Create a conversation (with optional first messages, atomically) and return its id.

        The id is a new UUID unless one is given.

        Raises:
            ConflictError: the id exists already (unless ``exist_ok``; then nothing is written).
            ValidationError: the id, metadata or a message cannot be stored; nothing is written.
        """
        conv = new_id() if conversation_id is None else check_id(conversation_id, "conversation_id")
        meta, meta_text = self.metadata_text(metadata, "metadata")
        if forked_from is not None and not isinstance(forked_from, Mapping):
            raise ValidationError("forked_from", f"must be an object, got {type(forked_from).__name__}")
        start = Draft(ConversationStarted, {"metadata": meta, "forked_from": dict(forked_from or {}) or None})
        drafts = [start, *self._message_drafts(messages, message_ids, None)]
        try:
            with self.transaction() as w:
                if w.head(conv) is not None:
                    if exist_ok:
                        return conv
                    raise ConflictError(f"conversation {conv!r} exists already")
                w.create_stream(conv, conv, "conversation", metadata=meta_text)
                w.append(conv, drafts)
        except ConflictError:
            # Two writers creating the same id at once: on PostgreSQL the loser only sees the
            # winner's row when its insert hits the unique key. The winner's conversation stands.
            if exist_ok and self._owned(conv):
                return conv
            raise
        return conv

    def _owned(self, conversation_id: str) -> bool:
        try:
            self._head(conversation_id)
        except NotFoundError:
            return False
        return True

    def append(
        self,
        conversation_id: str,
        messages: Sequence[Mapping[str, Any]],
        *,
        expected_version: int | None = None,
        message_ids: Sequence[str | None] | None = None,
        meta: Sequence[Mapping[str, Any] | None] | None = None,
    ) -> list[MessageAppended]:
        """Append a batch of chat messages atomically; return their events.

        Args:
            conversation_id: the conversation to append to.
            messages: OpenAI chat-format messages, stored verbatim.
            expected_version: the conversation version the caller last saw; a stale one fails.
            message_ids: the client's own ids (AutoGen, OpenAI); missing ones are assigned.
                A message whose id is already stored with the same content is not appended again.
            meta: adapter metadata per message (never sent to a model).

        Raises:
            ValidationError: a message is malformed (the field is named); nothing is written.
            ConcurrencyError: ``expected_version`` is stale; nothing is written.
            ConflictError: a message id was already used for different content.
            NotFoundError: the conversation does not exist for this tenant.
        """
        drafts = self._message_drafts(messages, message_ids, meta)
        check_id(conversation_id, "conversation_id")
        check_count(expected_version, "expected_version")

        def body(tx: WriteTransaction) -> list[Event]:
            return Writer(self, tx).append(conversation_id, drafts, expected_version=expected_version)

        return self._append_alone(body)  # type: ignore[return-value]  # every draft is a MessageAppended

    def _message_drafts(
        self,
        messages: Sequence[Mapping[str, Any]],
        message_ids: Sequence[str | None] | None,
        meta: Sequence[Mapping[str, Any] | None] | None,
    ) -> list[Draft]:
        if type(messages) is not list and (isinstance(messages, Mapping | str) or not isinstance(messages, Sequence)):
            raise ValidationError("messages", "must be a list of message objects")
        if message_ids is not None and (
            isinstance(message_ids, Mapping | str) or not isinstance(message_ids, Sequence)
        ):
            raise ValidationError("message_ids", "must be a list with one id (or None) per message")
        if message_ids is not None and len(message_ids) != len(messages):
            raise ValidationError("message_ids", "must have one entry per message")
        if meta is not None and (
            isinstance(meta, Mapping | str) or not isinstance(meta, Sequence) or len(meta) != len(messages)
        ):
            raise ValidationError("meta", "must be a list with one entry (an object or None) per message")
        drafts = []
        for i, message in enumerate(messages):
            where = f"messages[{i}]"
            msg = validate_message(message, where)
            mid = None if message_ids is None else message_ids[i]
            if mid is not None:
                check_id(mid, f"message_ids[{i}]")
                check_reserved_id(mid, msg, f"message_ids[{i}]")
            # Without a client id the message's id is its event id (no key to store or index).
            payload: dict[str, Any] = {"message": msg}
            if meta is not None and meta[i] is not None:
                if not isinstance(meta[i], Mapping):
                    raise ValidationError(f"meta[{i}]", f"must be an object or None, got {type(meta[i]).__name__}")
                payload["meta"] = dict(meta[i] or {})
            drafts.append(Draft(MessageAppended, payload, mid, where))
        return drafts

    # -- payload handling ---------------------------------------------------------------------

    def _dumps(self, payload: Any, where: str | Draft) -> str:
        try:
            return "".join(JSON_PARTS(payload, 0))
        except (RecursionError, TypeError, ValueError) as exc:
            raise not_json(where, exc) from None

    def _redact(self, payload: Any) -> Any:
        """``payload`` with secrets replaced when a redactor is set (event payloads are redacted the same
        way inline, in :meth:`_payload_text`)."""
        return payload if self.redactor is None else self.redactor.redact(payload)

    def redacted(self, value: Any) -> Any:
        """``value`` as this store would write it: with secrets replaced when a redactor is set.

        For what the store keeps outside event payloads (a subscription's error text).
        """
        return self._redact(value)

    def metadata_text(self, metadata: Any, field: str) -> tuple[dict[str, Any], str]:
        """Conversation metadata checked (an object, JSON, unicode, depth) and redacted, and its stored text.

        Raises:
            ValidationError: naming ``field``; nothing is written.
        """
        if metadata is None:
            metadata = {}
        if not isinstance(metadata, Mapping):
            raise ValidationError(field, f"must be an object, got {type(metadata).__name__}")
        for key in metadata:
            if not isinstance(key, str):
                raise ValidationError(field, f"keys must be strings, got {key!r}")
        meta = self._redact(dict(metadata))
        text = self._dumps(meta, field)
        if not text.isascii():
            try:
                text.encode("utf-8")
            except UnicodeEncodeError:
                raise ValidationError(field, "contains invalid unicode (a lone surrogate)") from None
        check_nesting(meta, text, field, 0)
        return meta, text

    def _encode_payload(self, conversation_id: str, draft: Draft, payload: Mapping[str, Any]) -> tuple[str, str]:
        """A draft's payload as JSON text, checked (JSON, unicode, size), and as stored (through the codec)."""
        text = self._payload_text(draft, payload)
        return text, text if type(self.codec) is PlainCodec else self.codec.encode(conversation_id, text)

    def _payload_text(self, draft: Draft, payload: Mapping[str, Any]) -> str:
        """A draft's payload as redacted JSON text, checked: JSON, nesting, unicode, size."""
        try:
            text = "".join(JSON_PARTS(payload if self.redactor is None else self.redactor.redact(payload), 0))
        except (RecursionError, TypeError, ValueError) as exc:
            raise not_json(draft, exc) from None
        check_nesting(payload, text, draft, 1)
        if text.isascii():
            size = len(text)
        else:
            try:
                size = len(text.encode("utf-8"))
            except UnicodeEncodeError:
                raise ValidationError(payload_label(draft), "contains invalid unicode (a lone surrogate)") from None
        if size > self.max_event_bytes:
            raise ValidationError(
                payload_label(draft), f"is {size} bytes, over the event size limit of {self.max_event_bytes}"
            )
        return text

    def check_messages(
        self,
        messages: Sequence[Mapping[str, Any]],
        message_ids: Sequence[str | None] | None = None,
        meta: Sequence[Mapping[str, Any] | None] | None = None,
    ) -> None:
        """Check a batch as :meth:`append` would, without writing: to validate a whole import first.

        Raises:
            ValidationError: what ``append`` would raise for these messages (the field is named).
        """
        for draft in self._message_drafts(messages, message_ids, meta):
            self._payload_text(draft, draft.payload)

    def _payload_of(self, record: Record) -> Any:
        return json.loads(self.codec.decode(record.conversation_id, record.payload))

    def decode(self, record: Record, *, erased_marker: bool = False) -> Event:
        """Turn a stored record into its event (upcasting old schema versions).

        Args:
            record: a stored record of this store's tenant.
            erased_marker: return an :class:`~chatledger.store.events.ErasedEvent` for an event
                of an erased conversation instead of raising (what readers of the whole log want).

        Raises:
            ErasedError: the conversation was erased (unless ``erased_marker``).
            EncryptedPayloadError: the payload is encrypted and this store has no master key.
        """
        cls = event_class(record.type)
        try:
            payload = self._payload_of(record)
        except ErasedError:
            if not erased_marker:
                raise
            return _erased(record)
        if record.schema_version < cls.SCHEMA_VERSION:
            payload = cls.upcast(payload, record.schema_version)
        if cls.KEY_FIELD is not None and cls.KEY_FIELD not in payload:
            payload[cls.KEY_FIELD] = record.key if record.key is not None else record.event_id
        return cls.model_validate(
            {
                "event_id": record.event_id,
                "conversation_id": record.conversation_id,
                "stream_id": record.stream_id,
                "version": record.version,
                "position": record.position,
                "recorded_at": record.recorded_at,
                "tenant": record.tenant,
                **payload,
            }
        )

    # -- integrity ----------------------------------------------------------------------------

    def verify(
        self,
        conversation_id: str | None = None,
        *,
        progress: Progress | None = None,
        kept: Kept | None = None,
    ) -> VerifyReport:
        """Check the hash chains of this tenant's streams, and against kept heads when given.

        See :func:`chatledger.store.integrity.verify.verify`.
        """
        return verify(self, conversation_id, progress=progress, kept=kept)

    # -- reading ------------------------------------------------------------------------------

    def _head(self, conversation_id: str) -> StreamHead:
        if not isinstance(conversation_id, str):
            raise ValidationError("conversation_id", f"must be a string, got {type(conversation_id).__name__}")
        valid = FORBIDDEN_IN_IDS.search(conversation_id) is None
        head = self.recorder.get_head(conversation_id) if valid else None
        if head is None or head.tenant != self.tenant or head.kind != "conversation":
            raise NotFoundError(f"conversation {conversation_id!r} does not exist")
        return head

    def version(self, conversation_id: str) -> int:
        """The conversation's current version (its number of events)."""
        return self._head(conversation_id).version

    def conversation(self, conversation_id: str) -> ConversationInfo:
        """One conversation's listing entry."""
        return _info(self._head(conversation_id))

    def conversations(
        self,
        limit: int | None = None,
        *,
        metadata: Mapping[str, Any] | None = None,
        since: str | None = None,
    ) -> list[ConversationInfo]:
        """This tenant's conversations, oldest first.

        Args:
            limit: at most this many.
            metadata: only conversations whose metadata has these key/value pairs.
            since: only conversations active at or after this ISO-8601 UTC time.

        Raises:
            ValidationError: an argument of the wrong type.
        """
        check_count(limit, "limit")
        if metadata is not None and not isinstance(metadata, Mapping):
            raise ValidationError("metadata", f"must be an object, got {type(metadata).__name__}")
        if since is not None and not isinstance(since, str):
            raise ValidationError("since", f"must be an ISO-8601 time, got {type(since).__name__}")
        if not metadata and since is None:
            return [_info(h) for h in self.recorder.list_heads("conversation", self.tenant, limit)]
        out = []
        for head in self.recorder.list_heads("conversation", self.tenant):
            if since is not None and head.updated_at < since:
                continue
            info = _info(head)
            if metadata and any(info.metadata.get(k, UNCHANGED) != v for k, v in metadata.items()):
                continue
            out.append(info)
            if limit is not None and len(out) >= limit:
                break
        return out

    def events(self, conversation_id: str, after: int = 0, limit: int | None = None) -> list[Event]:
        """A conversation's events with version > ``after``, in order."""
        check_count(after, "after", required=True)
        check_count(limit, "limit")
        self._head(conversation_id)
        return [self.decode(r) for r in self.recorder.read_stream(conversation_id, after, limit)]

    def stream_events(self, stream_id: str, after: int = 0, limit: int | None = None) -> list[Event]:
        """Any stream's events (a tool call's, a side stream's), scoped to this tenant."""
        check_count(after, "after", required=True)
        check_count(limit, "limit")
        if not isinstance(stream_id, str):
            raise ValidationError("stream_id", f"must be a string, got {type(stream_id).__name__}")
        if _NEVER_IN_STREAM_IDS.search(stream_id) is not None:
            return []  # no stream has such an id (stream ids join ids with a control character)
        return [self.decode(r) for r in self.recorder.read_stream(stream_id, after, limit) if r.tenant == self.tenant]

    def read_all(self, after: int = 0, limit: int | None = None) -> list[Event]:
        """This tenant's events in global order, after position ``after``.

        An erased conversation's events come as :class:`~chatledger.store.events.ErasedEvent` markers.
        """
        check_count(after, "after", required=True)
        check_count(limit, "limit")
        return [self.decode(r, erased_marker=True) for r in self.recorder.read_all(after, limit, self.tenant)]

    def iter_all(self, after: int = 0, batch: int = 1000) -> Iterator[Event]:
        """Stream this tenant's whole log in global order without loading it into memory (erased: markers)."""
        check_count(after, "after", required=True)
        check_count(batch, "batch", 1)
        for record in self.recorder.iter_all(after, batch, self.tenant):
            yield self.decode(record, erased_marker=True)

    def last_position(self) -> int:
        """The global position of the newest event in the log."""
        return self.recorder.last_position()

    def subscribe(self, name: str, handler: Callable[[Event], object], **options: Any) -> Subscription:
        """A durable subscription: ``handler`` gets each of this tenant's events once, in order.

        Nothing runs until ``run_once()`` / ``run_forever(stop_event)`` is called on the result;
        see :mod:`chatledger.store.subscriptions`.
        """
        from chatledger.store.subscriptions import Subscription

        return Subscription(self, name, handler, **options)


def _info(head: StreamHead) -> ConversationInfo:
    return ConversationInfo(
        head.conversation_id,
        head.tenant,
        head.version,
        head.created_at,
        head.updated_at,
        json.loads(head.metadata) if head.metadata else {},
    )


def _erased(record: Record) -> ErasedEvent:
    return ErasedEvent(
        event_id=record.event_id,
        conversation_id=record.conversation_id,
        stream_id=record.stream_id,
        version=record.version,
        position=record.position,
        recorded_at=record.recorded_at,  # type: ignore[arg-type]  # pydantic parses the ISO text
        tenant=record.tenant,
        erased_type=record.type,
    )


_NEVER_IN_STREAM_IDS = re.compile("[\x00\ud800-\udfff]")
