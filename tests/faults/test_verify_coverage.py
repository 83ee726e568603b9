"""verify names edits to what belongs to a conversation beyond its own events: a tool call whose
record was deleted whole, edited conversation metadata, and events swapped in the global log, on
SQLite and PostgreSQL, as an attacker with SQL access makes them (SQLite's append-only triggers
dropped first)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytest

from chatledger.store import Executor, Store, open_store
from chatledger.store.backends.recorder import call_stream_id
from chatledger.store.integrity.verify import heads, verify
from tests.store.integrity.scenario import tamper_postgres, tamper_sqlite

CALL = call_stream_id("c1", "call-1")
_CALL_WHERE = "stream_id LIKE 'c1' || chr(31) || 'call' || chr(31) || 'call-1'"
_CALL_SID = "sid = (SELECT sid FROM streams WHERE stream_id = 'c1' || char(31) || 'call' || char(31) || 'call-1')"


def lookup(city: str) -> str:
    """A tool the executor runs."""
    return f"sunny in {city}"


def build(store: Store) -> None:
    """c1: a question, an assistant tool call run by the executor (its result appended), an answer."""
    store.start_conversation("c1", metadata={"owner": "alice"}, messages=[{"role": "user", "content": "weather?"}])
    call = {"id": "call-1", "type": "function", "function": {"name": "lookup", "arguments": '{"city": "Oslo"}'}}
    Executor(store, [lookup]).execute("c1", {"role": "assistant", "content": None, "tool_calls": [call]})
    store.append("c1", [{"role": "assistant", "content": "It is sunny in Oslo."}])
    store.start_conversation("c2", messages=[{"role": "user", "content": "leave me alone"}])


def _found(store: Store, kept: Sequence[tuple[str, str, int]] | None = None) -> list[Found]:
    return [(p.stream_id, p.kind, p.version) for p in verify(store, kept=kept).problems]


_METADATA = """UPDATE streams SET metadata = '{"owner":"mallory"}' WHERE stream_id = 'c1'"""
Found = tuple[str, str, int]
Edit = tuple[list[str], list[Found], list[Found]]
"""Statements, what verify names from the database alone, what it names against kept heads."""
GAP = ("#2", "removed", 1)
"""The call's stream number (c1 is 1, its call 2, c2 3), missing from the SQLite file."""
EMPTY = ("", "removed", 0)
"""Positions of the SQLite log that hold no event (the call's, with later events after them)."""
_C1_SID = "(SELECT sid FROM streams WHERE stream_id = 'c1')"
_C2_SID = "(SELECT sid FROM streams WHERE stream_id = 'c2')"
_SWAP_SQLITE = [
    f"CREATE TEMP TABLE swap AS SELECT (SELECT MAX(position) FROM events WHERE sid = {_C1_SID}) AS a, "
    f"(SELECT MIN(position) FROM events WHERE sid = {_C2_SID}) AS b",
    "UPDATE events SET position = -1 WHERE position = (SELECT a FROM swap)",
    "UPDATE events SET position = (SELECT a FROM swap) WHERE position = (SELECT b FROM swap)",
    "UPDATE events SET position = (SELECT b FROM swap) WHERE position = -1",
]
SWAPPED = [("c1", "changed", 5), ("c2", "changed", 1)]
"""c1's last event and c2's first, each still after the one before it in its own stream."""

SQLITE_EDITS: dict[str, Edit] = {
    # The stream is named, and the log's positions it held are empty (the conversation went on after it).
    "delete a tool call's events, streams row left": (
        [f"DELETE FROM events WHERE {_CALL_SID}"],
        [(CALL, "removed", 1), EMPTY],
        [(CALL, "removed", 1), EMPTY],
    ),
    # No row is left: the conversation's record of its streams names the call; the file also shows a
    # missing stream number and empty positions.
    "delete a tool call's events and its streams row": (
        [f"DELETE FROM events WHERE {_CALL_SID}", f"DELETE FROM streams WHERE {_CALL_SID}"],
        [(CALL, "removed", 1), GAP, EMPTY],
        [(CALL, "removed", 1), GAP, EMPTY],
    ),
    "edit the conversation's metadata": ([_METADATA], [("c1", "changed", 1)], [("c1", "changed", 1)]),
    # Every event's hash covers its global position (chain rule 3).
    "swap global positions across conversations": (_SWAP_SQLITE, SWAPPED, SWAPPED),
}
POSTGRES_EDITS: dict[str, Edit] = {
    "delete a tool call's events, head row left": (
        [f"DELETE FROM events WHERE {_CALL_WHERE}"],
        [(CALL, "removed", 1)],
        [(CALL, "removed", 1)],
    ),
    # Nothing of the call is left: the conversation's record of its streams names it.
    "delete a tool call's events and its head row": (
        [f"DELETE FROM events WHERE {_CALL_WHERE}", f"DELETE FROM streams WHERE {_CALL_WHERE}"],
        [(CALL, "removed", 1)],
        [(CALL, "removed", 1)],
    ),
    "edit the conversation's metadata": ([_METADATA], [("c1", "changed", 1)], [("c1", "changed", 1)]),
    # Lone appends (one statement) finish their hashes with the position in SQL; the rest hash it in Python.
    "swap global positions across conversations": (
        [
            "CREATE TEMP TABLE swap AS SELECT (SELECT max(position) FROM events WHERE stream_id = 'c1') AS a, "
            "(SELECT min(position) FROM events WHERE stream_id = 'c2') AS b",
            "UPDATE events SET position = -1 WHERE position = (SELECT a FROM swap)",
            "UPDATE events SET position = (SELECT a FROM swap) WHERE position = (SELECT b FROM swap)",
            "UPDATE events SET position = (SELECT b FROM swap) WHERE position = -1",
        ],
        SWAPPED,
        SWAPPED,
    ),
}


@pytest.mark.parametrize("edit", list(SQLITE_EDITS), ids=list(SQLITE_EDITS))
def test_sqlite_edits_beyond_the_conversations_events_are_named(tmp_path: Path, edit: str) -> None:
    """Each edit is named by verify from the file alone (a tool call deleted whole by its conversation's
    record of its streams, also as a missing stream number and empty positions; swapped positions by
    the chains of both streams), and likewise against kept heads."""
    statements, alone, found = SQLITE_EDITS[edit]
    path = str(tmp_path / "chat.db")
    with open_store(f"sqlite:///{path}") as store:
        build(store)
        kept = heads(store)
        assert verify(store).ok
        tamper_sqlite(path, statements)
        assert _found(store) == alone
        assert _found(store, kept) == found
        broken = {stream.split(chr(31))[0] for stream, _, _ in found if stream in ("c1", "c2", CALL)}
        for conversation in ("c1", "c2"):
            assert verify(store, conversation, kept=kept).ok == (conversation not in broken), conversation


@pytest.mark.parametrize("edit", list(POSTGRES_EDITS), ids=list(POSTGRES_EDITS))
def test_postgres_edits_beyond_the_conversations_events_are_named(postgres_url: str, edit: str) -> None:
    """Each edit is named by verify alone (a tool call deleted with its head row by its conversation's record
    of its streams; swapped positions by the chains of both streams), and likewise against kept heads."""
    pytest.importorskip("chatledger.store.backends.postgres.recorder")
    statements, alone, found = POSTGRES_EDITS[edit]
    with open_store(postgres_url) as store:
        build(store)
        kept = heads(store)
        assert verify(store).ok
        tamper_postgres(postgres_url, statements)
        assert _found(store) == alone
        assert _found(store, kept) == found
        broken = {stream.split(chr(31))[0] for stream, _, _ in found}
        for conversation in ("c1", "c2"):
            assert verify(store, conversation, kept=kept).ok == (conversation not in broken), conversation
