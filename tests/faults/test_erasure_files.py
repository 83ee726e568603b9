"""After erasure no file the store writes holds the erased key or plaintext (SQLite: db, -wal, -shm,
read-model files), or erasure says it is not yet certain; on PostgreSQL the key table's files hold
no copy of the key (no dead tuple survives)."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import pytest

from chatledger.projections import ProjectionRunner, search
from chatledger.store import open_store
from chatledger.store.errors import ErasedError, ErasureNotCertain
from chatledger.store.integrity.crypto import erase, purge

KEY = os.urandom(32)
SECRET = "zqxerasableword"


def _all_bytes(folder: Path) -> bytes:
    return b"".join(p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file())


def _wrapped(path: Path) -> list[bytes]:
    with sqlite3.connect(path) as conn:
        return [bytes(row[0]) for row in conn.execute("SELECT wrapped FROM data_keys WHERE wrapped IS NOT NULL")]


def test_sqlite_erasure_with_a_reader_is_reported_uncertain_until_purged(tmp_path: Path) -> None:
    """A reader's snapshot keeps the key in the -wal: erase says so; once it ends, purge removes every copy.

    The application's process keeps its store and projection runner open throughout; after
    the purge and a rebuild, neither the wrapped keys nor the erased text are in the bytes of
    any file next to the log (db, -wal, -shm, read-model file and its -wal).
    """
    path = tmp_path / "chat.db"
    store = open_store(f"sqlite:///{path}", encryption=KEY)
    for i in range(20):
        store.start_conversation(f"c{i}", messages=[{"role": "user", "content": f"{SECRET} {i} " * 30}])
    runner = ProjectionRunner(store)
    runner.catch_up()
    assert [h.conversation_id for h in search(store, SECRET, limit=1)]
    keys = _wrapped(path)
    assert len(keys) == 20 and all(k in _all_bytes(tmp_path) for k in keys)

    reader = sqlite3.connect(path, isolation_level=None)
    reader.execute("BEGIN")
    reader.execute("SELECT count(*) FROM data_keys").fetchone()  # holds a snapshot that sees the keys
    with pytest.raises(ErasureNotCertain, match="c0"):
        erase(store, "c0", wait=0.2)
    with pytest.raises(ErasedError):
        store.messages("c0")
    reader.execute("COMMIT")
    reader.close()
    purge(store)
    for i in range(1, 20):
        erase(store, f"c{i}")
    runner.rebuild()
    assert search(store, SECRET) == []
    found = _all_bytes(tmp_path)
    assert [k for k in keys if k in found] == []
    assert SECRET.encode() not in found
    store.close()


def test_postgres_erasure_leaves_no_dead_tuple_with_the_key(tmp_path: Path) -> None:
    """On a private server, after erase and a checkpoint, the key table's file does not hold the wrapped key."""
    from tests.store.backends.postgres.helpers import PrivateServer

    server = PrivateServer()
    try:
        import psycopg

        with open_store(server.url, encryption=KEY) as store:
            store.start_conversation("c1", messages=[{"role": "user", "content": "forget me"}])
            with psycopg.connect(server.url, autocommit=True) as conn:
                (wrapped,) = conn.execute("SELECT wrapped FROM data_keys").fetchone()  # type: ignore[misc]
                erase(store, "c1")
                conn.execute("CHECKPOINT")
                (relation,) = conn.execute("SELECT pg_relation_filepath('data_keys')").fetchone()  # type: ignore[misc]
            table_file = server.data / relation
            on_disk = b"".join(p.read_bytes() for p in table_file.parent.glob(table_file.name + "*"))
            assert bytes(wrapped) not in on_disk
    finally:
        server.close()
