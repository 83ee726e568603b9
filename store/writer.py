"""The rules every append obeys, once for every backend.

A :class:`Writer` wraps one backend write transaction (see
:mod:`chatledger.store.recorder`) and appends events to one or more streams in
it: tenant scoping, idempotency keys (same payload: the stored event is
returned; different payload: ConflictError), ``expected_version``, payload
checks (size, JSON, unicode, via the store's codec and redactor) and the hash
chain. :meth:`chatledger.store.Store.transaction` hands one out; the executor
and the adapters write through it, and so does every ``Store.append``.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, get_args

from .chain import GENESIS, event_hash
from .errors import ConcurrencyError, ConflictError, NotFoundError, ValidationError
from .events import Event
from .recorder import CALL_SEPARATOR, NewRecord, StreamHead, WriteTransaction

if TYPE_CHECKING:
    from .log import Store

__all__ = ["FORBIDDEN_IN_IDS", "MAX_ID_LENGTH", "UNCHANGED", "Draft", "Writer", "check_id", "new_id", "now_iso"]

MAX_ID_LENGTH = 512
UNCHANGED: Any = object()


@dataclass(frozen=True)
class Draft:
    """An event to append: its class, its payload and an optional idempotency key."""

    cls: type[Event]
    payload: dict[str, Any]
    key: str | None = None
    label: str | None = None
    new_key: bool = False
    """The key was minted just now (a random id), so it cannot be stored yet: no lookup."""


def now_iso() -> str:
    """The current UTC time in the form every event stores."""
    return datetime.now(UTC).isoformat()


FORBIDDEN_IN_IDS = re.compile("[\x00-\x1f\x7f\ud800-\udfff]")


def new_id() -> str:
    """A fresh random id (128 bits, hex)."""
    return os.urandom(16).hex()


def check_id(value: Any, what: str) -> str:
    """Validate an id: a non-empty string of at most 512 characters with no control characters."""
    if not isinstance(value, str) or not value:
        raise ValidationError(what, "must be a non-empty string")
    if len(value) > MAX_ID_LENGTH:
        raise ValidationError(what, f"is {len(value)} characters, more than {MAX_ID_LENGTH}")
    bad = FORBIDDEN_IN_IDS.search(value)
    if bad is not None:
        raise ValidationError(what, f"contains the control or surrogate character {bad.group()!r}")
    return value


class Writer:
    """The appends of one atomic transaction, possibly across several streams."""

    def __init__(self, store: Store, tx: WriteTransaction) -> None:
        self._store = store
        self._tx = tx
        self._heads: dict[str, StreamHead] = {}

    def head(self, stream_id: str) -> StreamHead | None:
        """A stream's head as of this transaction (locked), scoped to the store's tenant."""
        head = self._heads.get(stream_id)
        if head is None:
            head = self._tx.head(stream_id)
            if head is None:
                return None
            if head.tenant != self._store.tenant:
                return None
            self._heads[stream_id] = head
        return head

    def create_stream(
        self,
        stream_id: str,
        conversation_id: str,
        kind: str,
        *,
        status: str | None = None,
        metadata: str | None = None,
    ) -> StreamHead:
        """Create an empty stream owned by this store's tenant.

        Raises:
            NotFoundError: the stream belongs to another tenant's conversation.
        """
        if stream_id != conversation_id:
            owner = self._tx.head(conversation_id)
            if owner is not None and owner.tenant != self._store.tenant:
                raise NotFoundError(f"conversation {conversation_id!r} does not exist")
        now = now_iso()
        head = StreamHead(
            stream_id,
            conversation_id,
            self._store.tenant,
            kind,
            0,
            GENESIS,
            now,
            now,
            status,
            None,
            metadata,
        )
        self._tx.create_stream(head)
        self._heads[stream_id] = head
        return head

    def append(
        self,
        stream_id: str,
        drafts: Sequence[Draft],
        *,
        expected_version: int | None = None,
        status: Any = UNCHANGED,
        lease_until: Any = UNCHANGED,
    ) -> list[Event]:
        """Append events to an existing stream; return the stored events, in order.

        A draft whose key is already in the stream with equal payload is not
        appended again: the stored event is returned in its place. An equal key
        with a different payload raises ConflictError. When every draft is such
        a duplicate the call is a pure no-op and ``expected_version`` is not
        checked, so that a retried append succeeds.

        Raises:
            NotFoundError: the stream does not exist for this tenant.
            ConcurrencyError: ``expected_version`` is not the stream's version.
            ConflictError: a key is reused with different content.
            ValidationError: a payload cannot be stored (too large, not JSON, bad unicode).
        """
        store = self._store
        head = self.head(stream_id)
        if head is None:
            raise NotFoundError(f"conversation {_conversation_of(stream_id)!r} does not exist")
        encoded = [store._encode_payload(head.conversation_id, d) for d in drafts]
        keys = [d.key for d in drafts if d.key is not None]
        if len(set(keys)) != len(keys):
            raise ConflictError(f"the same id appears twice in one batch for {head.conversation_id!r}")
        lookup = [d.key for d in drafts if d.key is not None and not d.new_key]
        existing = self._tx.records_by_keys(stream_id, lookup) if lookup else {}
        results: list[Event | None] = [None] * len(drafts)
        fresh: list[int] = []
        for i, draft in enumerate(drafts):
            old = existing.get(draft.key) if draft.key is not None else None
            if old is None:
                fresh.append(i)
                continue
            if old.type != draft.cls.TYPE or store._payload_of(old) != json.loads(encoded[i][0]):
                raise ConflictError(
                    f"id {draft.key!r} in conversation {head.conversation_id!r} was already used for different content"
                )
            results[i] = store.decode(old)
        if not fresh:
            return [r for r in results if r is not None]
        if expected_version is not None and expected_version != head.version:
            raise ConcurrencyError(head.conversation_id, expected_version, head.version)
        version, prev = head.version, head.head_hash
        recorded_at = now_iso()
        new_records = []
        for i in fresh:
            draft, (_, stored) = drafts[i], encoded[i]
            version += 1
            event_id = new_id()
            digest = event_hash(
                prev,
                stream_id=stream_id,
                version=version,
                event_id=event_id,
                type_name=draft.cls.TYPE,
                schema_version=draft.cls.SCHEMA_VERSION,
                key=draft.key,
                recorded_at=recorded_at,
                tenant=head.tenant,
                payload=stored,
                signing_key=store.signing_key,
            )
            new_records.append(
                NewRecord(
                    stream_id,
                    version,
                    head.conversation_id,
                    head.tenant,
                    event_id,
                    draft.cls.TYPE,
                    draft.cls.SCHEMA_VERSION,
                    draft.key,
                    recorded_at,
                    stored,
                    digest,
                )
            )
            prev = digest
        positions = self._tx.insert(new_records)
        new_status = head.status if status is UNCHANGED else status
        new_lease = head.lease_until if lease_until is UNCHANGED else lease_until
        self._tx.update_head(stream_id, version, prev, recorded_at, new_status, new_lease)
        self._heads[stream_id] = StreamHead(
            head.stream_id,
            head.conversation_id,
            head.tenant,
            head.kind,
            version,
            prev,
            head.created_at,
            recorded_at,
            new_status,
            new_lease,
            head.metadata,
        )
        at = datetime.fromisoformat(recorded_at)
        for i, rec, pos in zip(fresh, new_records, positions, strict=True):
            envelope: dict[str, Any] = {
                "event_id": rec.event_id,
                "conversation_id": rec.conversation_id,
                "stream_id": rec.stream_id,
                "version": rec.version,
                "position": pos,
                "recorded_at": at,
                "tenant": rec.tenant,
            }
            results[i] = _built(drafts[i].cls, envelope, json.loads(encoded[i][0]))
        return [r for r in results if r is not None]


_DATETIME_FIELDS: dict[type[Event], tuple[str, ...]] = {}


def _built(cls: type[Event], envelope: dict[str, Any], payload: dict[str, Any]) -> Event:
    """The event just written, built without validating again what was validated and stored.

    Its payload went through the event's own checks and JSON on the way in; only
    datetime fields need turning back from their ISO text. A payload that lacks a
    field (an adapter's own event type, say) takes the validating path instead.
    """
    names = _DATETIME_FIELDS.get(cls)
    if names is None:
        names = _DATETIME_FIELDS[cls] = tuple(
            name
            for name, f in cls.model_fields.items()
            if name != "recorded_at" and (f.annotation is datetime or datetime in get_args(f.annotation))
        )
    fields = cls.model_fields
    for name, f in fields.items():
        if name not in envelope and name not in payload:
            if f.is_required():
                return cls.model_validate({**envelope, **payload})
            payload[name] = f.get_default(call_default_factory=True)
    if len(envelope) + len(payload) != len(fields):
        return cls.model_validate({**envelope, **payload})
    for name in names:
        value = payload.get(name)
        if isinstance(value, str):
            payload[name] = datetime.fromisoformat(value)
    return cls.model_construct(**envelope, **payload)


def _conversation_of(stream_id: str) -> str:
    return stream_id.split(CALL_SEPARATOR, 1)[0]
