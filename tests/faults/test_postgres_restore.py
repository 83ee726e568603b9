"""Backup and restore of a PostgreSQL log into a fresh server, on both sides of the xid gap.

A restored server numbers its transactions from its own counter, which may be far below or far
above the old server's. Nothing in the log may depend on it: every restored event is readable
in its old order and positions, new events come after them, and a follower (a durable
subscription) and the projections restored with the dump resume where they stood.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from chatledger.projections import ProjectionRunner
from chatledger.store import Event, open_store

from ..store.backends.postgres.helpers import PrivateServer, chat_log, chat_url


@pytest.mark.parametrize("ahead", ["old server ahead", "new server ahead"])
def test_a_restored_log_keeps_its_order_and_its_consumers_resume(ahead: str, tmp_path: Path) -> None:
    """After pg_dump and pg_restore into a fresh server whose transaction counter is far below (or far
    above) the old one's, read_all returns every event with its position, new events come after them,
    and the restored subscription and projections process exactly the new events."""
    old, new = PrivateServer(), PrivateServer()
    try:
        (old if ahead == "old server ahead" else new).advance_xids()
        store = chat_log(old)
        delivered: list[Event] = []
        assert store.subscribe("follower", delivered.append).run_once() == 15
        assert ProjectionRunner(store).catch_up() >= 15
        before = store.read_all()
        store.close()
        dump = tmp_path / "chat.dump"
        old.dump(dump)
        new.restore(dump)

        restored = open_store(chat_url(new), read_wait=1)
        assert [(e.event_id, e.position) for e in restored.read_all()] == [(e.event_id, e.position) for e in before]
        assert restored.last_position() == before[-1].position
        restored.append("c1", [{"role": "user", "content": "c1 after"}])
        conv = restored.start_conversation("c3", messages=[{"role": "user", "content": "c3 after"}])
        after = restored.read_all(after=before[-1].position)
        assert [e.conversation_id for e in after] == ["c1", conv, conv]
        positions = [e.position for e in restored.read_all()]
        assert positions == sorted(positions) and len(set(positions)) == len(positions)
        delivered.clear()
        assert restored.subscribe("follower", delivered.append).run_once() == 3
        assert [e.event_id for e in delivered] == [e.event_id for e in after]
        assert ProjectionRunner(restored).catch_up() == 3
        assert "c3 after" in [m["content"] for m in restored.messages(conv)]
        # Hashes cover positions and each conversation records its streams: the restored log verifies whole.
        report = restored.verify()
        assert report.ok and report.unpositioned == 0, [p.describe() for p in report.problems]
        restored.close()
    finally:
        old.close()
        new.close()
