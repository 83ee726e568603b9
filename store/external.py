"""Events written into the log by other event-sourcing frameworks, through an adapter.

An adapter that lets another framework keep its events in chatledger (the
eventsourcing persistence module, :mod:`chatledger.adapters.eventsourcing`)
stores them as these types, so that every reader of the log (verify,
subscriptions, projections, the CLI) can decode them without importing the
framework. They live in streams of their own kinds, never ``conversation``: the
conversation listing, index and search pass them over.
"""

from __future__ import annotations

from typing import ClassVar, Literal

from chatledger.store.events import Event, register_event

__all__ = ["DomainEventRecorded", "PositionTracked"]


@register_event
class DomainEventRecorded(Event):
    """A framework's stored domain event: its originator, its version there, its topic and its state.

    ``state`` is the framework's serialized state as text: UTF-8 when it decodes as
    such (the usual JSON), else base64 (compressed or encrypted by the framework),
    as ``encoding`` says.
    """

    TYPE: ClassVar[str] = "domain_event.recorded"

    originator_id: str
    originator_version: int
    topic: str
    state: str
    encoding: Literal["utf-8", "base64"] = "utf-8"


@register_event
class PositionTracked(Event):
    """A consumer processed an upstream log up to ``position`` (recorded with what it wrote for it)."""

    TYPE: ClassVar[str] = "position.tracked"

    name: str
    position: int
