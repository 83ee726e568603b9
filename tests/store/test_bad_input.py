"""Bad input gets a typed error naming the field, and the SQLite file's contents stay byte-for-byte the same."""

from __future__ import annotations

import hashlib
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from chatledger.store import ConcurrencyError, NotFoundError, Store, ValidationError, open_store

GOOD_CALL = {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}


def dump(path: Path) -> str:
    """A digest of every row in the database, read through a separate connection."""
    conn = sqlite3.connect(path)
    try:
        text = "\n".join(conn.iterdump())
    finally:
        conn.close()
    return hashlib.sha256(text.encode()).hexdigest()


@pytest.fixture
def db(tmp_path: Path) -> tuple[Store, str, Path]:
    path = tmp_path / "chat.db"
    store = open_store(f"sqlite:///{path}", max_event_bytes=10_000)
    conv = store.start_conversation(metadata={"user": "u1"})
    store.append(conv, [{"role": "user", "content": "hi"}])
    return store, conv, path


BAD: list[tuple[Any, str]] = [
    ({"role": "robot", "content": "x"}, "messages[0].role"),
    ({"content": "no role"}, "messages[0].role"),
    ("just a string", "messages[0]"),
    ({"role": "tool", "content": "x"}, "messages[0].tool_call_id"),
    ({"role": "tool", "content": "x", "tool_call_id": 5}, "messages[0].tool_call_id"),
    ({"role": "assistant", "tool_calls": {"id": "c1"}}, "messages[0].tool_calls"),
    ({"role": "assistant", "tool_calls": ["c1"]}, "messages[0].tool_calls[0]"),
    (
        {"role": "assistant", "tool_calls": [{"type": "function", "function": {"name": "f", "arguments": "{}"}}]},
        "messages[0].tool_calls[0].id",
    ),
    ({"role": "assistant", "tool_calls": [{"id": "c1", "type": "function"}]}, "messages[0].tool_calls[0].function"),
    (
        {"role": "assistant", "tool_calls": [{"id": "c1", "function": {"name": "f", "arguments": None}}]},
        "messages[0].tool_calls[0].function.arguments",
    ),
    (
        {"role": "assistant", "tool_calls": [{"id": "c1", "function": {"arguments": "{}"}}]},
        "messages[0].tool_calls[0].function.name",
    ),
    (
        {"role": "assistant", "tool_calls": [{"id": "c1", "function": {"name": "f", "arguments": {"a": 1}}}]},
        "messages[0].tool_calls[0].function.arguments",
    ),
    ({"role": "user", "tool_calls": [GOOD_CALL]}, "messages[0].tool_calls"),
    ({"role": "user", "content": 42}, "messages[0].content"),
    ({"role": "user", "content": "x" * 20_000}, "messages[0]"),
    ({"role": "user", "content": "bad \ud800 surrogate"}, "messages[0]"),
    ({"role": "user", "content": "x", "extra": float("nan")}, "messages[0]"),
    ({"role": "user", "content": "x", "extra": {1, 2}}, "messages[0]"),
]


def _containing_itself() -> dict[str, Any]:
    message: dict[str, Any] = {"role": "user", "content": "x", "parts": []}
    message["parts"].append(message)
    return message


def _nested(depth: int) -> dict[str, Any]:
    value: list[Any] = []
    for _ in range(depth):
        value = [value]
    return {"role": "user", "content": "x", "extra": value}


BAD += [(_containing_itself(), "messages[0]"), (_nested(100_000), "messages[0]")]


@pytest.mark.parametrize(("message", "field"), BAD)
def test_bad_message_is_rejected_naming_the_field(db: tuple[Store, str, Path], message: Any, field: str) -> None:
    """Each malformed message raises ValidationError for its field and leaves the file unchanged."""
    store, conv, path = db
    before = dump(path)
    with pytest.raises(ValidationError) as err:
        store.append(conv, [{"role": "user", "content": "fine"}, message][1:])
    assert err.value.field == field
    assert dump(path) == before


def test_unparseable_arguments_string_is_stored_verbatim(db: tuple[Store, str, Path]) -> None:
    """Arguments that are a string but not valid JSON are kept exactly as the model produced them."""
    store, conv, _ = db
    call = {
        "role": "assistant",
        "content": None,
        "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": '{"a": 1'}}],
    }
    store.append(conv, [call])
    assert store.history(conv, allow_pending=True)[-1] == call


def test_stale_version_and_unknown_id_leave_file_unchanged(db: tuple[Store, str, Path]) -> None:
    """A stale expected_version and an unknown conversation both write nothing."""
    store, conv, path = db
    before = dump(path)
    with pytest.raises(ConcurrencyError):
        store.append(conv, [{"role": "user", "content": "x"}], expected_version=1)
    with pytest.raises(NotFoundError):
        store.append("missing", [{"role": "user", "content": "x"}])
    with pytest.raises(ValidationError):
        store.append(conv, [{"role": "user", "content": "x"}], message_ids=["a\x00b"])
    with pytest.raises(ValidationError):
        store.start_conversation("", metadata={})
    with pytest.raises(ValidationError):
        store.start_conversation("x", metadata={"deep": _nested(5000)})
    assert dump(path) == before


def test_oversized_limit_is_configurable(tmp_path: Path) -> None:
    """The event size limit comes from open_store and applies to every message."""
    store = open_store(f"sqlite:///{tmp_path / 'big.db'}", max_event_bytes=1_000_000)
    conv = store.start_conversation()
    store.append(conv, [{"role": "user", "content": "x" * 500_000}])
    with pytest.raises(ValidationError, match="over the event size limit"):
        store.append(conv, [{"role": "user", "content": "x" * 1_000_001}])


def _nested(depth: int) -> Any:
    value: Any = "leaf"
    for _ in range(depth):
        value = {"a": value}
    return value
