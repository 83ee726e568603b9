"""Several writer processes on PostgreSQL while a reader tails the global log."""

from __future__ import annotations

import multiprocessing as mp
import time

from chatledger.store import MessageAppended, open_store

from .helpers import append_worker


def test_tailing_reader_sees_every_event_exactly_once(postgres_url: str) -> None:
    """Four processes append to their own and to one shared conversation; a reader tailing read_all
    sees every event exactly once, in the order a later full read returns."""
    writers, own, shared = 4, 60, 25
    store = open_store(postgres_url, read_wait=2)
    try:
        store.start_conversation("shared")
        ctx = mp.get_context("spawn")
        barrier = ctx.Barrier(writers)
        procs = [
            ctx.Process(target=append_worker, args=(postgres_url, w, own, shared, barrier)) for w in range(writers)
        ]
        for p in procs:
            p.start()
        seen, after = [], 0
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            finished = all(p.exitcode is not None for p in procs)
            page = store.read_all(after=after, limit=37)
            seen += page
            if page:
                after = page[-1].position
            elif finished:
                break
            else:
                time.sleep(0.01)
        assert [p.exitcode for p in procs] == [0] * writers
        expected = 1 + writers * (1 + own + shared)
        ids = [e.event_id for e in seen]
        assert len(ids) == len(set(ids)) == expected
        assert ids == [e.event_id for e in store.read_all()]
        contents = sorted(m["content"] for m in store.messages("shared"))
        assert contents == sorted(f"{w}-shared-{i}" for w in range(writers) for i in range(shared))
        for w in range(writers):
            mine = [
                e.message["content"] for e in seen if isinstance(e, MessageAppended) and e.conversation_id == f"w{w}"
            ]
            assert mine == [f"{w}-own-{i}" for i in range(own)]
    finally:
        store.close()
