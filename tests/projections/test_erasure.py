"""A rebuild after erasing purges the erased plaintext from the SQLite read-model file."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from chatledger.projections import ProjectionRunner
from chatledger.projections.backends.sqlite import views_path
from chatledger.store import open_store
from chatledger.store.integrity.crypto import erase, generate_master_key


def test_rebuild_after_erasing_leaves_no_erased_text_in_the_views_file(tmp_path: Path) -> None:
    """The dropped tables' pages are zeroed on an erasable (encrypted) log, so the secret is gone."""
    path = tmp_path / "chat.db"
    store = open_store(f"sqlite:///{path}", encryption=generate_master_key())
    secret = "zqxsecretword" * 40
    for i in range(30):
        store.start_conversation(f"c{i}", messages=[{"role": "user", "content": f"{secret} {i}"}])
    runner = ProjectionRunner(store)
    runner.catch_up()
    views = Path(views_path(str(path)))
    checkpoint = "PRAGMA wal_checkpoint(TRUNCATE)"
    runner.models.close()  # type: ignore[attr-defined]
    with sqlite3.connect(views) as conn:
        conn.execute(checkpoint)
    assert secret.encode() in views.read_bytes()
    for i in range(30):
        erase(store, f"c{i}")
    runner.rebuild()
    runner.models.close()  # type: ignore[attr-defined]
    with sqlite3.connect(views) as conn:
        conn.execute(checkpoint)
    assert secret.encode() not in views.read_bytes()
    store.close()
