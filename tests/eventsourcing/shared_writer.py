"""A process that writes to a shared store: an eventsourcing application, or a chatledger conversation.

    python -c "from tests.eventsourcing.shared_writer import main; main()" es|chat URL COUNT

It prints the ids it wrote (aggregate ids, or the conversation id) as JSON.
"""

from __future__ import annotations

import json
import os
import sys
from uuid import UUID

from eventsourcing.application import Application
from eventsourcing.domain import Aggregate, event


class Counter(Aggregate):
    """An aggregate with a value that moves by events."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.value = 0

    @event("Moved")
    def move(self, by: int) -> None:
        self.value += by


class Counters(Application[UUID]):
    """The application whose events share the store with conversations."""

    is_snapshotting_enabled = True


def write_es(url: str, count: int) -> list[str]:
    os.environ.update({"PERSISTENCE_MODULE": "chatledger.adapters.eventsourcing", "CHATLEDGER_URL": url})
    app = Counters()
    ids = []
    for i in range(count):
        counter = Counter(f"c{i}")
        for step in range(3):
            counter.move(by=step + 1)
        app.save(counter)
        if i % 2 == 0:
            app.take_snapshot(counter.id)
        ids.append(str(counter.id))
    app.close()
    return ids


def write_chat(url: str, count: int) -> list[str]:
    from chatledger.store import open_store

    store = open_store(url)
    conv = store.start_conversation(metadata={"user": "ada"})
    for i in range(count):
        store.append(conv, [{"role": "user", "content": f"question {i} about ledgers"}])
        store.append(conv, [{"role": "assistant", "content": f"answer {i}"}])
    store.close()
    return [conv]


def main() -> None:
    """Write as the arguments say; the classes are imported from this module, never ``__main__``,
    so that their topics resolve in every process."""
    kind, target, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    written = write_es(target, n) if kind == "es" else write_chat(target, n)
    print(json.dumps(written))
