"""pg_upgrade of a PostgreSQL log into a new cluster (15 to 15: the only server binaries installed here).

pg_upgrade accepts the same major version: it moves the data files (copied, or hard-linked) into a
cluster made by a fresh initdb and rebuilds the catalog there from a schema-only dump; the sequence
that draws positions travels as a data file. Before the upgrade the log has a gap (a rolled-back
append) and its consumers stand at different positions: a follower that keeps only the highest
position it has seen part-way, a durable subscription and the projections at the end.
"""

from __future__ import annotations

import contextlib
from collections import Counter

import pytest

from chatledger.projections import ProjectionRunner, conversation_index
from chatledger.store import Draft, Event, MessageAppended, open_store

from ..store.backends.postgres.helpers import PrivateServer, chat_log, chat_url


@pytest.mark.parametrize("files", ["copied", "linked"])
def test_an_upgraded_log_keeps_its_order_and_its_consumers_resume(files: str) -> None:
    """After pg_upgrade into a new cluster (data files copied, or hard-linked), read_all returns every
    event at its old position, new appends come after all of them, a follower continues from the
    highest position it had seen and reads every later event once, and the subscription and the
    projections process exactly the events they had not."""
    old = PrivateServer()
    new: PrivateServer | None = None
    try:
        store = chat_log(old)
        with contextlib.suppress(RuntimeError), store.transaction() as w:
            payload = {"message_id": "gone", "message": {"role": "user", "content": "rolled back"}}
            w.append("c0", [Draft(MessageAppended, payload, key="gone")])
            raise RuntimeError("roll back: the position drawn becomes a gap")
        store.append("c1", [{"role": "user", "content": "after the gap"}])
        followed = store.read_all(limit=7)
        at = followed[-1].position
        delivered: list[Event] = []
        assert store.subscribe("follower", delivered.append).run_once() == 16
        assert ProjectionRunner(store).catch_up() == 16
        before = store.read_all()
        positions = [e.position for e in before]
        assert positions[-1] > len(before), "the rolled-back append left no gap"
        store.close()

        new = PrivateServer(start=False)
        old.upgrade_into(new, link=files == "linked")
        upgraded = open_store(chat_url(new), read_wait=1)
        assert [(e.event_id, e.position) for e in upgraded.read_all()] == [(e.event_id, e.position) for e in before]
        assert upgraded.last_position() == positions[-1]
        added = upgraded.append("c2", [{"role": "user", "content": "c2 after"}])
        conv = upgraded.start_conversation("c3", messages=[{"role": "user", "content": "c3 after"}])
        after = upgraded.read_all(after=positions[-1])
        assert [e.conversation_id for e in after] == ["c2", conv, conv]
        assert after[0].event_id == added[0].event_id

        rest: list[Event] = []
        while page := upgraded.read_all(after=at if not rest else rest[-1].position, limit=5):
            rest += page
        assert [e.event_id for e in followed + rest] == [e.event_id for e in upgraded.read_all()]

        delivered.clear()
        assert upgraded.subscribe("follower", delivered.append).run_once() == 3
        assert [e.event_id for e in delivered] == [e.event_id for e in after]
        runner = ProjectionRunner(upgraded)
        assert runner.catch_up() == 3
        final = upgraded.read_all()
        assert {(s.position, s.events) for s in runner.states()} == {(final[-1].position, len(final))}
        messages = Counter(e.conversation_id for e in final if isinstance(e, MessageAppended))
        assert {entry.conversation_id: entry.messages for entry in conversation_index(upgraded, catch_up=False)} == {
            c: messages[c] for c in ("c0", "c1", "c2", conv)
        }
        # Hashes cover positions and each conversation records its streams: the upgraded log verifies whole.
        report = upgraded.verify()
        assert report.ok and report.unpositioned == 0, [p.describe() for p in report.problems]
        upgraded.close()
    finally:
        old.close()
        if new is not None:
            new.close()
