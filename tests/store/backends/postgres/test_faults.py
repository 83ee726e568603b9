"""Faults on PostgreSQL: dropped connections, lost commit replies, a server restart mid-run.

No event is lost or duplicated: a failure before anything was sent is retried on a fresh
connection, a lost COMMIT is settled by asking the server, and everything else surfaces as
BackendUnavailable with the log unchanged.
"""

from __future__ import annotations

import threading
import time
import uuid
from typing import Any

import psycopg
import pytest

from chatledger.store import BackendUnavailable, MessageAppended, open_store
from chatledger.store.handle import Draft, Store

from ....conftest import with_search_path
from .helpers import DroppingProxy, PrivateServer


def _terminate(base_url: str, app: str) -> int:
    with psycopg.connect(base_url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = %s", (app,)
        ).fetchall()
    return len(rows)


def _contents(store: Store, conv: str) -> list[str]:
    return [m["content"] for m in store.messages(conv)]


def test_terminated_pool_connections_are_replaced_transparently(postgres_url: str) -> None:
    """After every pooled connection is killed, the next append and read succeed on fresh ones."""
    app = f"cl_kill_{uuid.uuid4().hex[:8]}"
    store = open_store(f"{postgres_url}&application_name={app}", pool_min=3, pool_max=3)
    try:
        conv = store.start_conversation()
        store.append(conv, [{"role": "user", "content": "before"}])
        assert _terminate(postgres_url, app) == 3
        store.append(conv, [{"role": "user", "content": "after"}])
        assert _terminate(postgres_url, app) >= 1
        assert _contents(store, conv) == ["before", "after"]
        assert len(store.read_all()) == 3
    finally:
        store.close()


def test_connection_killed_inside_a_transaction_writes_nothing(postgres_url: str) -> None:
    """A connection killed mid-transaction gives BackendUnavailable; the retried append lands once."""
    app = f"cl_kill_{uuid.uuid4().hex[:8]}"
    store = open_store(f"{postgres_url}&application_name={app}", pool_min=1, pool_max=2)
    try:
        conv = store.start_conversation()
        msg = [{"role": "user", "content": "once"}]
        with pytest.raises(BackendUnavailable), store.transaction() as w:
            w.head(conv)
            _terminate(postgres_url, app)
            w.append(conv, [_draft("m1", "once")])
        assert _contents(store, conv) == []
        store.append(conv, msg, message_ids=["m1"])
        store.append(conv, msg, message_ids=["m1"])
        assert _contents(store, conv) == ["once"]
    finally:
        store.close()


def test_lost_commit_reply_is_settled_as_committed(proxied: tuple[Store, DroppingProxy]) -> None:
    """The server commits but its reply is lost: the append reports success and the event is stored once."""
    store, proxy = proxied
    conv = store.start_conversation()
    with store.transaction() as w:
        w.append(conv, [_draft("m1", "landed")])
        proxy.arm("reply")
    assert _contents(store, conv) == ["landed"]
    store.append(conv, [{"role": "user", "content": "landed"}], message_ids=["m1"])
    assert _contents(store, conv) == ["landed"]
    assert len(store.read_all()) == 2


def test_lost_commit_request_is_reported_and_nothing_written(proxied: tuple[Store, DroppingProxy]) -> None:
    """COMMIT never reaches the server: BackendUnavailable, nothing stored; the retry stores it once."""
    store, proxy = proxied
    conv = store.start_conversation()
    with pytest.raises(BackendUnavailable, match="nothing was written"), store.transaction() as w:
        w.append(conv, [_draft("m1", "retried")])
        proxy.arm("request")
    assert _contents(store, conv) == []
    store.append(conv, [{"role": "user", "content": "retried"}], message_ids=["m1"])
    assert _contents(store, conv) == ["retried"]


def _draft(mid: str, text: str) -> Any:
    return Draft(MessageAppended, {"message_id": mid, "message": {"role": "user", "content": text}}, key=mid)


def test_server_restart_mid_run_loses_and_duplicates_nothing() -> None:
    """A writer and a tailing reader ride out a crash-restart of the server; every message lands once
    and the reader sees every event exactly once."""
    server = PrivateServer()
    try:
        with psycopg.connect(server.url, autocommit=True) as conn:
            conn.execute("CREATE SCHEMA chat")
        url = with_search_path(server.url, "chat")
        writer = open_store(url, pool_min=1, pool_max=2, timeout=2, read_wait=1)
        reader = open_store(url, pool_min=1, pool_max=2, timeout=2, read_wait=1)
        conv = writer.start_conversation("c")
        total, seen, errors = 300, [], []
        written = threading.Event()
        done = threading.Event()

        def write() -> None:
            try:
                for i in range(total):
                    while True:
                        try:
                            writer.append(conv, [{"role": "user", "content": f"m{i}"}], message_ids=[f"m{i}"])
                            break
                        except BackendUnavailable:
                            time.sleep(0.05)
                    if i == 100:
                        written.set()
            except BaseException as exc:  # reported below
                errors.append(exc)
            finally:
                written.set()
                done.set()

        def read() -> None:
            after = 0
            while True:
                finished = done.is_set()
                try:
                    page = reader.read_all(after=after, limit=50)
                except BackendUnavailable:
                    time.sleep(0.05)
                    continue
                seen.extend(page)
                if page:
                    after = page[-1].position
                elif finished:
                    return

        threads = [threading.Thread(target=write), threading.Thread(target=read)]
        for t in threads:
            t.start()
        assert written.wait(30)
        server.stop("immediate")
        time.sleep(0.3)
        server.start()
        for t in threads:
            t.join(60)
        assert not errors
        assert _contents(writer, conv) == [f"m{i}" for i in range(total)]
        ids = [e.event_id for e in seen]
        assert len(ids) == len(set(ids)) == total + 1
        assert ids == [e.event_id for e in reader.read_all()]
        writer.close()
        reader.close()
    finally:
        server.close()
