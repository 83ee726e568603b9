"""The SQLite file layout: files of the first layout are migrated in place, times and ids read back exactly."""

from __future__ import annotations

import json
import random
import shutil
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from chatledger.store import BackendUnavailable, Executor, open_store
from chatledger.store.backends.sqlite.schema import LAYOUT_VERSION, iso_sql, stored_time
from chatledger.store.integrity.verify import heads

FIXTURES = Path(__file__).resolve().parents[3] / "fixtures"


def _layout1_copy(tmp_path: Path) -> Path:
    path = tmp_path / "old.db"
    shutil.copy(FIXTURES / "layout1.db", path)
    return path


def test_a_layout_1_file_is_migrated_in_place_and_keeps_every_guarantee(tmp_path: Path) -> None:
    """A file written by chatledger 0.1 opens: same histories, ids and chain hashes; writes go on."""
    path = _layout1_copy(tmp_path)
    expected = json.loads((FIXTURES / "layout1.db.json").read_text())
    store = open_store(f"sqlite:///{path}")
    acme = open_store(f"sqlite:///{path}", tenant="acme")
    try:
        mine = expected["default"]
        assert store.history("conv-1") == mine["history"]
        events = store.events("conv-1")
        assert [e.event_id for e in events] == mine["events"]
        assert [e.message_id for e in events if hasattr(e, "message_id")] == mine["message_ids"]
        # Heads cover every stream now; the fixture kept the conversations' (and rule 1 still verifies).
        assert [list(h) for h in heads(store) if "\x1f" not in h[0]] == mine["heads"]
        assert acme.history("conv-acme") == expected["acme"]["history"]
        assert [list(h) for h in heads(acme)] == expected["acme"]["heads"]
        assert store.verify().ok and acme.verify().ok
        assert (store.verify().legacy, acme.verify().legacy) == (1, 1)
        assert sqlite3.connect(path).execute("PRAGMA user_version").fetchone()[0] == LAYOUT_VERSION
        # An old message id sent again is recognised; the finished tool call is not run again.
        old_id = mine["message_ids"][0]
        store.append("conv-1", [{"role": "system", "content": "You are helpful."}], message_ids=[old_id])
        assert store.version("conv-1") == len(events)
        runs: list[str] = []
        call = {"id": "call_1", "type": "function", "function": {"name": "weather", "arguments": '{"city": "Rome"}'}}
        Executor(store, {"weather": lambda city: runs.append(city) or "rain"}).execute(
            "conv-1", {"role": "assistant", "content": None, "tool_calls": [call]}
        )
        assert runs == []
        store.append("conv-1", [{"role": "user", "content": "after the migration"}])
        assert store.history("conv-1")[-1] == {"role": "user", "content": "after the migration"}
        assert store.verify().ok
    finally:
        store.close()
        acme.close()


def test_a_file_of_a_newer_layout_is_refused_untouched(tmp_path: Path) -> None:
    """A file from a newer chatledger is not opened (nor changed) by an older one."""
    path = tmp_path / "new.db"
    open_store(f"sqlite:///{path}").close()
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version = {LAYOUT_VERSION + 1}")
    conn.close()
    before = path.read_bytes()
    with pytest.raises(BackendUnavailable, match="newer chatledger"):
        open_store(f"sqlite:///{path}")
    assert path.read_bytes() == before


def test_stored_times_read_back_as_the_exact_text_written(tmp_path: Path) -> None:
    """Times are stored as integers and turned back into the same ISO text by the database."""
    rng = random.Random(7)
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    values = [0, 1, 999_999, 1_000_000, 253_402_300_799_999_999]
    values += [rng.randrange(0, 253_402_300_799_999_999) for _ in range(2000)]
    values += [v - v % 1_000_000 for v in values[:200]]
    texts = [(epoch + timedelta(microseconds=v)).isoformat() for v in values]
    conn = sqlite3.connect(":memory:")
    conn.execute("CREATE TABLE t (recorded_at INTEGER)")
    conn.executemany("INSERT INTO t VALUES (?)", [(stored_time(t),) for t in texts])
    assert [stored_time(t) for t in texts] == values
    assert [row[0] for row in conn.execute(f"SELECT {iso_sql('recorded_at')} FROM t ORDER BY rowid")] == texts


def test_times_without_the_compact_form_are_kept_as_text() -> None:
    """A time that is not canonical UTC text is stored as given, never reinterpreted."""
    for text in ("2026-11-22T02:08:38.000000+00:00", "2026-11-22T03:08:38+01:00", "2026-11-22 02:08:38+00:00"):
        assert stored_time(text) == text


def test_rows_are_compact(tmp_path: Path) -> None:
    """Ids and hashes are bytes, times integers, types codes; a message's id is not repeated in its payload."""
    store = open_store(f"sqlite:///{tmp_path / 'c.db'}")
    conv = store.start_conversation()
    store.append(conv, [{"role": "user", "content": "hi"}], message_ids=["client-1"])
    store.close()
    row = (
        sqlite3.connect(tmp_path / "c.db")
        .execute(
            "SELECT typeof(event_id), length(event_id), typeof(hash), length(hash), typeof(recorded_at), "
            "typeof(type), key, payload FROM events ORDER BY position DESC LIMIT 1"
        )
        .fetchone()
    )
    assert row == (
        "blob",
        16,
        "blob",
        32,
        "integer",
        "integer",
        "client-1",
        '{"message":{"role":"user","content":"hi"}}',
    )


def test_a_stream_cannot_be_moved_or_renamed_in_the_file(tmp_path: Path) -> None:
    """Only a tool call's status and lease may change in a streams row; its identity and owner never."""
    path = tmp_path / "s.db"
    store = open_store(f"sqlite:///{path}")
    conv = store.start_conversation(metadata={"user": "u1"})
    store.close()
    conn = sqlite3.connect(path, isolation_level=None)
    for change in ("tenant = 'mallory'", "stream_id = 'other'", "conversation_id = 'other'", "metadata = '{}'"):
        with pytest.raises(sqlite3.IntegrityError, match="only change their tool-call status"):
            conn.execute(f"UPDATE streams SET {change} WHERE stream_id = ?", (conv,))
    conn.execute("UPDATE streams SET status = 'running', lease_until = 1.5 WHERE stream_id = ?", (conv,))
    conn.close()
    with open_store(f"sqlite:///{path}") as store:
        assert store.conversation(conv).metadata == {"user": "u1"}


def test_a_layout_2_file_gains_the_record_of_streams_and_keeps_verifying(tmp_path: Path) -> None:
    """A layout 2 file (no record of each conversation's streams) opens as layout 3: its conversations
    verify and are counted untracked; a conversation started after it records its streams."""
    path = tmp_path / "two.db"
    with open_store(f"sqlite:///{path}") as store:
        store.start_conversation("old", messages=[{"role": "user", "content": "before"}])
        call = {"id": "c1", "type": "function", "function": {"name": "weather", "arguments": '{"city": "Rome"}'}}
        Executor(store, {"weather": lambda city: "rain"}).execute(
            "old", {"role": "assistant", "content": None, "tool_calls": [call]}
        )
    conn = sqlite3.connect(path)
    conn.execute("ALTER TABLE streams DROP COLUMN substreams")
    conn.execute("PRAGMA user_version = 2")
    conn.close()
    with open_store(f"sqlite:///{path}") as store:
        assert sqlite3.connect(path).execute("PRAGMA user_version").fetchone()[0] == LAYOUT_VERSION == 3
        report = store.verify()
        assert report.ok and report.untracked == 1
        store.start_conversation("new", messages=[{"role": "user", "content": "after"}])
        call = {"id": "c2", "type": "function", "function": {"name": "weather", "arguments": '{"city": "Oslo"}'}}
        Executor(store, {"weather": lambda city: "sun"}).execute(
            "new", {"role": "assistant", "content": None, "tool_calls": [call]}
        )
        report = store.verify()
        assert report.ok and report.untracked == 1
        assert store.recorder.get_head("new").substreams != store.recorder.get_head("old").substreams
