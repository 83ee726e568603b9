"""Immutable, versioned event schemas.

Every event carries an envelope (``event_id``, ``conversation_id``, the
``stream_id`` and ``version`` it occupies, a global ``position``, a UTC
``recorded_at`` and its ``tenant``) plus a payload specific to its type. The
payload is what is stored as JSON; the envelope is stored in columns.

Type names are stable strings (``"message.appended"``), never Python paths, so
classes can move without breaking stored events. A class that changes its
payload bumps ``SCHEMA_VERSION`` and adds an ``upcast_vN`` static method that
turns a version-N payload dict into version N+1; old events are upcast on read.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict

from chatledger.store.errors import ValidationError

__all__ = [
    "ConversationStarted",
    "ErasedEvent",
    "Event",
    "MessageAppended",
    "ModelResponseRecorded",
    "ToolCallClaimed",
    "ToolCallFailed",
    "ToolCallOutcomeUnknown",
    "ToolCallRequested",
    "ToolCallSucceeded",
    "event_class",
    "register_event",
]

_REGISTRY: dict[str, type[Event]] = {}


class Event(BaseModel):
    """Base of every stored event: the envelope common to all types."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    TYPE: ClassVar[str] = ""
    SCHEMA_VERSION: ClassVar[int] = 1
    KEY_FIELD: ClassVar[str | None] = None
    """A payload field that is the event's idempotency key: stored once, in the key column.

    When a draft has no key, the field takes the event's own ``event_id``.
    """

    event_id: str
    conversation_id: str
    stream_id: str
    version: int
    position: int
    recorded_at: datetime
    tenant: str

    @classmethod
    def payload_fields(cls) -> tuple[str, ...]:
        """The names of the fields stored in the JSON payload (everything but the envelope)."""
        return tuple(name for name in cls.model_fields if name not in Event.model_fields)

    def payload(self) -> dict[str, Any]:
        """This event's payload as a JSON-ready dict, in field order."""
        return {name: _jsonable(getattr(self, name)) for name in self.payload_fields()}

    @classmethod
    def upcast(cls, payload: dict[str, Any], stored_version: int) -> dict[str, Any]:
        """Bring a payload stored at ``stored_version`` up to ``SCHEMA_VERSION``."""
        for v in range(stored_version, cls.SCHEMA_VERSION):
            step: Callable[[dict[str, Any]], dict[str, Any]] = getattr(cls, f"upcast_v{v}")
            payload = step(payload)
        return payload


def _jsonable(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    return value


def register_event(cls: type[Event]) -> type[Event]:
    """Register an event class under its stable ``TYPE`` name (usable as a decorator)."""
    if not cls.TYPE:
        raise TypeError(f"{cls.__name__} needs a TYPE")
    existing = _REGISTRY.get(cls.TYPE)
    if existing is not None and existing is not cls:
        raise TypeError(f"event type {cls.TYPE!r} is already registered to {existing.__name__}")
    _REGISTRY[cls.TYPE] = cls
    return cls


def event_class(type_name: str) -> type[Event]:
    """The class registered for a stored type name."""
    try:
        return _REGISTRY[type_name]
    except KeyError:
        raise ValidationError("type", f"unknown event type {type_name!r}") from None


@register_event
class ConversationStarted(Event):
    """A conversation was created, with its metadata and, for a fork, where it came from."""

    TYPE: ClassVar[str] = "conversation.started"

    metadata: dict[str, Any] = {}
    forked_from: dict[str, Any] | None = None


@register_event
class MessageAppended(Event):
    """A chat message (OpenAI chat format, kept verbatim) was appended to a conversation.

    ``meta`` holds what an adapter knows beyond the chat format (the AutoGen
    message type and source, usage); it is never sent to a model.
    """

    TYPE: ClassVar[str] = "message.appended"
    SCHEMA_VERSION: ClassVar[int] = 2
    KEY_FIELD: ClassVar[str | None] = "message_id"

    message_id: str
    message: dict[str, Any]
    meta: dict[str, Any] | None = None

    @staticmethod
    def upcast_v1(payload: dict[str, Any]) -> dict[str, Any]:
        """Version 1 stored ``message_id`` in the payload too; version 2 only in the key column."""
        return payload


@register_event
class ToolCallRequested(Event):
    """The executor accepted a tool call from a final assembled assistant message."""

    TYPE: ClassVar[str] = "tool_call.requested"

    tool_call_id: str
    name: str
    arguments: str
    message_id: str | None = None
    idempotent: bool = False
    redacted: bool = False
    """The stored ``arguments`` are the redacted form of the model's: only a requester holding the model's
    own arguments can run the call (a worker refuses it rather than run the tool on redacted values)."""


@register_event
class ToolCallClaimed(Event):
    """A worker took the lease on a tool call; ``fencing_token`` orders competing holders."""

    TYPE: ClassVar[str] = "tool_call.claimed"

    tool_call_id: str
    worker_id: str
    lease_expires_at: datetime
    fencing_token: int
    attempt: int
    idempotency_key: str


@register_event
class ToolCallSucceeded(Event):
    """A tool call finished and its result was recorded; it is never run again."""

    TYPE: ClassVar[str] = "tool_call.succeeded"

    tool_call_id: str
    worker_id: str
    attempt: int
    result: str
    duration_ms: float


@register_event
class ToolCallFailed(Event):
    """A tool call raised (or was invalid); ``final`` means no further attempt will be made."""

    TYPE: ClassVar[str] = "tool_call.failed"

    tool_call_id: str
    worker_id: str
    attempt: int
    error: str
    final: bool
    duration_ms: float = 0.0


@register_event
class ToolCallOutcomeUnknown(Event):
    """A non-idempotent tool call's lease expired mid-run (or a turn was interrupted): not re-run."""

    TYPE: ClassVar[str] = "tool_call.outcome_unknown"

    tool_call_id: str
    attempt: int
    reason: str


@register_event
class ModelResponseRecorded(Event):
    """A model's final response, recorded under a request key so retries and replays reuse it."""

    TYPE: ClassVar[str] = "model.response_recorded"

    key: str
    response: dict[str, Any]


class ErasedEvent(Event):
    """An event of an erased conversation, as tenant-wide reads hand it out: its envelope, no payload.

    Never stored (and so not registered): :meth:`chatledger.store.Store.read_all`, ``iter_all``,
    subscriptions and the tool audit return it in place of an event whose data key was destroyed,
    so that one erasure never stops a reader of the whole log. ``erased_type`` is the stored type.
    """

    TYPE: ClassVar[str] = "erased"

    erased_type: str


def dumps(payload: dict[str, Any]) -> str:
    """Serialize a payload the one way chatledger stores it: compact JSON, unicode kept."""
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":"))
