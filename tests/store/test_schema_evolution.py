"""Old stored events are upcast to the current schema on read; type names are stable strings."""

from __future__ import annotations

from typing import Any, ClassVar

from chatledger.store import Draft, Event, open_store
from chatledger.store.events import register_event


class _GreetingV1(Event):
    TYPE: ClassVar[str] = "test.greeting"
    SCHEMA_VERSION: ClassVar[int] = 1
    text: str


@register_event
class Greeting(Event):
    """Version 2 split ``text`` into ``words``."""

    TYPE: ClassVar[str] = "test.greeting"
    SCHEMA_VERSION: ClassVar[int] = 2
    words: list[str]

    @staticmethod
    def upcast_v1(payload: dict[str, Any]) -> dict[str, Any]:
        return {"words": payload["text"].split()}


def test_old_events_are_upcast_on_read() -> None:
    """An event stored at schema version 1 reads back as version 2 through its upcaster."""
    store = open_store("memory://")
    conv = store.start_conversation()
    with store.transaction() as w:
        w.append(conv, [Draft(_GreetingV1, {"text": "hello old world"})])
        w.append(conv, [Draft(Greeting, {"words": ["new"]})])
    events = store.events(conv)
    assert isinstance(events[1], Greeting) and events[1].words == ["hello", "old", "world"]
    assert isinstance(events[2], Greeting) and events[2].words == ["new"]
    assert [r.schema_version for r in store.recorder.read_stream(conv)] == [1, 1, 2]
