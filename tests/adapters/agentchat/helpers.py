"""Shared pieces of the AgentChat adapter tests: tools that count their side effects in a SQLite file."""

from __future__ import annotations

import os
import sqlite3
import time
from pathlib import Path
from typing import Any

from chatledger.adapters.agentchat.context import model_view
from chatledger.store import Store
from chatledger.store.tools.executor import current_idempotency_key
from chatledger.store.tools.registry import tool


def counter_path() -> Path:
    """The side-effect file of this test (set by the fixture through the environment)."""
    return Path(os.environ["CHATLEDGER_TEST_EFFECTS"])


def record_effect(name: str, key: str | None = None) -> None:
    """Count one side effect; with a key, the same key counts once (an idempotent tool's dedupe)."""
    conn = sqlite3.connect(counter_path(), timeout=30)
    try:
        conn.execute("CREATE TABLE IF NOT EXISTS effects (id INTEGER PRIMARY KEY, name TEXT, key TEXT UNIQUE)")
        conn.execute("INSERT OR IGNORE INTO effects (name, key) VALUES (?, ?)", (name, key))
        conn.commit()
    finally:
        conn.close()


def effects(name: str | None = None) -> int:
    """How many side effects were recorded (for one tool, or all)."""
    if not counter_path().exists():
        return 0
    conn = sqlite3.connect(counter_path(), timeout=30)
    try:
        conn.execute("CREATE TABLE IF NOT EXISTS effects (id INTEGER PRIMARY KEY, name TEXT, key TEXT UNIQUE)")
        if name is None:
            return int(conn.execute("SELECT count(*) FROM effects").fetchone()[0])
        return int(conn.execute("SELECT count(*) FROM effects WHERE name = ?", (name,)).fetchone()[0])
    finally:
        conn.close()


def get_weather(city: str) -> str:
    """The weather in a city."""
    record_effect("get_weather")
    return f"sunny in {city}"


def book_table(restaurant: str, people: int) -> str:
    """Book a restaurant table."""
    record_effect("book_table")
    return f"booked {restaurant} for {people}"


@tool(idempotent=True)
def charge_card(amount: int) -> str:
    """Charge the card (idempotent: the idempotency key dedupes the charge)."""
    time.sleep(float(os.environ.get("CHATLEDGER_TEST_TOOL_SLEEP", "0")))
    record_effect("charge_card", current_idempotency_key())
    return f"charged {amount}"


def stored_view(store: Store, conversation_id: str, agent: str) -> list[Any]:
    """The whole stored conversation as ``agent``'s model sees it."""
    pairs = [(e.message, e.meta) for e in store.events(conversation_id) if hasattr(e, "message")]
    return model_view(pairs, agent)  # type: ignore[arg-type]


def dumps(messages: list[Any]) -> list[dict[str, Any]]:
    """LLM messages as plain data for comparison."""
    return [m.model_dump(mode="json") for m in messages]
