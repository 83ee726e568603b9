"""Reading the PostgreSQL global log on a hot standby while a position is in flight on the primary.

A private primary streams to a hot standby made by ``pg_basebackup -R``. On the primary a
transaction draws a position and stays open while a later append commits, and later an append
is rolled back after drawing its position, so the log the standby replays has a gap that a
transaction on the primary still holds, then one that will never be filled. A standby lists no
transaction of the primary in ``pg_stat_activity`` (and cannot know them: a writer draws its
position before its first WAL record), so a store opened on it cannot tell the two apart.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import pytest

from chatledger.store import BackendUnavailable, Draft, Event, MessageAppended, Store, open_store

from ..store.backends.postgres.helpers import PrivateServer, chat_log, chat_url, wait_until

PRIMARY = {"wal_level": "replica", "max_wal_senders": "4"}


def _message(mid: str) -> list[Draft]:
    return [Draft(MessageAppended, {"message_id": mid, "message": {"role": "user", "content": mid}}, key=mid)]


def _positions(events: list[Event]) -> list[int]:
    return [e.position for e in events]


def _refused(read: Callable[[], object]) -> str:
    """The message of the BackendUnavailable that ``read`` raises, which must name the primary."""
    with pytest.raises(BackendUnavailable) as caught:
        read()
    message = str(caught.value)
    assert "primary" in message and "target_session_attrs=read-write" in message, message
    return message


def _replayed(replica: Store, primary: Store, conversation_id: str) -> None:
    assert wait_until(lambda: replica.version(conversation_id) == primary.version(conversation_id), 30), (
        "the standby did not replay the primary's append"
    )


def test_a_standby_never_passes_a_gap_and_reads_past_it_once_promoted() -> None:
    """On a hot standby, a global-log read that would have to pass a position held by a transaction
    in flight on the primary raises BackendUnavailable naming the primary (and
    target_session_attrs=read-write) instead of returning the later event; a durable subscription
    run there delivers nothing and stays active at its position; reads that pass no gap,
    per-stream reads and last_position (the end of the gap-free run) keep working there. Once that transaction
    commits and the standby replays it, the standby reads both events in order. A rolled-back
    append's gap is refused on the standby every time, even after a store on the primary has read
    past it, and once the standby is promoted the same store reads past it."""
    primary = PrivateServer(PRIMARY)
    standby: PrivateServer | None = None
    try:
        standby = primary.standby("standby1", {"hot_standby": "on"})
        store = chat_log(primary)  # 15 events at positions 1..15
        delivered: list[Event] = []
        assert store.subscribe("follower", delivered.append).run_once() == 15

        # A transaction on the primary draws position 16 and stays open while 17 commits.
        with contextlib.ExitStack() as held:
            writer = held.enter_context(store.transaction())
            writer.append("c0", _message("held"))
            other = open_store(chat_url(primary))
            later = other.append("c1", [{"role": "user", "content": "later"}])
            other.close()
            assert _positions(later) == [17]
            replica = open_store(chat_url(standby), read_wait=1)
            _replayed(replica, store, "c1")

            assert replica.events("c1")[-1].event_id == later[0].event_id, "per-stream reads work on a standby"
            assert "position 17" in _refused(lambda: replica.read_all(after=15))
            _refused(replica.read_all)
            _refused(lambda: list(replica.iter_all(batch=10)))
            assert _positions(replica.read_all(limit=15)) == list(range(1, 16)), "a gap-free run is read"
            assert _positions(replica.read_all(after=10, limit=5)) == list(range(11, 16))
            assert replica.last_position() == 15
            on_standby: list[Event] = []
            with pytest.raises(BackendUnavailable):  # its tracking writes, which a standby refuses
                replica.subscribe("follower", on_standby.append).run_once()
            assert on_standby == []
            state = store.subscribe("follower", delivered.append).state()
            assert state is not None and (state.status, state.position) == ("active", 15)
        _replayed(replica, store, "c0")
        both = replica.read_all(after=15)
        assert [(e.position, e.event_id) for e in both] == [(16, both[0].event_id), (17, later[0].event_id)]
        assert replica.last_position() == 17

        # A rolled-back append leaves position 18 empty for good; 19 commits after it.
        with contextlib.suppress(RuntimeError), store.transaction() as w:
            w.append("c2", _message("gone"))
            raise RuntimeError("roll back: the position drawn becomes a gap")
        after_gap = store.append("c2", [{"role": "user", "content": "after the gap"}])
        assert _positions(after_gap) == [19]
        _replayed(replica, store, "c2")
        _refused(lambda: replica.read_all(after=17))
        assert _positions(store.read_all(after=17)) == [19], "the primary passes the ended transaction's gap"
        _refused(lambda: replica.read_all(after=17))
        _refused(lambda: replica.read_all(after=17))
        assert replica.last_position() == 17
        assert store.subscribe("follower", delivered.append).run_once() == 3

        standby.promote()
        assert _positions(replica.read_all(after=17)) == [19], "the promoted server's store passes the gap"
        assert _positions(replica.read_all()) == [*range(1, 18), 19]
        assert replica.last_position() == 19
        replica.close()
        store.close()
    finally:
        primary.close()
        if standby is not None:
            standby.close()
