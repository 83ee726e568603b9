"""Hostile ids, metadata and content: each is refused with a typed error or stored and returned exactly,
and nothing else in the log changes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chatledger.adapters.openai_format import export_conversation, import_record
from chatledger.store import ChatledgerError, MessageAppended, Store, open_store


def _nested(depth: int) -> Any:
    value: Any = "bottom"
    for _ in range(depth):
        value = {"k": [value]}
    return value


HOSTILE = [
    "'; DROP TABLE events; --",
    '" OR "1"="1',
    "x') ON CONFLICT DO NOTHING; --",
    "%s %(x)s ? :name $1",
    "../../../etc/passwd",
    "..\\..\\windows\\system32",
    "a/b/c",
    "nul\x00inside",
    "\x00",
    "\x1f\x1e\x01",
    "lone \ud800 surrogate",
    "\udfff",
    "\u202eevil\u202c",
    "emoji 🦜 and ünïcode",
    "",
    " ",
    "x" * 513,
    "y" * 10_000_000,
]
DEEP = _nested(100_000)
DEEP_TOKEN = "<100000 levels of nested JSON>"  # swapped in late: hypothesis cannot print the real thing
text = st.one_of(st.sampled_from(HOSTILE), st.text(max_size=20))
value = st.one_of(text, st.just(DEEP_TOKEN), st.integers(), st.none(), st.lists(text, max_size=3))


def _dump(store: Store) -> tuple[list[Any], list[Any]]:
    return list(store.recorder.iter_all(0, 1000, None)), store.recorder.list_heads("conversation", None)


def _attempt(store: Store, op: str, ident: Any, content: Any, meta_key: Any, meta_value: Any) -> None:
    """Run one public call with hostile input; check the log is untouched on error, exact on success."""
    content = DEEP if content == DEEP_TOKEN else content
    meta_value = DEEP if meta_value == DEEP_TOKEN else meta_value
    before = _dump(store)
    message: dict[str, Any] = {"role": "user", "content": content}
    try:
        if op == "start":
            conv = store.start_conversation(ident, metadata={meta_key: meta_value}, messages=[message])
            assert store.messages(conv) == [message]
            assert store.conversation(conv).metadata == {meta_key: meta_value}
        elif op == "append":
            # A retried id returns the message stored first, wherever it is in the conversation.
            (event,) = store.append("base", [message], message_ids=[ident])
            stored = {e.message_id: e.message for e in store.events("base") if isinstance(e, MessageAppended)}
            assert event.message == message and stored[event.message_id] == message
            assert ident is None or event.message_id == ident
        elif op == "append_to":
            store.append(ident, [message])
        else:
            record = {"id": ident, "messages": [message], meta_key: meta_value}
            conv, created, _ = import_record(store, record)
            if created:
                assert export_conversation(store, conv) == {"id": conv, **record} | {"id": conv}
    except ChatledgerError:
        assert _dump(store) == before
        return
    target = "base" if op == "append" else ident
    events, heads = _dump(store)
    assert events[: len(before[0])] == before[0]
    assert {h for h in heads if h.stream_id != target} >= {h for h in before[1] if h.stream_id != target}


@pytest.mark.parametrize("backend_url", ["memory", "sqlite"])
@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    op=st.sampled_from(["start", "append", "append_to", "import"]),
    ident=st.one_of(text, st.integers(), st.none()),
    content=value,
    meta_key=text,
    meta_value=value,
)
def test_hostile_input_is_refused_or_stored_exactly(
    backend_url: str, tmp_path: Path, op: str, ident: Any, content: Any, meta_key: Any, meta_value: Any
) -> None:
    """Any hostile id, content or metadata raises a chatledger error and changes nothing, or round-trips."""
    url = "memory://" if backend_url == "memory" else f"sqlite:///{tmp_path / 'hostile.db'}"
    store = _STORES.get((backend_url, str(tmp_path)))
    if store is None:
        store = _STORES[(backend_url, str(tmp_path))] = open_store(url)
        store.start_conversation("base", messages=[{"role": "user", "content": "keep me"}])
    _attempt(store, op, ident, content, meta_key, meta_value)
    assert store.messages("base")[0] == {"role": "user", "content": "keep me"}
    assert store.verify().ok


_STORES: dict[tuple[str, str], Store] = {}


@pytest.fixture(autouse=True)
def _close_stores() -> Any:
    yield
    for store in _STORES.values():
        store.close()
    _STORES.clear()


@pytest.mark.parametrize("bad", ["nul\x00id", "a\x1fb", "\ud800", "x" * 513, ""])
def test_bad_ids_are_validation_errors_on_sqlite(tmp_path: Path, bad: str) -> None:
    """Ids with control characters, surrogates, or too long are ValidationError; the file is unchanged."""
    from chatledger.store import ValidationError

    from .scenario import sqlite_rows

    path = tmp_path / "c.db"
    with open_store(f"sqlite:///{path}") as store:
        store.start_conversation("ok", messages=[{"role": "user", "content": "hi"}])
        rows = sqlite_rows(str(path)), sqlite_rows(str(path), "streams")
        with pytest.raises(ValidationError):
            store.start_conversation(bad)
        with pytest.raises(ValidationError):
            store.append("ok", [{"role": "user", "content": "x"}], message_ids=[bad])
        assert (sqlite_rows(str(path)), sqlite_rows(str(path), "streams")) == rows
