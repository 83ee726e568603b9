"""A process that closes a SQLite store, or its read models, while its threads are still using it.

Usage: ``python -m tests.faults.closer store|views FOLDER ROUNDS``. It prints one JSON object: how
each thread's calls ended (``"ok"`` or the exception's class name), the messages of the errors,
and how many file descriptors on the database (and its ``-wal`` and ``-shm``) were still open once
the threads had ended (Linux: read from ``/proc/self/fd``). A crash (a segmentation fault) ends
the process with a signal instead.

- ``store``: each round opens the store (every other round encrypted, so that data keys are read
  and written too), starts four threads that append, read, write transactions and start
  conversations in a loop until a call fails (or one begun after the close went through), and
  closes the store from the main thread after a random 0-3 ms.
- ``views``: one store; four threads search, list conversations, read projection states and
  catch up; the main thread closes the read models ROUNDS times, a fraction of a millisecond apart.
"""

from __future__ import annotations

import itertools
import json
import random
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from chatledger.projections import ProjectionRunner, conversation_index, projection_states, search
from chatledger.projections.runner import read_models
from chatledger.store import Draft, MessageAppended, Store, open_store

from ..support.files import open_files

KEY = bytes(range(32))
Outcomes = Counter[str]


def _record(outcomes: Outcomes, errors: set[str], call: Callable[[], object]) -> bool:
    """Run ``call`` and count how it ended; True when it raised."""
    try:
        call()
    except Exception as exc:  # every kind is counted: the test decides which are allowed
        outcomes[type(exc).__name__] += 1
        errors.add(str(exc)[:200])
        return True
    outcomes["ok"] += 1
    return False


def _store_calls(store: Store, conv: str, worker: int) -> list[Callable[[], object]]:
    def transaction() -> None:
        with store.transaction() as w:
            for role in ("user", "assistant"):
                mid = uuid.uuid4().hex
                payload = {"message_id": mid, "message": {"role": role, "content": f"t{worker}"}}
                w.append(conv, [Draft(MessageAppended, payload, key=mid)])

    return [
        lambda: store.append(conv, [{"role": "user", "content": f"w{worker}"}]),
        lambda: store.history(conv),
        transaction,
        lambda: store.read_all(limit=50),
        lambda: store.start_conversation(messages=[{"role": "user", "content": "new"}]),
    ]


def close_stores(folder: Path, rounds: int) -> dict[str, object]:
    """Close a store ``rounds`` times while four threads use it; each thread stops at its first error."""
    outcomes: Outcomes = Counter()
    errors: set[str] = set()
    left_open = 0
    for round_ in range(rounds):
        path = folder / f"chat{round_}.db"
        store = open_store(f"sqlite:///{path}?synchronous=NORMAL", encryption=KEY if round_ % 2 else False)
        _close_store(store, outcomes, errors)
        left_open += open_files(path)
    return {"outcomes": dict(outcomes), "errors": sorted(errors), "left_open": left_open}


def _close_store(store: Store, outcomes: Outcomes, errors: set[str]) -> None:
    """Start four threads on ``store``, close it after 0-3 ms and wait for the threads to end."""
    conv = store.start_conversation(messages=[{"role": "user", "content": "hello"}])
    start, closed = threading.Barrier(5), threading.Event()

    def work(worker: int) -> None:
        calls = _store_calls(store, conv, worker)
        start.wait()
        for i in itertools.count():
            after_close = closed.is_set()
            if _record(outcomes, errors, calls[(worker + i) % len(calls)]) or after_close:
                return

    threads = [threading.Thread(target=work, args=(w,)) for w in range(4)]
    for t in threads:
        t.start()
    start.wait()
    time.sleep(random.uniform(0, 0.003))
    store.close()
    closed.set()
    for t in threads:
        t.join(30)


def close_views(folder: Path, rounds: int) -> dict[str, object]:
    """Close the read models ``rounds`` times while four threads query and project."""
    outcomes: Outcomes = Counter()
    errors: set[str] = set()
    store = open_store(f"sqlite:///{folder / 'chat.db'}?synchronous=NORMAL")
    for i in range(20):
        store.start_conversation(messages=[{"role": "user", "content": f"hello world {i} " * 20}])
    runner = ProjectionRunner(store)
    runner.catch_up()
    stop = threading.Event()

    def project() -> None:
        store.start_conversation(messages=[{"role": "user", "content": "hello again"}])
        runner.catch_up()

    calls: list[Callable[[], object]] = [
        lambda: search(store, "hello", limit=5, catch_up=False),
        lambda: conversation_index(store, limit=5, catch_up=False),
        lambda: projection_states(store),
        project,
    ]

    def work(worker: int) -> None:
        while not stop.is_set():
            _record(outcomes, errors, calls[worker])

    threads = [threading.Thread(target=work, args=(w,)) for w in range(len(calls))]
    for t in threads:
        t.start()
    models = read_models(store)
    for _ in range(rounds):
        time.sleep(random.uniform(0, 0.001))
        models.close()
    stop.set()
    for t in threads:
        t.join(30)
    models.close()
    left_open = open_files(folder / "chat.views.db")
    store.close()
    return {"outcomes": dict(outcomes), "errors": sorted(errors), "left_open": left_open}


if __name__ == "__main__":
    what, folder, rounds = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3])
    summary = (close_stores if what == "store" else close_views)(folder, rounds)
    print(json.dumps(summary))
