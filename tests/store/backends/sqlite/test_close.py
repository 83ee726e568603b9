"""Closing a SQLite store releases every thread's connection and refuses later calls, without
closing a connection under a thread that is in the middle of a call (that crashes the process: see
tests/faults/test_sqlite_close_under_use.py)."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from chatledger.store import BackendUnavailable, Draft, MessageAppended, open_store

from ....support.files import HAS_PROC, open_files

pytestmark = pytest.mark.skipif(not HAS_PROC, reason="open files are counted in /proc")


def test_close_releases_the_connections_of_idle_threads_and_later_calls_say_the_store_is_closed(
    tmp_path: Path,
) -> None:
    """Threads of a pool that used the store and still run hold no file once it is closed (a backup may copy
    it), and each later call, in them or in the closing thread, raises BackendUnavailable saying so."""
    path = tmp_path / "chat.db"
    store = open_store(f"sqlite:///{path}")
    conv = store.start_conversation("c1", messages=[{"role": "user", "content": "hi"}])
    with ThreadPoolExecutor(3) as pool:
        assert all(len(h) == 1 for h in pool.map(lambda _: store.history(conv), range(30)))
        assert open_files(path) > 1
        store.close()
        assert open_files(path) == 0
        assert not Path(f"{path}-wal").exists()
        for call in (lambda: store.history(conv), lambda: store.append(conv, [{"role": "user", "content": "x"}])):
            with pytest.raises(BackendUnavailable, match="is closed"):
                pool.submit(call).result()
            with pytest.raises(BackendUnavailable, match="is closed"):
                call()
    assert open_files(path) == 0


def test_a_transaction_open_when_another_thread_closes_the_store_commits_and_then_closes(tmp_path: Path) -> None:
    """A write transaction in flight when another thread closes the store goes on and commits on its
    connection, which its thread closes as the transaction ends; that thread's next call is refused."""
    path = tmp_path / "chat.db"
    store = open_store(f"sqlite:///{path}")
    conv = store.start_conversation("c1")
    inside, closed = threading.Event(), threading.Event()
    after: list[Exception] = []

    def writer() -> None:
        with store.transaction() as w:
            w.append(conv, [Draft(MessageAppended, {"message_id": "m1", "message": {"role": "user", "content": "a"}})])
            inside.set()
            closed.wait(10)
            w.append(conv, [Draft(MessageAppended, {"message_id": "m2", "message": {"role": "user", "content": "b"}})])
        try:
            store.history(conv)
        except BackendUnavailable as exc:
            after.append(exc)

    thread = threading.Thread(target=writer)
    thread.start()
    assert inside.wait(10)
    store.close()
    assert open_files(path) > 0  # the writer's connection, still in its transaction
    closed.set()
    thread.join(10)
    assert len(after) == 1 and "is closed" in str(after[0])
    assert open_files(path) == 0
    with open_store(f"sqlite:///{path}") as reopened:
        assert [m["content"] for m in reopened.history(conv)] == ["a", "b"]


def test_the_connections_of_threads_that_ended_are_closed_while_the_store_stays_open(tmp_path: Path) -> None:
    """A thread started per request leaves no open file behind once it has ended: the next thread
    to open a connection closes those of ended threads, so a long-running server does not run out
    of file descriptors."""
    path = tmp_path / "chat.db"
    store = open_store(f"sqlite:///{path}")
    conv = store.start_conversation("c1", messages=[{"role": "user", "content": "hi"}])
    per_connection = open_files(path)
    for _ in range(20):
        thread = threading.Thread(target=store.history, args=(conv,))
        thread.start()
        thread.join()
    assert open_files(path) <= 2 * per_connection  # this thread's and the last thread's
    store.close()
    assert open_files(path) == 0
