"""A process that writes to a shared store: an eventsourcing application, or a chatledger conversation.

    python -c "from tests.adapters.eventsourcing.shared_writer import main; main()" es|aggregates|chat URL COUNT

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


def write_aggregates(url: str, count: int) -> list[str]:
    """Save ``count`` new aggregates one by one, each its own insert (a writer racing others)."""
    app = Application[UUID](env={"PERSISTENCE_MODULE": "chatledger.adapters.eventsourcing", "CHATLEDGER_URL": url})
    ids = []
    for _ in range(count):
        aggregate = Aggregate()
        app.save(aggregate)
        ids.append(str(aggregate.id))
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
    write = {"es": write_es, "aggregates": write_aggregates, "chat": write_chat}[kind]
    written = write(target, n)
    print(json.dumps(written))
