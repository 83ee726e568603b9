"""Failover of a PostgreSQL log: the primary is killed mid-write and its streaming standby promoted.

The primary replicates synchronously (``synchronous_standby_names``, ``synchronous_commit =
remote_apply``): an append is acknowledged, and visible to readers on the primary, only once the
standby has applied it. Writer processes append (lone statements, and transactions that hold their
position while others commit after it); meanwhile a follower that keeps only the highest position
it has seen, a durable subscription and the projections read the log. Then the standby stops
applying WAL (``pg_wal_replay_pause``), so the commits it receives wait on the primary,
unacknowledged and invisible, and the primary is killed (``pg_ctl -m immediate stop``): those
appends are in doubt, and present after promotion. The standby (made with ``pg_basebackup -R``, on
its own port) is promoted (``pg_ctl promote``) and the store opened on it; the follower's store,
opened with a libpq failover URL naming both servers (``target_session_attrs=read-write``), is not
reopened: it reconnects to the promoted server by itself.
"""

from __future__ import annotations

import multiprocessing as mp
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg

from chatledger.projections import ProjectionRunner, conversation_index
from chatledger.store import BackendUnavailable, Draft, Event, MessageAppended, Store, open_store

from ..conftest import with_search_path
from ..store.backends.postgres.helpers import PrivateServer, chat_url, wait_until

WRITERS = 3
PRIMARY = {
    "wal_level": "replica",
    "max_wal_senders": "4",
    "synchronous_standby_names": "standby1",
    "synchronous_commit": "remote_apply",
}
_SYNC = "SELECT sync_state FROM pg_stat_replication WHERE application_name = 'standby1'"
# Enough commits wait for the standby to apply them, and the standby has received all of them.
_IN_DOUBT = (
    "SELECT (SELECT count(*) FROM pg_stat_activity WHERE wait_event = 'SyncRep') >= %s AND (SELECT flush_lsn "
    ">= pg_current_wal_flush_lsn() FROM pg_stat_replication WHERE application_name = 'standby1')"
)


def failover_writer(url: str, worker: int, acks: str, started: Any, count: int = 100_000) -> None:
    """Append ``count`` messages, to an own conversation and to "shared", until the server is gone.

    Every fourth append is a transaction that holds its position for a moment (other writers
    commit after it meanwhile). Each acknowledged event's id and position go to ``acks`` as soon
    as its append returns; an append that ends in BackendUnavailable was not acknowledged.
    """
    store = open_store(url, pool_min=1, pool_max=2, timeout=2)
    conv = store.start_conversation(f"w{worker}")
    started.set()
    with open(acks, "a") as out:
        try:
            for i in range(count):
                mid = f"w{worker}-{i}"
                target = "shared" if i % 3 == 2 else conv
                if i % 4 == 0:
                    with store.transaction() as w:
                        payload = {"message_id": mid, "message": {"role": "user", "content": mid}}
                        events = w.append(target, [Draft(MessageAppended, payload, key=mid)])
                        time.sleep(0.01)  # the position is drawn; other writers commit after it meanwhile
                else:
                    events = list(store.append(target, [{"role": "user", "content": mid}], message_ids=[mid]))
                out.writelines(f"{e.event_id} {e.position}\n" for e in events)
                out.flush()
        except BackendUnavailable:
            pass  # the server went away: this append was not acknowledged
    store.close()


def _acknowledged(paths: list[Path]) -> dict[str, int]:
    acked: dict[str, int] = {}
    for path in paths:
        for line in path.read_text().splitlines():
            event_id, position = line.split()
            acked[event_id] = int(position)
    return acked


class _Reader(threading.Thread):
    """Runs ``step`` until told to stop or the server goes away (BackendUnavailable); keeps any other error."""

    def __init__(self, step: Callable[[], object]) -> None:
        super().__init__(daemon=True)
        self.step, self.stop = step, threading.Event()
        self.error: Exception | None = None

    def run(self) -> None:
        try:
            while not self.stop.is_set():
                self.step()
                time.sleep(0.01)
        except BackendUnavailable:
            pass
        except Exception as exc:
            self.error = exc


class _Follower:
    """A consumer that keeps only the highest position it has seen and asks for what comes after it."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.seen: list[tuple[str, int]] = []
        self.highest = 0

    def step(self) -> int:
        page = self.store.read_all(after=self.highest, limit=50)
        self.seen += [(e.event_id, e.position) for e in page]
        if page:
            self.highest = page[-1].position
        return len(page)

    def step_through_outage(self) -> int:
        """A step, retried while the store has no server to talk to (it is still reconnecting)."""
        deadline = time.monotonic() + 30
        while True:
            try:
                return self.step()
            except BackendUnavailable:
                if time.monotonic() > deadline:
                    raise


def test_a_promoted_synchronous_standby_keeps_the_order_and_every_consumer_resumes(tmp_path: Path) -> None:
    """After the primary is killed with appends in doubt and its synchronous standby promoted, every
    acknowledged event is in read_all at the position its append returned; the follower's events are
    exactly the log up to its highest position P, and the follower, continuing from P on its
    reconnected store while writers append to the promoted server, reads every later event once; new
    events come after all old ones; the subscription delivers exactly the events after its stored
    position; and the projections resume and hold every event once."""
    primary = PrivateServer(PRIMARY)
    standby: PrivateServer | None = None
    try:
        standby = primary.standby("standby1", {"hot_standby": "on"})
        watch = psycopg.connect(primary.url, autocommit=True)
        assert wait_until(lambda: watch.execute(_SYNC).fetchone() == ("sync",)), "the standby never became synchronous"
        watch.execute("CREATE SCHEMA chat")
        store = open_store(chat_url(primary), read_wait=1, timeout=2)
        store.start_conversation("shared")
        both = f"postgresql://postgres@127.0.0.1:{primary.port},127.0.0.1:{standby.port}/postgres"
        follower = _Follower(open_store(with_search_path(f"{both}?target_session_attrs=read-write", "chat"), timeout=2))
        delivered: list[Event] = []
        subscription = store.subscribe("follower", delivered.append, batch=20)
        runner = ProjectionRunner(store, batch_size=40)
        readers = [_Reader(follower.step), _Reader(subscription.run_once), _Reader(runner.catch_up)]
        for reader in readers:
            reader.start()

        ctx = mp.get_context("spawn")
        started = [ctx.Event() for _ in range(WRITERS)]
        acks = [tmp_path / f"acks-{n}" for n in range(WRITERS)]
        procs = [
            ctx.Process(target=failover_writer, args=(chat_url(primary), n, str(acks[n]), started[n]))
            for n in range(WRITERS)
        ]
        for p in procs:
            p.start()
        assert wait_until(lambda: all(s.is_set() for s in started), 30), "the writers did not start"
        assert wait_until(lambda: len(_acknowledged(acks)) >= 150 and len(follower.seen) >= 75, 30)
        # The standby stops applying WAL: commits it has received wait for it, unacknowledged and
        # invisible on the primary. Killed now, they are in doubt, and present after promotion.
        with psycopg.connect(standby.url, autocommit=True) as conn:
            conn.execute("SELECT pg_wal_replay_pause()")
        assert wait_until(lambda: watch.execute(_IN_DOUBT, (WRITERS,)).fetchone() == (True,), 10)
        watch.close()
        primary.stop("immediate")
        for p in procs:
            p.join(30)
        for reader in readers:
            reader.stop.set()
            reader.join(30)
        assert [p.exitcode for p in procs] == [0] * WRITERS
        assert [r.error for r in readers] == [None] * len(readers)
        store.close()

        standby.promote()
        promoted = open_store(chat_url(standby), read_wait=1)
        log = promoted.read_all()
        stored = {e.event_id: e.position for e in log}
        positions = [e.position for e in log]
        assert positions == sorted(set(positions))
        acked = _acknowledged(acks)
        assert [i for i in acked if i not in stored] == [], "acknowledged appends were lost"
        assert {i: pos for i, pos in acked.items() if stored[i] != pos} == {}, "acknowledged events moved"
        in_doubt = [e for e in log if isinstance(e, MessageAppended) and e.event_id not in acked]
        assert in_doubt, "no append was in doubt at the failover: the fault was not injected"
        at = follower.highest
        assert follower.seen == [(e.event_id, e.position) for e in log if e.position <= at]

        # New appends on the promoted server, while the follower continues from its position P.
        again = [tmp_path / f"acks-after-{n}" for n in range(2)]
        writers = [
            threading.Thread(
                target=failover_writer, args=(chat_url(standby), WRITERS + n, str(again[n]), threading.Event(), 20)
            )
            for n in range(2)
        ]
        for w in writers:
            w.start()
        while any(w.is_alive() for w in writers):
            if not follower.step_through_outage():
                time.sleep(0.01)
        while follower.step():
            pass
        follower.store.close()
        final = promoted.read_all()
        assert follower.seen == [(e.event_id, e.position) for e in final], "the follower missed or repeated events"
        # Hashes cover positions and each conversation records its streams: the promoted log verifies whole.
        report = promoted.verify()
        assert report.ok and report.unpositioned == 0, [p.describe() for p in report.problems]
        fresh = _acknowledged(again)
        assert len(fresh) == 40 and min(fresh.values()) > positions[-1], "a new event came before an old one"

        after: list[Event] = []
        resumed = promoted.subscribe("follower", after.append, worker_id=subscription.worker_id)
        state = resumed.state()
        assert state is not None
        resumed.run_once()
        assert [e.event_id for e in after] == [e.event_id for e in final if e.position > state.position]
        before = [e.event_id for e in delivered if e.position <= state.position]
        assert before == [e.event_id for e in final if e.position <= state.position]
        assert len(delivered) - len(before) <= 1, "only the event whose position was not stored comes again"

        resumed_runner = ProjectionRunner(promoted, batch_size=40)
        resumed_runner.catch_up()
        assert {(s.position, s.events) for s in resumed_runner.states()} == {(final[-1].position, len(final))}
        messages = Counter(e.conversation_id for e in final if isinstance(e, MessageAppended))
        index = {entry.conversation_id: entry.messages for entry in conversation_index(promoted, catch_up=False)}
        assert index == {conv: messages[conv] for conv in index} and set(messages) <= set(index)
        promoted.close()
    finally:
        primary.close()
        if standby is not None:
            standby.close()
