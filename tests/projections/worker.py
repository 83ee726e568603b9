"""Subprocess entry points for the multi-process projection and subscription tests.

``python -m tests.projections.worker COMMAND URL [ARGS]``:

* ``run URL BATCH`` - catch the counting projection up, print the events this process applied;
* ``rebuild-search URL BATCH DELAY`` - rebuild the search projection, sleeping DELAY s after each batch;
* ``follow URL NAME OUT`` - run a durable subscription forever, writing each event's position to OUT.
"""

from __future__ import annotations

import sys
import threading
import time
from typing import ClassVar

from chatledger.projections import MessageSearch, ProjectionRunner, Table, Tables
from chatledger.store import Event, open_store

COUNTS = Table("test_counts", {"conversation_id": "str", "events": "int"}, pk=("conversation_id",))
SEEN = Table("test_seen", {"position": "int", "conversation_id": "str"}, pk=("position",))


class Counting:
    """Counts events per conversation and logs each position once (a duplicate breaks the key)."""

    name: ClassVar[str] = "counting"
    version: ClassVar[int] = 1
    tables: ClassVar[tuple[Table, ...]] = (COUNTS, SEEN)
    types: ClassVar[frozenset[str] | None] = None
    delay: float = 0.0

    def apply(self, tables: Tables, event: Event) -> None:
        if self.delay:
            time.sleep(self.delay)
        row = tables.get(COUNTS.name, event.conversation_id) or {
            "conversation_id": event.conversation_id,
            "events": 0,
        }
        row["events"] += 1
        tables.put(COUNTS.name, row)
        tables.insert(SEEN.name, {"position": event.position, "conversation_id": event.conversation_id})


def main(argv: list[str]) -> int:
    command, url = argv[0], argv[1]
    store = open_store(url)
    if command == "run":
        projection = Counting()
        projection.delay = float(argv[3]) if len(argv) > 3 else 0.0
        print(ProjectionRunner(store, [projection], batch_size=int(argv[2])).catch_up(), flush=True)
        return 0
    if command == "rebuild-search":
        delay = float(argv[3])
        runner = ProjectionRunner(store, [MessageSearch()], batch_size=int(argv[2]))
        print(runner.rebuild(progress=lambda done: time.sleep(delay)), flush=True)
        return 0
    if command == "follow":
        out = open(argv[3], "a", encoding="utf-8")  # noqa: SIM115

        def handler(event: Event) -> None:
            out.write(f"{event.position}\n")
            out.flush()

        store.subscribe(argv[2], handler, poll_interval=0.05).run_forever(threading.Event())
        return 0
    raise SystemExit(f"unknown command {command}")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
