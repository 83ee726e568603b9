"""The rules every append obeys, once for every backend.

A :class:`Writer` wraps one backend write transaction (see
:mod:`chatledger.store.backends.recorder`) and appends events to one or more streams in
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
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, NamedTuple

from chatledger.store.appended import SPECS, built, read_back, spec_of
from chatledger.store.backends.recorder import CALL_SEPARATOR, NewRecord, Record, StreamHead, WriteTransaction
from chatledger.store.errors import (
    ConcurrencyError,
    ConflictError,
    EncryptedPayloadError,
    ErasedError,
    IntegrityError,
    NotFoundError,
    ValidationError,
)
from chatledger.store.events import Event, event_class
from chatledger.store.integrity.chain import (
    GENESIS,
    NO_SUBSTREAMS,
    chain_hash,
    inner_hash,
    is_record,
    with_position,
    with_substream,
)

if TYPE_CHECKING:
    from chatledger.store.handle import Store

__all__ = [
    "ENCRYPTED",
    "ERASED",
    "FORBIDDEN_IN_IDS",
    "MAX_ID_LENGTH",
    "UNCHANGED",
    "Draft",
    "Writer",
    "check_count",
    "check_id",
    "event_id_for",
    "new_id",
    "now_iso",
    "version_in_id",
]

MAX_ID_LENGTH = 512
UNCHANGED: Any = object()


class Draft(NamedTuple):
    """An event to append: its class, its payload and an optional idempotency key.

    A named tuple: every appended message builds one, and a tuple is several
    times cheaper to build than a frozen dataclass.
    """

    cls: type[Event]
    payload: dict[str, Any]
    key: str | None = None
    label: str | None = None


def now_iso() -> str:
    """The current UTC time in the form every event stores."""
    return datetime.now(UTC).isoformat()


FORBIDDEN_IN_IDS = re.compile("[\x00-\x1f\x7f\ud800-\udfff]")


def new_id() -> str:
    """A fresh random id (128 bits, hex)."""
    return os.urandom(16).hex()


_VERSION_IN_ID = 1 << 32
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)
_OWN_ID = re.compile("[0-9a-f]{32}")


def event_id_for(version: int) -> str:
    """A new event's id: 96 random bits, then its version in the stream (32 hex digits in all).

    The version makes an event findable by its id through the ``(stream, version)``
    index, which is how an id-less message (whose id is its event id) is found again
    when a client sends that id back, without an index of event ids.
    """
    if version >= _VERSION_IN_ID:
        return new_id()
    return (os.urandom(12) + version.to_bytes(4)).hex()


_second: tuple[int, tuple[int, int, int, int, int, int], str] = (-1, (1970, 1, 1, 0, 0, 0), "")


def _now() -> tuple[datetime, str, int]:
    """The current UTC time as an event carries it, as its ISO text (what the chain hashes) and in µs.

    The text is ``datetime.isoformat()``'s, which alone costs more than twice the
    rest: the date and time up to the second are worked out once a second.
    """
    global _second
    micros = time.time_ns() // 1000
    second, fraction = divmod(micros, 1_000_000)
    cached = _second
    if cached[0] != second:
        base = datetime.fromtimestamp(second, UTC)
        fields = (base.year, base.month, base.day, base.hour, base.minute, base.second)
        cached = _second = (second, fields, base.isoformat()[:-6])
    at = datetime(*cached[1], fraction, UTC)
    return at, f"{cached[2]}.{fraction:06d}+00:00" if fraction else f"{cached[2]}+00:00", micros


def version_in_id(event_id: str) -> int | None:
    """The version :func:`event_id_for` put in an id, or None when it cannot be one of ours."""
    if _OWN_ID.fullmatch(event_id) is None:
        return None
    return int(event_id[24:], 16) or None


def check_id(value: Any, what: str) -> str:
    """Validate an id: a non-empty string of at most 512 characters with no control characters."""
    if type(value) is str and value.isprintable() and 0 < len(value) <= MAX_ID_LENGTH:
        return value  # printable: no control or surrogate character (the common case, without the regex)
    if not isinstance(value, str) or not value:
        raise ValidationError(what, "must be a non-empty string")
    if len(value) > MAX_ID_LENGTH:
        raise ValidationError(what, f"is {len(value)} characters, more than {MAX_ID_LENGTH}")
    bad = FORBIDDEN_IN_IDS.search(value)
    if bad is not None:
        raise ValidationError(what, f"contains the control or surrogate character {bad.group()!r}")
    return value


MAX_COUNT = (1 << 63) - 1


def check_count(value: Any, what: str, low: int = 0, *, required: bool = False) -> None:
    """Validate a version, position or limit argument: an int from ``low`` to 2**63 - 1, or None
    unless ``required``.

    Raises:
        ValidationError: naming ``what``; a bool, a float or a number no backend column can hold.
    """
    if value is None:
        if required:
            raise ValidationError(what, "must be an integer, got None")
        return
    if type(value) is not int and (isinstance(value, bool) or not isinstance(value, int)):
        raise ValidationError(what, f"must be an integer, got {type(value).__name__}")
    if not low <= value <= MAX_COUNT:
        raise ValidationError(what, f"must be between {low} and 2**63 - 1, got {value}")


class Writer:
    """The appends of one atomic transaction, possibly across several streams."""

    def __init__(self, store: Store, tx: WriteTransaction) -> None:
        self._store = store
        self._tx = tx
        self._heads: dict[str, StreamHead] = {}

    @property
    def store(self) -> Store:
        """The store this transaction writes to (its tenant, redactor and codec)."""
        return self._store

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

    def last_event(self, stream_id: str) -> Event | None:
        """A stream's newest event as of this transaction (its head is locked), or None when it has none.

        What a caller that appends on a condition of the stream's last event reads (a tracked
        position that may only move forward), inside the transaction that appends.
        """
        head = self.head(stream_id)
        if head is None or head.version == 0:
            return None
        found = self._tx.records_at(stream_id, [head.version])
        return self._store.decode(found[-1]) if found else None

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
            NotFoundError: a tool-call or side stream's conversation does not exist for this tenant.
        """
        encrypts = bool(getattr(self._store.codec, "encrypts", False))
        substreams = None
        if stream_id != conversation_id:
            # A tool-call or side stream belongs to an existing conversation of this tenant, whose head records it.
            owner = self._tx.head(conversation_id)
            if owner is None or owner.tenant != self._store.tenant:
                raise NotFoundError(f"conversation {conversation_id!r} does not exist")
            _check_sealed(owner, encrypts)
            if owner.substreams is not None:
                if not is_record(owner.substreams):
                    raise IntegrityError(
                        f"conversation {conversation_id!r}: the record its head keeps of its streams was edited "
                        "(it is not a record): run verify; no stream is added to it"
                    )
                # The conversation's head records the streams that belong to it: one deleted whole shows.
                mark = with_substream(owner.substreams, stream_id, self._store.signing_key)
                owner = owner._replace(substreams=mark)
                self._tx.update_head(owner)
                self._heads[conversation_id] = owner
        elif kind == "conversation":
            substreams = NO_SUBSTREAMS
            if status is None and encrypts:
                status = ENCRYPTED  # in clear on the head: a keyless writer refuses to add plaintext
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
            substreams,
        )
        self._tx.create_stream(head)
        self._heads[stream_id] = head
        return head

    def mark(self, conversation_id: str, status: str) -> None:
        """Set a conversation head's status (:data:`ERASED` when it is erased), in this transaction.

        Raises:
            NotFoundError: no such conversation for this tenant.
        """
        head = self.head(conversation_id)
        if head is None or head.kind != "conversation":
            raise NotFoundError(f"conversation {conversation_id!r} does not exist")
        if head.status != status:
            moved = head._replace(status=status)
            self._tx.update_head(moved)
            self._heads[conversation_id] = moved

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
        conv = head.conversation_id
        if head.status is not None and head.kind == "conversation":
            _check_sealed(head, bool(getattr(store.codec, "encrypts", False)))
        encode = store._encode_payload
        specs, stored, encoded, keys = [], [], [], []
        for draft in drafts:
            spec = SPECS.get(draft.cls) or spec_of(draft.cls)
            payload, field = draft.payload, spec.key_field
            if field is not None and field in payload and payload[field] in (draft.key, None):
                payload = {k: v for k, v in payload.items() if k != field}  # the key column holds it
            specs.append(spec)
            stored.append(payload)
            encoded.append(encode(conv, draft, payload))
            if draft.key is not None:
                keys.append(draft.key)
        results: list[Event | None] = []
        fresh: Sequence[int] = range(len(drafts))
        if keys:
            results = [None] * len(drafts)
            fresh = self._settle_keys(stream_id, conv, keys, drafts, encoded, results)
            if not fresh:
                return [r for r in results if r is not None]
        if expected_version is not None and expected_version != head.version:
            raise ConcurrencyError(conv, expected_version, head.version)
        version, prev, tenant, signing_key = head.version, head.head_hash, head.tenant, store.signing_key
        # Chain rule 2: a conversation's first event also covers the metadata its head row keeps in clear.
        metadata = (head.metadata or "") if version == 0 and head.kind == "conversation" else None
        # Chain rule 3: every event also covers its global position. A backend that learns it only as it
        # inserts (one event) is handed the inner hash and finishes it (chain.with_position) as it inserts.
        reserved = self._tx.positions(len(fresh))
        if reserved is None and len(fresh) != 1:
            raise RuntimeError("a backend may leave positions to the insert for one event only")
        at, recorded_at, recorded_us = _now()
        as_given = store.redactor is None
        new_records, events = [], []
        for n, i in enumerate(fresh):
            spec, key, (text, stored_text) = specs[i], drafts[i].key, encoded[i]
            version += 1
            event_id = event_id_for(version)
            if key is None and spec.key_field is not None and version >= _VERSION_IN_ID:
                key = event_id  # too far into the stream to be found by version: keep the id as a key
            type_name, schema_version = spec.type_name, spec.schema_version
            fields = (prev, stream_id, version, event_id, type_name, schema_version, key, recorded_at, tenant)
            if reserved is None:
                prev = inner_hash(*fields, stored_text, signing_key, metadata)
            else:
                prev = chain_hash(*fields, stored_text, signing_key, metadata, reserved[n])
            metadata = None
            new_records.append(
                NewRecord(
                    stream_id,
                    version,
                    conv,
                    tenant,
                    event_id,
                    type_name,
                    schema_version,
                    key,
                    recorded_at,
                    stored_text,
                    prev,
                    recorded_us,
                )
            )
            # The event is built before the write and gets its position after: what runs
            # after a durable commit runs on caches the commit's fsync left cold.
            values = {
                "event_id": event_id,
                "conversation_id": conv,
                "stream_id": stream_id,
                "version": version,
                "position": 0,
                "recorded_at": at,
                "tenant": tenant,
            }
            read_back(values, stored[i] if as_given else None, text)
            field = spec.key_field
            if field is not None and field not in values:
                values[field] = key if key is not None else event_id
            events.append(built(drafts[i].cls, spec, values))
        positions = self._tx.insert(new_records)
        if reserved is None:
            prev = with_position(prev, positions[-1])
        elif list(positions) != list(reserved):
            raise RuntimeError(f"the backend stored events at positions {positions}, not at {reserved} as it reserved")
        moved = StreamHead(
            stream_id,
            conv,
            tenant,
            head.kind,
            version,
            prev,
            head.created_at,
            recorded_at,
            head.status if status is UNCHANGED else status,
            head.lease_until if lease_until is UNCHANGED else lease_until,
            head.metadata,
            head.substreams,
        )
        for event, position in zip(events, positions, strict=True):
            # A frozen event learns its position in place: model_copy(update=...) cost ~2 µs per
            # event, ~8% of an append (checked by the equality test named in appended.built).
            event.__dict__["position"] = position
        self._tx.update_head(moved)
        self._heads[stream_id] = moved
        if not results:
            return events
        for i, event in zip(fresh, events, strict=True):
            results[i] = event
        return [r for r in results if r is not None]

    def _settle_keys(
        self,
        stream_id: str,
        conv: str,
        keys: list[str],
        drafts: Sequence[Draft],
        encoded: list[tuple[str, str]],
        results: list[Event | None],
    ) -> list[int]:
        """Which drafts are new: a stored key with equal content puts the stored event in ``results``.

        Raises:
            ConflictError: a key appears twice in the batch, or is stored with different content.
        """
        if len(set(keys)) != len(keys):
            raise ConflictError(f"the same id appears twice in one batch for {conv!r}")
        existing = self._stored_keys(stream_id, keys)
        if not existing:
            return list(range(len(drafts)))
        store = self._store
        fresh = []
        for i, draft in enumerate(drafts):
            old = existing.get(draft.key) if draft.key is not None else None
            if old is None:
                fresh.append(i)
                continue
            if old.type != draft.cls.TYPE or _without_key(draft.cls, store._payload_of(old), old) != json.loads(
                encoded[i][0]
            ):
                raise ConflictError(f"id {draft.key!r} in conversation {conv!r} was already used for different content")
            results[i] = store.decode(old)
        return fresh

    def _stored_keys(self, stream_id: str, keys: Sequence[str]) -> dict[str, Record]:
        """The stored records of ``keys``: by the key column, or, for an id-less message's id, by version."""
        found = self._tx.records_by_keys(stream_id, keys)
        versions = {}
        for key in keys:
            if key not in found:
                version = version_in_id(key)
                if version is not None:
                    versions[version] = key
        if versions:
            for rec in self._tx.records_at(stream_id, list(versions)):
                key = versions[rec.version]
                if rec.event_id == key and rec.key is None and event_class(rec.type).KEY_FIELD is not None:
                    found[key] = rec
        return found


def _without_key(cls: type[Event], payload: Any, record: Record) -> Any:
    """A stored payload in today's stored form (older versions kept the key field in it too)."""
    field = cls.KEY_FIELD
    if field is not None and isinstance(payload, dict) and payload.get(field) in (record.key, record.event_id):
        return {k: v for k, v in payload.items() if k != field}
    return payload


ENCRYPTED = "encrypted"
"""A conversation head's status once its events are encrypted (set at creation by a keyed writer)."""
ERASED = "erased"
"""A conversation head's status once it was erased."""


def _check_sealed(head: StreamHead, encrypts: bool) -> None:
    """Refuse a write to an erased conversation, and a keyless write to an encrypted one.

    Raises:
        ErasedError: the conversation was erased.
        EncryptedPayloadError: it is encrypted and this store has no master key.
    """
    if head.status == ERASED:
        raise ErasedError(head.conversation_id)
    if head.status == ENCRYPTED and not encrypts:
        raise EncryptedPayloadError(head.conversation_id, "writing to")


def _conversation_of(stream_id: str) -> str:
    return stream_id.split(CALL_SEPARATOR, 1)[0]
