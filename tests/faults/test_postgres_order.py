"""The PostgreSQL global order under concurrent writer processes, one of them SIGKILLed.

Writers append as lone statements and inside transactions that hold their position for a
moment before committing (so positions commit out of order); one writer is killed in the
middle of its work. A reader that keeps only the highest position it has seen must still
read every event once, with positions only increasing.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import time
from typing import Any

from chatledger.store import MessageAppended, open_store
from chatledger.store.handle import Draft

WRITERS, EACH = 4, 60


def order_writer(url: str, worker: int, started: Any) -> None:
    """Append EACH messages to an own conversation, every third one in a transaction held open briefly."""
    store = open_store(url, pool_min=1, pool_max=2)
    conv = store.start_conversation(f"w{worker}")
    started.set()
    for i in range(EACH):
        mid = f"w{worker}-{i}"
        if i % 3 == 0:
            with store.transaction() as w:
                payload = {"message_id": mid, "message": {"role": "user", "content": mid}}
                w.append(conv, [Draft(MessageAppended, payload, key=mid)])
                time.sleep(0.02)  # the position is drawn; others commit after it meanwhile
        else:
            store.append(conv, [{"role": "user", "content": mid}], message_ids=[mid])
    store.close()


def test_a_highest_position_reader_misses_nothing_while_writers_race_and_one_is_killed(postgres_url: str) -> None:
    """Four writer processes, one SIGKILLed mid-way: a reader asking only for what comes after the
    highest position it has seen reads every stored event exactly once, positions strictly increasing,
    and every event's hash covers the position it holds."""
    reader = open_store(postgres_url, read_wait=5)
    ctx = mp.get_context("spawn")
    started = [ctx.Event() for _ in range(WRITERS)]
    procs = [ctx.Process(target=order_writer, args=(postgres_url, n, started[n])) for n in range(WRITERS)]
    for p in procs:
        p.start()
    seen: list[int] = []
    ids: list[str] = []
    highest, killed = 0, False
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        running = any(p.is_alive() for p in procs)
        page = reader.read_all(after=highest, limit=25)
        seen += [e.position for e in page]
        ids += [e.event_id for e in page]
        if page:
            highest = max(highest, page[-1].position)
        if not killed and all(s.is_set() for s in started) and len(seen) >= WRITERS * EACH // 3:
            os.kill(procs[0].pid or 0, signal.SIGKILL)
            killed = True
        if not running and not page:
            break
    for p in procs:
        p.join(30)
    assert killed
    assert [p.exitcode for p in procs[1:]] == [0] * (WRITERS - 1)
    final = reader.read_all()
    assert seen == sorted(set(seen)), "a position was read lower than one already read, or twice"
    assert ids == [e.event_id for e in final], f"the reader missed {len(final) - len(ids)} events"
    assert len(final) >= (WRITERS - 1) * (EACH + 1)
    # Every hash covers its position, including those finished in SQL by racing one-statement appends.
    report = reader.verify()
    assert report.ok and report.unpositioned == 0, [p.describe() for p in report.problems[:3]]
    reader.close()
